"""Helpers of the bad-input corpus (tests/entrypoints/test_bad_inputs.py)."""
