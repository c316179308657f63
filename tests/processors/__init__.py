"""Tests of refluent.processors."""
