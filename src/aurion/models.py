"""Imports every table module, so the metadata is complete (Alembic, checks)."""


def load_all_models() -> None:
    import aurion.conversations.models  # noqa: F401
    import aurion.events.models  # noqa: F401
    import aurion.idempotency.models  # noqa: F401
    import aurion.webhooks.models  # noqa: F401
