"""Test doubles for users' and our own tests: wrong certificates for the D1 scenarios. Production code never
imports this package (tests/test_layers.py checks it), as tink's `tink.testing`."""

from secagg.testing.pki import make_expired_silo, make_rogue_ca_silo, make_rogue_server

__all__ = ["make_expired_silo", "make_rogue_ca_silo", "make_rogue_server"]
