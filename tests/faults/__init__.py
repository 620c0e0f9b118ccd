"""Faults injected on the whole pipeline: real broker, real cameras, real processes; each test keeps a ledger."""
