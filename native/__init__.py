"""Numba kernels for the hot loops (ring arithmetic, mask accumulation, quantisation, field arithmetic).

Installed as `secagg.native`. Every kernel has a plain NumPy twin in `secagg.native.reference`.
"""
