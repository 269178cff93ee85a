"""Where the database is: DATABASE_URL, or the embedded server under ``AURION_DATA_DIR``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aurion.settings import Settings

if TYPE_CHECKING:
    from aurion.db.embedded import EmbeddedPostgres


class DatabaseLocation:
    """The database a process works on; the embedded server is started when first asked for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The embedded server, when this process started it (and so should stop it).
        self.started: EmbeddedPostgres | None = None

    def url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        from aurion.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(os.path.join(self.settings.data_dir, "postgres"))
        if not embedded.is_running():
            self.started = embedded
        return embedded.start()

    def stop_if_started(self) -> None:
        if self.started is not None:
            self.started.stop()
            self.started = None
