"""The real server (``server``), shared with tests/e2e and tests/clients."""

from tests.e2e.live import server

__all__ = ["server"]
