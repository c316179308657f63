"""Helpers the tests share (not part of the package: see refluent.testing for the public kit)."""
