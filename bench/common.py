"""What every part of the benchmark shares: where it works, who it is, how it logs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".data" / "bench"
WORKSPACE = "bench"
ACTOR = "bench-user"
SUBJECT = "Benchmark child: refund the damaged item"
# High enough that no benchmarked request meets the children limit: every request is a 201.
CHILD_LIMIT = 1_000_000
SCOPES = "conversations:read conversations:write"


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)
