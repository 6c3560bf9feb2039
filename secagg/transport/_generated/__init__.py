"""Code generated from protocols/secagg.proto by protocols/generate_python.py. Do not edit."""
