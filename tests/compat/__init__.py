"""Tests of hybridcheck.compat."""
