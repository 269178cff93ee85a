"""``python -m bench.serve MODULE:FACTORY --port P --workers N``: the reference and the ORM
version served as ``aurion serve`` serves the service (aurion/serving.py: each worker on a
socket of its own), with uvloop, httptools and no access log: the same server for every
target, so that only the apps differ."""

from __future__ import annotations

import argparse

from aurion.serving import OPTIONS, serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("app", help="MODULE:FACTORY, a function that returns the ASGI app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    serve(
        args.app, host=args.host, port=args.port, workers=args.workers, **OPTIONS,
        log_level="warning",
    )  # fmt: skip


if __name__ == "__main__":
    main()
