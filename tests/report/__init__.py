"""Tests of hybridcheck.report."""
