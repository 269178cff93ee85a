"""Refusals of the idempotency layer."""

from aurion.errors import AppError


class IdempotencyKeyReused(AppError):
    status_code = 422
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was used with a different request; use a new key."


class IdempotencyKeyInUse(AppError):
    status_code = 409
    code = "idempotency_key_in_use"
    message = "A request with this Idempotency-Key is still in progress; retry shortly."
