"""Cryptographic building blocks (our 'hazmat' layer), all on pyca/cryptography.

The public API of secagg exposes protocol-level objects; these primitives are for the protocol engine.
"""
