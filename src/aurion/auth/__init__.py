"""Bearer-token authentication: verification, the Principal, scopes."""

from aurion.auth.dependencies import (
    EventsPrincipal,
    ReadPrincipal,
    WebhooksPrincipal,
    WritePrincipal,
)
from aurion.auth.principal import Principal

__all__ = [
    "EventsPrincipal",
    "Principal",
    "ReadPrincipal",
    "WebhooksPrincipal",
    "WritePrincipal",
]
