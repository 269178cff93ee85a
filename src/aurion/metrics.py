"""Prometheus metrics: request counts and latencies per route template, and the pool.

Each app has a registry of its own (tests build many apps in one process; the default global
registry would refuse the second). With several workers (`aurion serve --workers N`), the CLI
sets PROMETHEUS_MULTIPROC_DIR before they start: every worker then writes its samples there and
a scrape of any worker returns the sum over all of them (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

# Requests that matched no route share one label, so a scanner cannot create series at will.
UNMATCHED_ROUTE = "<unmatched>"

# How often a worker writes its pool gauges as requests end (each gauge written costs a system
# call or two in multiprocess mode, and the pool changes faster than anyone scrapes it).
POOL_REFRESH_SECONDS = 0.5

# Child creation takes a few milliseconds; the long tail is what a 3 s pool timeout produces.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


_POOL_GAUGES = {
    "aurion_db_pool_connections_in_use": "Database connections checked out of the pool.",
    "aurion_db_pool_connections_idle": "Open database connections idle in the pool.",
    "aurion_db_pool_size": "Connections the pool keeps open (AURION_DB_POOL_SIZE).",
}


class _PoolCollector(Collector):
    """Connections in use and idle in the app's SQLAlchemy pool, read at scrape time."""

    def __init__(self, app_state: Any) -> None:
        self._state = app_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = getattr(self._state, "engine", None)
        pool = getattr(engine, "pool", None) if engine is not None else None
        values = None
        if pool is not None and hasattr(pool, "checkedout"):
            values = (pool.checkedout(), pool.checkedin(), pool.size())
        for index, (name, doc) in enumerate(_POOL_GAUGES.items()):
            family = GaugeMetricFamily(name, doc)
            if values is not None:
                family.add_metric([], values[index])
            yield family


class Metrics:
    """The metrics of one app."""

    def __init__(self, app_state: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aurion_http_requests",
            "HTTP requests served, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aurion_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The children of the two metrics for each (method, route, status) seen.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._state = app_state
        if self.multiprocess:
            # Pool gauges summed over the live workers, refreshed as requests end (at most every
            # POOL_REFRESH_SECONDS) and at scrape.
            self._pool_refreshed = 0.0
            self._pool_gauges = {
                name: Gauge(name, doc, registry=self.registry, multiprocess_mode="livesum")
                for name, doc in _POOL_GAUGES.items()
            }
        else:
            self.registry.register(_PoolCollector(app_state))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            # labels() takes a lock and validates the labels on every call: once per series.
            labels = (method, route, str(status))
            series = self._series[key] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        series[0].inc()
        series[1].observe(seconds)
        if self.multiprocess:
            now = time.monotonic()
            if now - self._pool_refreshed >= POOL_REFRESH_SECONDS:
                self._pool_refreshed = now
                self._refresh_pool()

    def _refresh_pool(self) -> None:
        engine = getattr(self._state, "engine", None)
        pool = getattr(engine, "pool", None) if engine is not None else None
        if pool is None or not hasattr(pool, "checkedout"):
            return
        in_use, idle, size = self._pool_gauges.values()
        in_use.set(pool.checkedout())
        idle.set(pool.checkedin())
        size.set(pool.size())

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        self._refresh_pool()
        combined = CollectorRegistry()
        MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        return generate_latest(combined)


async def metrics_endpoint(request: Request) -> Response:
    """The Prometheus text exposition of this process's metrics."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
