"""Prometheus metrics of the exchange, kept in process.

Counts requests by route template, method and status, and sums their
durations, so that ``/metrics`` exposes rates and mean latencies per route
without a client library. Route templates (``/fhir/{resource_type}/{id}``),
never raw paths, are used as labels: raw paths would carry patient ids into
the monitoring system and grow without bound.
"""

from __future__ import annotations

import time
from collections import defaultdict

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """Request counters and duration sums."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests[(method, route, status)] += 1
        self.seconds[(method, route)] += seconds

    def render(self) -> str:
        """The Prometheus text exposition of what was recorded."""
        lines = ["# HELP hie_http_requests_total HTTP requests by route and status.",
                 "# TYPE hie_http_requests_total counter"]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(f'hie_http_requests_total{{method="{method}",route="{_esc(route)}",'
                         f'status="{status}"}} {n}')
        lines += ["# HELP hie_http_request_seconds_sum Time spent answering, by route.",
                  "# TYPE hie_http_request_seconds_sum counter"]
        for (method, route), s in sorted(self.seconds.items()):
            lines.append(f'hie_http_request_seconds_sum{{method="{method}",'
                         f'route="{_esc(route)}"}} {s:.6f}')
        return "\n".join(lines) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


METRICS = Metrics()


class MetricsMiddleware:
    """Time every HTTP request and record it under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics = METRICS) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
