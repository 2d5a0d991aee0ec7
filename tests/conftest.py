"""Shared fixtures live in `tests/fix_*.py` plugins (see `addopts` in pyproject)."""
