"""Tests of hybridcheck.describe."""
