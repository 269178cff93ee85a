"""What the benchmark measures, in which order: the scenarios.

* **spread**: child creations at random over ``--parents`` fresh parents (a few hundred);
* **one parent**: every child creation on one fresh parent (a burst under one ticket, where
  the service's parent lock serialises the requests);

each for every target (pgbench, reference, orm, service) in interleaved rounds: a round runs
both scenarios for every target back to back, in a counterbalanced order (``balanced_order``),
so the machine's noise, and what one run leaves to the next, hit every target alike; the
report takes medians over rounds. Then richer child creation (SPEC §9, the service only): a
**split** (a child with overrides, a note and 5 copied messages) and a **batch of 10**
children, in rounds of their own. Then the data-size scenario (child creation and GET with no
messages, then with 1,000,000 more conversations and 10,000 messages per parent), a py-spy
profile, and peak memory.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from aurion.auth.tokens import mint_token
from aurion.settings import Settings
from bench.common import ACTOR, SCOPES, WORK, WORKSPACE, log
from bench.database import Database
from bench.driver import (
    HTTP_TARGETS,
    TARGETS,
    check_create,
    check_richer,
    record_profile,
    run_pgbench,
    run_wrk,
    start_targets,
)
from bench.measurement import CpuMeter, Result, summarise_profile
from harness.server import Server

SPREAD, ONE_PARENT = "spread", "one parent"
CREATION = (SPREAD, ONE_PARENT)
# Richer child creation (SPEC §9), measured on the service alone.
SPLIT, BATCH = "split: overrides + message + 5 copies", "batch of 10"
RICHER = (SPLIT, BATCH)
COPIES, BATCH_SIZE = 5, 10
# The data-size scenario's parts.
NO_MESSAGES, LARGE = "no messages", "large"
GET_NONE, GET_200, GET_10K = "GET, no messages", "GET, 200 messages", "GET, 10k messages"

T = TypeVar("T")


def design_rounds(n: int) -> int:
    """The rounds of one Williams design for ``n`` items (``balanced_order`` repeats after)."""
    return 2 * n if n % 2 else n


def balanced_rounds(n: int, at_least: int = 5) -> int:
    """The fewest rounds, at least ``at_least``, that are whole designs for ``n`` targets: a
    cut design is no longer balanced (5 rounds of four targets ran round 1's order twice)."""
    period = design_rounds(n)
    return period * -(-at_least // period)


def balanced_order(items: Sequence[T], round_no: int) -> list[T]:
    """The order of ``items`` in round ``round_no``: a row of a Williams design (a balanced
    Latin square). Over n rounds (2n when n is odd) each item runs once in every position and
    once right after every other item, so what a run leaves behind (a server still answering
    its last requests, autovacuum after many writes, a checkpoint) falls on every target alike.
    A rotation keeps the same neighbours in every round: with it the service always ran right
    after the ORM version, and the reference right after pgbench."""
    n = len(items)
    first = [0]  # 0, 1, n-1, 2, n-2, ...
    low, high = 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    row = round_no % design_rounds(n)
    order = [items[(i + row) % n] for i in first]
    # n odd: the second n rows are the first n reversed.
    return order[::-1] if row >= n else order


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.db = Database()
        self.secret = secrets.token_urlsafe(48)
        self.token = ""
        self.servers: dict[str, Server] = {}
        self.results: list[Result] = []
        self.runs = 0
        self.profiles: dict[str, dict[str, Any]] = {}
        self.memory: dict[str, list[float]] = {}
        self.data_counts: dict[str, dict[str, int]] = {}
        self.notes: list[str] = []
        self.load_before = f"{os.getloadavg()[0]:.2f}"

    def run(self) -> None:
        args = self.args
        WORK.mkdir(parents=True, exist_ok=True)
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed: run `make system-deps` (apt-get install wrk)")
        log("starting PostgreSQL (embedded, .data/bench-postgres) and a fresh database")
        self.db.start()
        try:
            settings = Settings(jwt_secret=self.secret)
            self.token = mint_token(settings, workspace=WORKSPACE, subject=ACTOR, scopes=SCOPES)
            pool = {}
            if args.pool_size is not None:
                pool["AURION_DB_POOL_SIZE"] = str(args.pool_size)
            self.servers = start_targets(
                self.db, workers=args.workers, secret=self.secret, pool=pool
            )
            self._warm_up()
            self._creation()
            if not args.skip_richer and "service" in args.targets:
                self._richer()
            if not args.skip_data:
                self._data_size()
            if not args.skip_profile:
                for name in ("service", "reference"):
                    self._profile(name)
            for name, server in self.servers.items():
                self.memory[name] = server.peak_rss_mib()
        finally:
            for server in self.servers.values():
                server.stop()
            self.db.stop()

    def measure(
        self,
        target: str,
        scenario: str,
        concurrency: int,
        *,
        parents: list[str],
        run: str,
        round_no: int = 0,
        mode: str = "children",
    ) -> Result:
        """One run of one target on ``parents``: its throughput, latency, errors and CPU."""
        self.runs += 1
        duration = self.args.duration
        server = self.servers.get(target)
        sessions_before = self.db.sessions()
        meter = CpuMeter(server.process.pid if server else None, self.db.postmaster_pid())
        if server is None:
            data = run_pgbench(
                self.db, run=run, nparents=len(parents), concurrency=concurrency, duration=duration
            )
        else:
            data = run_wrk(
                server.base_url,
                mode=mode,
                ids=parents,
                token=self.token,
                concurrency=concurrency,
                duration=duration,
                tag=f"{run}-{self.runs}-{secrets.token_hex(4)}",
            )
        time.sleep(0.5)  # pgbench's backends exit and are reaped, so their CPU counts
        app_cpu, pg_cpu = meter.per_request_ms(int(data["requests"]))
        # Minus the one counting connection of this function (pool churn shows here).
        new_connections = self.db.sessions() - sessions_before - 1
        detail_keys = ("stderr", "unexpected_status", "connect", "read", "write", "timeout")
        result = Result(
            target=target,
            scenario=scenario,
            concurrency=concurrency,
            requests=int(data["requests"]),
            rps=round(float(data["rps"]), 1),
            p50_ms=round(data["p50_us"] / 1000, 2),
            p99_ms=round(data["p99_us"] / 1000, 2),
            errors=int(data["errors"]),
            round=round_no,
            app_cpu_ms=app_cpu,
            pg_cpu_ms=pg_cpu,
            detail={k: data[k] for k in detail_keys if k in data}
            | {"new_connections": new_connections},
        )
        self.results.append(result)
        log(
            f"{scenario:>17} {target:>9} c={concurrency:<3} {result.rps:8.1f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:8.2f} ms  errors {result.errors}  "
            f"CPU/req app {app_cpu:.2f} ms pg {pg_cpu:.2f} ms  new connections {new_connections}"
        )
        if result.errors:
            log(f"   errors: {result.detail}")
        return result

    def _fresh(self, scenario: str, target: str, concurrency: int) -> tuple[list[str], str]:
        """Parents no other run has touched: a few hundred (spread) or one (one parent)."""
        one = scenario == ONE_PARENT
        run = f"{'one' if one else 'spread'}-{target}-c{concurrency}-{secrets.token_hex(3)}"
        count = 1 if one else self.args.parents
        return self.db.new_parents(run, count), run

    def _warm_up(self) -> None:
        warm = self.db.new_parents("warmup", self.args.parents)
        for name in HTTP_TARGETS:
            check_create(self.servers[name], warm[0], self.token)
        log("warm-up (pools, statement caches)")
        for name in HTTP_TARGETS:
            run_wrk(
                self.servers[name].base_url,
                mode="children",
                ids=warm,
                token=self.token,
                concurrency=self.args.ratio_concurrency,
                duration=min(3, self.args.duration),
                tag=f"warm-{name}-{secrets.token_hex(4)}",
            )
        self.db.settle()

    def _creation(self) -> None:
        """Both scenarios, every target, interleaved rounds at the headline concurrency (and
        one round at each other concurrency asked for)."""
        args = self.args
        targets = [t for t in TARGETS if t in args.targets]
        log(f"child creation: {', '.join(CREATION)}; targets {', '.join(targets)}")
        for concurrency in args.concurrency:
            rounds = args.rounds if concurrency == args.ratio_concurrency else 1
            for r in range(rounds):
                scenarios = CREATION if r % 2 == 0 else CREATION[::-1]
                for scenario in scenarios:
                    for target in balanced_order(targets, r):
                        parents, run = self._fresh(scenario, target, concurrency)
                        self.measure(
                            target, scenario, concurrency, parents=parents, run=run, round_no=r
                        )

    def _richer(self) -> None:
        """A split and a batch of ten, on the service, in interleaved rounds at the headline
        concurrency: fresh spread parents per run (with 5 messages each for the split)."""
        args = self.args
        c = args.ratio_concurrency
        log(f"richer child creation: {', '.join(RICHER)}; service")
        for r in range(args.rounds):
            for scenario in RICHER if r % 2 == 0 else RICHER[::-1]:
                split = scenario == SPLIT
                run = f"{'split' if split else 'batch'}-c{c}-{secrets.token_hex(3)}"
                parents = self.db.new_parents(run, args.parents)
                if split:
                    self.db.add_messages(run, COPIES)
                    parents = self.db.messages_to_copy(run, COPIES)
                mode = "split" if split else "batch"
                if r == 0:
                    check_richer(self.servers["service"], mode, parents[0], self.token)
                self.measure(
                    "service", scenario, c, parents=parents, run=run, round_no=r, mode=mode
                )

    def _data_size(self) -> None:
        """Child creation and GET on small tables, then on large ones.

        Creation: one set of parents per case that all its runs share (service and reference
        alternating, ``--rounds`` times). GET: parents of their own (no children), with no
        messages, with 200 (all of them embedded), and with 10,000 (the newest 200 embedded).
        """
        args = self.args
        c = args.ratio_concurrency
        k = args.flat_parents
        g = args.get_parents
        log(f"data size: {k} parents for creation, {g} for GET, concurrency {c}")
        empty = self.db.new_parents("empty", k)
        get_none = self.db.new_parents("get-none", g)
        get_200 = self.db.new_parents("get-200", g)
        self.db.add_messages("get-200", 200)
        self.db.settle()
        self.data_counts["before"] = self.db.counts()
        for r in range(args.rounds):
            for target in ("service", "reference"):
                self.measure(target, NO_MESSAGES, c, parents=empty, run="empty", round_no=r)
            for scenario, parents, run in (
                (GET_NONE, get_none, "get-none"),
                (GET_200, get_200, "get-200"),
            ):
                self.measure(
                    "service", scenario, c, parents=parents, run=run, round_no=r, mode="get"
                )

        log(
            f"loading {args.large:,} conversations and as many activities, and parents "
            f"with {args.messages:,} messages each"
        )
        started = time.monotonic()
        self.db.load_large(args.large)
        large = self.db.new_parents("large", k)
        self.db.add_messages("large", args.messages)
        get_10k = self.db.new_parents("get-10k", g)
        self.db.add_messages("get-10k", args.messages)
        self.db.settle()
        self.data_counts["after"] = self.db.counts()
        took = time.monotonic() - started
        self.notes.append(f"Loading the large data set (and VACUUM ANALYZE) took {took:.0f} s.")
        log(f"loaded in {took:.0f} s: {self.data_counts['after']}")
        for r in range(args.rounds):
            for target in ("service", "reference"):
                self.measure(target, LARGE, c, parents=large, run="large", round_no=r)
            self.measure(
                "service", GET_10K, c, parents=get_10k, run="get-10k", round_no=r, mode="get"
            )

    def _profile(self, name: str) -> None:
        """py-spy on the target's workers during an extra spread run."""
        c = self.args.ratio_concurrency
        parents, run = self._fresh(SPREAD, name, c)
        outcome = record_profile(
            self.servers[name],
            self.args.duration,
            lambda: self.measure(name, "profiled", c, parents=parents, run=run),
        )
        if isinstance(outcome, Path):
            self.profiles[name] = summarise_profile(outcome)
            log(f"profile of {name}: {outcome} (collapsed stacks)")
        else:
            self.notes.append(outcome)
