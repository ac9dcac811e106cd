"""A local HTTP server that stands in for Slack incoming webhooks and generic webhook receivers.

It records every request (method, path, headers, raw body, parsed JSON), can check the body
against Slack's Block Kit shape and limits (answering 400 ``invalid_blocks`` like Slack does),
answers from a script of responses (e.g. 500, then 429 with ``Retry-After``, then 200), can delay
its answers, and can be stopped (connections refused) and started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    status: int = 0  # what the sink answered
    query: dict[str, str] = field(default_factory=dict)  # the URL's query, decoded


@dataclass
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def slack_payload_problems(payload: Any) -> list[str]:
    """What is wrong with a Slack webhook payload (empty list when it is a valid Block Kit message)."""
    problems: list[str] = []
    if not isinstance(payload, dict):
        return ["payload is not an object"]
    if not isinstance(payload.get("text"), str) or not payload["text"]:
        problems.append("missing fallback text")
    blocks = payload.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        return [*problems, "no blocks"]
    if len(blocks) > 50:
        problems.append(f"{len(blocks)} blocks > 50")
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            problems.append(f"block {i}: unknown type {kind!r}")
            continue
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                problems.append(f"block {i}: header needs plain_text of 1..150 chars")
        elif kind == "section":
            text = block.get("text")
            fields = block.get("fields", [])
            if text is None and not fields:
                problems.append(f"block {i}: section without text or fields")
            if text is not None and not 0 < len(text.get("text", "")) <= 3000:
                problems.append(f"block {i}: section text length")
            if len(fields) > 10:
                problems.append(f"block {i}: {len(fields)} fields > 10")
            for f in fields:
                if f.get("type") not in ("mrkdwn", "plain_text") or not 0 < len(f.get("text", "")) <= 2000:
                    problems.append(f"block {i}: bad field")
        elif kind == "context":
            elements = block.get("elements", [])
            if not 0 < len(elements) <= 10:
                problems.append(f"block {i}: context needs 1..10 elements")
            for e in elements:
                if e.get("type") in ("mrkdwn", "plain_text") and not 0 < len(e.get("text", "")) <= 3000:
                    problems.append(f"block {i}: context element length")
    return problems


class HttpSink:
    """``async with HttpSink(slack=True) as sink: ... sink.url ... sink.requests``."""

    def __init__(self, *, slack: bool = False, path: str = "/hook") -> None:
        self.slack = slack
        self.path = path
        self.requests: list[Recorded] = []
        self.problems: list[str] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def start(self) -> HttpSink:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._release.set()  # delayed answers end now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HttpSink:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        """Wait until ``count`` requests arrived (bounded); returns them."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = Recorded(request.method, request.path, dict(request.headers), body, parsed, query=dict(request.query))
        self.requests.append(record)
        self.arrived.set()
        reply = self.script.pop(0) if self.script else self.default
        record.status = reply.status
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), reply.delay_s)
        if self.slack and reply.status == 200:
            problems = slack_payload_problems(parsed)
            if problems:
                self.problems.extend(problems)
                record.status = 400
                return web.Response(status=400, text="invalid_blocks")
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
