"""The daemon's HTTP endpoints: ``/metrics`` (Prometheus text format) and ``/healthz`` (JSON).

``/healthz`` answers 200 when every connector is connected, 503 otherwise, with per-connector
state, last-event age, reconnects, parse errors and drops, the outbox depth and the last reload.
The server only exposes; what it exposes is handed in as callables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthReport = Callable[[], tuple[bool, dict[str, Any]]]


def build_app(registry: CollectorRegistry, health: HealthReport) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, report = health()
        report = {"status": "ok" if ok else "degraded", "time": time.time(), **report}
        return web.json_response(report, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


class HttpServer:
    """Runs the app on host:port inside the current asyncio loop."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
