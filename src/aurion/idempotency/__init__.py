"""Idempotency-Key: exactly-once creation under client retries (SPEC §2)."""
