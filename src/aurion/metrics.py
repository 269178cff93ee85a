"""Prometheus metrics: request counts and latencies per route template, and the pool.

Each app has a registry of its own (tests build many apps in one process; the default global
registry would refuse the second). One process = one set of series: run one worker per
container and scale with replicas, so each scrape target is one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

# Requests that matched no route share one label, so a scanner cannot create series at will.
UNMATCHED_ROUTE = "<unmatched>"

# Child creation takes a few milliseconds; the long tail is what a 3 s pool timeout produces.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _PoolCollector(Collector):
    """Connections in use and idle in the app's SQLAlchemy pool, read at scrape time."""

    def __init__(self, app_state: Any) -> None:
        self._state = app_state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = getattr(self._state, "engine", None)
        pool = getattr(engine, "pool", None) if engine is not None else None
        in_use = GaugeMetricFamily(
            "aurion_db_pool_connections_in_use", "Database connections checked out of the pool."
        )
        idle = GaugeMetricFamily(
            "aurion_db_pool_connections_idle", "Open database connections idle in the pool."
        )
        size = GaugeMetricFamily(
            "aurion_db_pool_size", "Connections the pool keeps open (AURION_DB_POOL_SIZE)."
        )
        if pool is not None and hasattr(pool, "checkedout"):
            in_use.add_metric([], pool.checkedout())
            idle.add_metric([], pool.checkedin())
            size.add_metric([], pool.size())
        yield in_use
        yield idle
        yield size


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
        self.registry.register(_PoolCollector(app_state))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def metrics_endpoint(request: Request) -> Response:
    """The Prometheus text exposition of this process's metrics."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
