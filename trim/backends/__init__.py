"""Backends that fill the `Generator` and `PRM` protocols."""
