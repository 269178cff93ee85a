"""Refusals of the webhooks service."""

from aurion.errors import AppError


class WebhookNotFound(AppError):
    status_code = 404
    code = "webhook_not_found"
    message = "Webhook not found."


class WebhookUrlNotAllowed(AppError):
    status_code = 422
    code = "webhook_url_not_allowed"
    message = (
        "The URL may not receive webhooks: it must be https and resolve to public addresses only."
    )
