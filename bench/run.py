"""``make bench``: child creation by the service against a fixed yardstick, in one run.

One machine, one database, the same server options for every HTTP target:

* **pgbench** runs the yardstick's one statement (bench/yardstick.py): the ceiling;
* **reference**: a bare FastAPI endpoint running that statement on raw asyncpg
  (bench/reference_app.py), with no auth, lock, limit or idempotency;
* **orm**: the straightforward SQLAlchemy ORM implementation (bench/orm_app.py);
* **service**: ``aurion serve`` as production runs it.

Scenarios (bench/scenarios.py): **spread** (requests at random over a few hundred fresh
parents) and **one parent** (every request on one fresh parent), in interleaved rounds; then
richer child creation on the service (a split with overrides, a note and 5 copied messages;
a batch of 10 children); then the cost as data grows (child creation and GET with 10,000
messages against none), a py-spy profile and peak memory. Every request carries a bearer
token and a fresh Idempotency-Key.
The layout: bench/driver.py starts targets and sends load, bench/measurement.py measures,
bench/report.py writes docs/performance.md, harness/ holds what the tests share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT, WORK, log
from bench.driver import TARGETS
from bench.report import build_report
from bench.scenarios import Bench, balanced_rounds

OUTPUT = ROOT / "docs" / "performance.md"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=(__doc__ or "").split("\n")[0],
        epilog="A full run takes about 16 minutes; --quick about 1.",
    )
    add = parser.add_argument
    add("--quick", action="store_true",
        help="a smoke run: --duration 3 --rounds 1 --skip-data --skip-profile, and the report "
        "is printed, not written (unless --output is given)")  # fmt: skip
    add("--workers", type=int, default=2, help="uvicorn workers per HTTP target (2)")
    add("--duration", type=int, default=None, help="seconds per measurement (8; quick: 3)")
    add("--ratio-concurrency", type=int, default=32, help="the headline concurrency (32)")
    add("--concurrency", type=_ints, default=None,
        help="more concurrencies, one round each (16,64; quick: none)")  # fmt: skip
    add("--rounds", type=int, default=None,
        help="rounds at the headline concurrency (at least 5, whole counterbalanced designs: 8 "
        "for the four targets; quick: 1)")  # fmt: skip
    add("--parents", type=int, default=250, help="fresh parents per spread measurement (250)")
    add("--targets", type=lambda s: [x for x in s.split(",") if x], default=list(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (all)")  # fmt: skip
    add("--pool-size", type=int, default=None,
        help="AURION_DB_POOL_SIZE for every target (default: the service's default)")  # fmt: skip
    add("--skip-data", action="store_true", help="skip the data-size scenario")
    add("--skip-richer", action="store_true",
        help="skip richer child creation (a split with copies, a batch of 10)")  # fmt: skip
    add(
        "--flat-parents", type=int, default=128, help="parents of the data-size creation runs (128)"
    )
    add("--get-parents", type=int, default=32, help="parents per GET case (32)")
    add("--large", type=int, default=1_000_000, help="conversations loaded for 'large' (1,000,000)")
    add("--messages", type=int, default=10_000, help="messages per parent for 'large' (10,000)")
    add("--skip-profile", action="store_true", help="skip the py-spy profile")
    add("--output", default=None, help=f"report file (default {OUTPUT.relative_to(ROOT)})")
    add("--no-report", action="store_true", help="print the report only; do not write it")
    args = parser.parse_args(argv)
    if args.quick:
        args.skip_data = args.skip_profile = True
        args.no_report = args.no_report or args.output is None
    args.duration = args.duration or (3 if args.quick else 8)
    args.rounds = args.rounds or (1 if args.quick else balanced_rounds(len(args.targets)))
    if args.concurrency is None:
        args.concurrency = [] if args.quick else [16, 64]
    args.concurrency = sorted({args.ratio_concurrency, *args.concurrency})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    clock = time.monotonic()
    bench = Bench(args)
    bench.run()
    report = build_report(bench, started, time.monotonic() - clock)
    (WORK / "results.json").write_text(json.dumps([asdict(r) for r in bench.results], indent=1))
    print()
    print(report)
    if not args.no_report:
        output = Path(args.output or OUTPUT)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        log(f"written to {output}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
