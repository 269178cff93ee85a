"""Where the time of child creation goes when the CPUs are not the whole story: the service
and the reference side by side (spread scenario, as bench/run.py drives it), with, for each
run, what the CPU per request alone does not show:

* the machine's idle share (``/proc/stat``) and where the busy share went (user, system,
  softirq), and wrk's own CPU per request;
* what PostgreSQL's client backends were doing, sampled from ``pg_stat_activity`` every few
  milliseconds: running, waiting for a WAL flush (``WalSync``, ``WALWrite``), for a row lock
  (``Lock``), or idle between statements;
* WAL bytes written per request (``pg_current_wal_lsn`` before and after).

    .venv/bin/python -m bench.waits                 # 2 rounds, 8 s per run, concurrency 32
    .venv/bin/python -m bench.waits --rounds 3 --scenario one

Not part of ``make bench``'s report: README's Performance section quotes it where a target is
missed, as the measurement that says why.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass

import asyncpg

from aurion.auth.tokens import mint_token
from aurion.settings import Settings
from bench.common import ACTOR, SCOPES, WORK, WORKSPACE, log
from bench.database import Database, run_sql
from bench.driver import check_create, run_wrk, start_targets
from bench.measurement import CpuMeter

_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_ACTIVITY_SQL = """
SELECT state, wait_event_type, wait_event FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


@dataclass
class _Machine:
    """The machine's CPU counters (``/proc/stat``, in ticks) and this process's children's
    CPU seconds (wrk, once it has been waited for)."""

    ticks: list[int]
    children_seconds: float

    @classmethod
    def now(cls) -> _Machine:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1 : 1 + len(_CPU_FIELDS)]]
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(ticks, usage.ru_utime + usage.ru_stime)


def _wal_lsn(url: str) -> int:
    return int(run_sql(url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])


async def _sample_activity(url: str, stop: threading.Event, counts: Counter[str]) -> int:
    connection = await asyncpg.connect(url)
    samples = 0
    try:
        while not stop.is_set():
            for row in await connection.fetch(_ACTIVITY_SQL):
                state, kind, event = row
                counts[state if kind is None else f"{state}: {kind}/{event}"] += 1
            samples += 1
            await asyncio.sleep(0.004)
    finally:
        await connection.close()
    return samples


def measure(
    db: Database,
    server_url: str,
    pids: tuple[int, int],
    args: argparse.Namespace,
    token: str,
    tag: str,
) -> None:
    """One wrk run against one target, with everything above measured around it."""
    parents = db.new_parents(tag, 1 if args.scenario == "one" else 250)
    counts: Counter[str] = Counter()
    stop = threading.Event()
    samples: list[int] = []
    sampler = threading.Thread(
        target=lambda: samples.append(asyncio.run(_sample_activity(db.url, stop, counts)))
    )
    lsn_before = _wal_lsn(db.url)
    meter = CpuMeter(*pids)
    before = _Machine.now()
    sampler.start()
    data = run_wrk(
        server_url,
        mode="children",
        ids=parents,
        token=token,
        concurrency=args.concurrency,
        duration=args.duration,
        tag=tag,
    )
    stop.set()
    sampler.join()
    after = _Machine.now()
    requests = max(int(data["requests"]), 1)
    app_ms, pg_ms = meter.per_request_ms(requests)
    wal = _wal_lsn(db.url) - lsn_before
    ticks = [b - a for a, b in zip(before.ticks, after.ticks, strict=True)]
    total = sum(ticks) or 1
    share = {name: 100 * t / total for name, t in zip(_CPU_FIELDS, ticks, strict=True)}
    wrk_ms = 1000 * (after.children_seconds - before.children_seconds) / requests
    print(f"{tag}: {data['rps']:.0f} requests/s, errors {data['errors']}")
    print(f"  CPU ms/request: HTTP workers {app_ms:.3f}, PostgreSQL {pg_ms:.3f}, wrk {wrk_ms:.3f}")
    print(
        "  machine, % of all CPUs: "
        + ", ".join(f"{name} {value:.1f}" for name, value in share.items() if value >= 0.5)
    )
    print(f"  WAL bytes per request: {wal / requests:.0f}")
    taken = max(samples[0] if samples else 0, 1)
    print(f"  client backends, average over {taken} samples of pg_stat_activity:")
    for what, seen in counts.most_common():
        if seen / taken >= 0.01:
            print(f"    {seen / taken:6.2f}  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8, help="Seconds per run.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scenario", choices=("spread", "one"), default="spread")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    db = Database()
    db.start()
    secret = secrets.token_urlsafe(48)
    token = mint_token(
        Settings(jwt_secret=secret), workspace=WORKSPACE, subject=ACTOR, scopes=SCOPES
    )
    servers = start_targets(db, workers=2, secret=secret, pool={})
    try:
        targets = {name: servers[name] for name in ("service", "reference")}
        warm = db.new_parents("warm", 250)
        for server in targets.values():
            check_create(server, warm[0], token)
            run_wrk(
                server.base_url,
                mode="children",
                ids=warm,
                token=token,
                concurrency=args.concurrency,
                duration=3,
                tag=f"warm-{secrets.token_hex(3)}",
            )
        db.settle()
        for round_number in range(1, args.rounds + 1):
            # Each target first in every other round, so neither always runs right after the
            # other (whatever PostgreSQL still does for one run, the next one pays for). It did
            # not change what this tool measures much: the reference's CPU per request here
            # (0.84-0.98 ms in either position) stays above what make bench measures, which
            # remains the verdict.
            order = list(targets.items())
            for name, server in order if round_number % 2 else order[::-1]:
                log(f"round {round_number}: {name}")
                tag = f"{args.scenario}-{name}-r{round_number}-{secrets.token_hex(3)}"
                measure(
                    db, server.base_url, (server.process.pid, db.postmaster_pid()), args, token, tag
                )
                time.sleep(0.5)
    finally:
        for server in servers.values():
            server.stop()
        db.stop()


if __name__ == "__main__":
    main()
