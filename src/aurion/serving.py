"""uvicorn with several worker processes, each accepting connections on a socket of its own.

uvicorn's workers (``uvicorn --workers N``) share the one listening socket their supervisor
opened, and whichever is first to ``accept()`` takes a connection. Clients that open their
connections in a burst and keep them alive (a load balancer's pool, an integration's HTTP
client) then often land mostly on one worker, and stay there: that worker is the bottleneck,
the others idle (seen with ``ss`` under `make bench`: 32 keep-alive connections split 32/0,
30/2 and 24/8 over two workers). Here each worker opens its own socket on the same address
with ``SO_REUSEPORT``, and Linux spreads new connections over the workers' sockets by a hash of
each connection's addresses.

Everything else is uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``): worker
health checks and restarts, signals, graceful shutdown. Where ``SO_REUSEPORT`` does not
balance (other systems than Linux), the workers share one socket as with uvicorn alone.
"""

from __future__ import annotations

import socket
import sys
from contextlib import closing
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

# The backlog uvicorn gives its own socket.
_BACKLOG = 2048
# How every HTTP server of the project runs an app (``aurion serve``, and the benchmark's
# reference and ORM version, bench/serve.py): its factory, uvloop, httptools, and no uvicorn
# access log (the service writes its own).
OPTIONS: dict[str, Any] = {
    "factory": True,
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
}


class OwnSocket:
    """Stands for a listening socket in the list uvicorn's supervisor hands each worker: sent
    to a worker process (pickled), it becomes a socket that worker opens for itself."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return listening_socket, (self.host, self.port)


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port) with ``SO_REUSEPORT``: one of the workers' group."""
    sock = _bound(host, port)
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def serve(app: str, *, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve ``app`` (an import string) on (host, port) with ``workers`` processes, each with
    its own socket where the system balances them; ``options`` are uvicorn's."""
    if workers <= 1 or not sys.platform.startswith("linux"):
        uvicorn.run(app, host=host, port=port, workers=workers, **options)
        return
    config = uvicorn.Config(app, host=host, port=port, workers=workers, **options)
    # Bound, never listening, while the supervisor runs: a port another program holds fails
    # here at once, as with uvicorn alone, and connections go to the workers only.
    with closing(_bound(host, port)):
        Multiprocess(config, sockets=[OwnSocket(host, port)]).run()  # type: ignore[list-item]
