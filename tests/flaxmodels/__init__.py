"""Tests of hybridcheck.flaxmodels."""
