"""Tests of hybridcheck.invariants."""
