"""The daemon's HTTP endpoints: ``/metrics`` (Prometheus text format), ``/healthz`` (JSON), and the
read-only status page: ``/`` (overview), ``/numbers/<E.164>`` (a number's card) and the same data as
JSON under ``/api/v1/overview`` and ``/api/v1/numbers/<E.164>``.

``/healthz`` answers 200 when every connector is connected, 503 otherwise, with per-connector
state, last-event age, reconnects, parse errors and drops, the outbox depth and the last reload.
The server only exposes; what it exposes is handed in (callables, a ``StatusSource``). Store queries
run in a worker thread on their own read-only connection: a page over a day of calls never holds the
event loop that reads the PBX.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from blockradar.numbers import NumberPlan
from blockradar.web import pages, queries

HealthReport = Callable[[], tuple[bool, dict[str, Any]]]

# what the page may show of a browser's request: nothing from elsewhere, no script at all
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class StatusSource:
    """What the status page reads: the store file, the daemon's live state (connectors, firing alerts,
    silences) and the clock."""

    store_path: str | Path
    live: Callable[[], dict[str, Any]]
    now: Callable[[], float] = time.time
    numbers: NumberPlan | None = None  # the daemon's plan: a number typed as the store keeps it, or national


def build_app(registry: CollectorRegistry, health: HealthReport, status: StatusSource | None = None) -> web.Application:
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
    if status is not None:
        add_status_routes(app, status)
    return app


def _number(request: web.Request, status: StatusSource) -> str | None:
    """The E.164 form of the number in the path (``+15557650003``, ``15557650003`` or a national form)."""
    raw = request.match_info["number"].strip()
    if not 1 <= len(raw) <= 32:
        return None
    plan = status.numbers or NumberPlan()
    return plan.text(raw)


def add_status_routes(app: web.Application, status: StatusSource) -> None:
    async def overview_data() -> dict[str, Any]:
        now = status.now()
        data = await asyncio.to_thread(queries.overview, status.store_path, now)
        return {"live": status.live(), **data}

    async def overview(_: web.Request) -> web.Response:
        data = await overview_data()
        return web.Response(text=pages.overview(data["live"], data), content_type="text/html",
                            headers=SECURITY_HEADERS)

    async def overview_json(_: web.Request) -> web.Response:
        return web.json_response(await overview_data(), headers={"Cache-Control": "no-store"})

    async def card_data(request: web.Request) -> tuple[str | None, dict[str, Any] | None]:
        number = _number(request, status)
        if number is None:
            return None, None
        return number, await asyncio.to_thread(queries.number_card, status.store_path, number, status.now())

    async def card(request: web.Request) -> web.Response:
        number, data = await card_data(request)
        if data is None:
            what = f"No call from {number} in the store" if number else "Not a phone number"
            return web.Response(text=pages.not_found(what), status=404, content_type="text/html",
                                headers=SECURITY_HEADERS)
        return web.Response(text=pages.number_card(data), content_type="text/html", headers=SECURITY_HEADERS)

    async def card_json(request: web.Request) -> web.Response:
        number, data = await card_data(request)
        if data is None:
            return web.json_response({"error": "no call from this number in the store" if number
                                      else "not a phone number"}, status=404)
        return web.json_response(data, headers={"Cache-Control": "no-store"})

    app.router.add_get("/", overview)
    app.router.add_get("/api/v1/overview", overview_json)
    app.router.add_get("/numbers/{number}", card)
    app.router.add_get("/api/v1/numbers/{number}", card_json)


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
