from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.live import LiveServer, live_server
from tests.support import TEST_SECRET


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The real ``aurion serve`` process on a free port, against the test database."""
    with live_server(database_url, TEST_SECRET, tmp_path_factory.mktemp("server")) as live:
        yield live
