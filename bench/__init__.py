"""Benchmarks, and the stand-in models and small training runs they share with the test suite (tests import
from here, never the other way round)."""
