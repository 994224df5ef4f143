"""The fault suite: real processes, real faults, one figure line per test (issue 8)."""
