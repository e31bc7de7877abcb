"""Tests of discopatch.monitoring (a package, so its conftest does not shadow tests/conftest.py)."""
