"""Webhooks: registrations, and the delivery of the outbox's events to them (SPEC §10)."""
