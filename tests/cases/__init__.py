"""Tests of hybridcheck.cases."""
