"""Run Alembic programmatically (``aurion db upgrade``, tests) and check the schema is at head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

from aurion.db.engine import sync_url


def project_root() -> Path:
    """The folder holding ``alembic.ini`` and ``migrations/``: the working directory or the
    source checkout this package runs from."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (candidate / "migrations" / "env.py").exists():
            return candidate
    raise RuntimeError("cannot find the migrations/ folder; run from the project directory")


def alembic_config(database_url: str) -> Config:
    root = project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def head_revisions(database_url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


async def current_revisions(conn: AsyncConnection) -> set[str]:
    def _current(sync_conn: object) -> set[str]:
        context = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        return set(context.get_current_heads())

    return await conn.run_sync(_current)
