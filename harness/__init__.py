"""Launchers for real infrastructure the tests and the benchmark run against (not shipped)."""
