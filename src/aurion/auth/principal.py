"""Who is calling: the verified claims a request acts with."""

from __future__ import annotations

from dataclasses import dataclass

# The scopes of the API; a token's ``scope`` claim lists them space-separated.
READ = "conversations:read"
WRITE = "conversations:write"
EVENTS_READ = "events:read"
WEBHOOKS_WRITE = "webhooks:write"
ALL_SCOPES = (READ, WRITE, EVENTS_READ, WEBHOOKS_WRITE)
# Scope claims (space-separated): conversations read+write, and every scope of the API.
READ_WRITE = f"{READ} {WRITE}"
EVERY_SCOPE = " ".join(ALL_SCOPES)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    workspace_id: str
    scopes: frozenset[str]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
