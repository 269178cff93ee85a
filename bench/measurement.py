"""What a run cost and how to summarise runs: CPU time per request of the HTTP workers and of
PostgreSQL (psutil, via harness), percentiles, medians, and the py-spy profile's summary."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.processes import tree_cpu_seconds


def median(values: list[float]) -> float:
    """The median, or NaN for no values (a part that was skipped)."""
    return statistics.median(values) if values else float("nan")


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank; 0 for none."""
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


@dataclass
class Result:
    """One measured run of one target in one scenario."""

    target: str
    scenario: str
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    round: int = 0
    app_cpu_ms: float = 0.0  # CPU per request of the HTTP target's processes
    pg_cpu_ms: float = 0.0  # CPU per request of PostgreSQL (postmaster, backends, workers)
    detail: dict[str, Any] = field(default_factory=dict)


class CpuMeter:
    """CPU seconds used by the HTTP target's process tree and by PostgreSQL's during a run
    (what other jobs on a shared machine use is not counted, unlike in requests/s)."""

    def __init__(self, app_root: int | None, pg_root: int) -> None:
        self.app_root = app_root
        self.pg_root = pg_root
        self.app_before = self._app()
        self.pg_before = tree_cpu_seconds(pg_root)

    def _app(self) -> float:
        return tree_cpu_seconds(self.app_root) if self.app_root is not None else 0.0

    def per_request_ms(self, requests: int) -> tuple[float, float]:
        """(HTTP target, PostgreSQL) milliseconds of CPU per request since the meter started."""
        requests = max(requests, 1)
        app = self._app() - self.app_before
        pg = tree_cpu_seconds(self.pg_root) - self.pg_before
        return round(1000 * app / requests, 3), round(1000 * pg / requests, 3)


# ------------------------------------------------------------------------------ profile


_PACKAGES = (
    "aurion",
    "bench",
    "asyncpg",
    "sqlalchemy",
    "pydantic",
    "pydantic_core",
    "fastapi",
    "starlette",
    "uvicorn",
    "jose",
    "logging",
    "asyncio",
    "anyio",
    "uuid_utils",
    "orjson",
    "json",
)


def _frame_path(frame: str) -> str:
    match = re.search(r"\(([^()]*?):\d+\)$", frame)
    return match.group(1) if match else ""


def _package(frame: str) -> str:
    """The top-level package of a frame: py-spy names files relative to sys.path."""
    path = _frame_path(frame)
    if not path:
        return "other"
    head = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    if head in _PACKAGES:
        return head
    return "stdlib" if not path.startswith("/") and "/" not in path.strip("/") else "other"


def _function(frame: str) -> str:
    # "Class.method (package/module.py:123)" -> "package/module.py:Class.method"
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    return f"{match.group(2)}:{match.group(1)}"


def summarise_profile(raw: Path) -> dict[str, Any]:
    """Self time by package (the leaf frame's), and the functions most often on the stack."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if _frame_path(f)]
        if not frames:
            continue
        total += count
        own[_package(frames[-1])] += count
        for name in {_function(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return {"samples": 0}
    # The application's own functions and the libraries it calls; the server, the framework's
    # middleware and the event loop are on nearly every stack and say nothing.
    wanted = ("aurion/", "sqlalchemy/", "asyncpg/", "anyio/", "logging/", "fastapi/dependencies/")
    interesting = [(name, n) for name, n in inclusive.most_common() if name.startswith(wanted)]
    return {
        "samples": total,
        "self_by_package": {k: round(100 * v / total, 1) for k, v in own.most_common()},
        "inclusive": [(name, round(100 * n / total, 1)) for name, n in interesting[:25]],
    }
