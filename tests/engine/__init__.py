"""Tests of hybridcheck.engine."""
