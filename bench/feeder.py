"""The PBX side of the benchmarks: a loopback AMI or ESL server in its own process.

Run as ``python -m bench.feeder <ami|esl> <stream.pickle>``. It binds 127.0.0.1:0, prints one JSON
line ``{"port": N, "webhook_port": M}`` and then serves every connection the way Asterisk's
``manager.c`` / FreeSWITCH's ``mod_event_socket`` would: banner or ``auth/request``, Login / auth,
Ping, Logoff / exit, ``event`` and ``filter`` replies. After the login (AMI) or the ``event``
subscription (ESL) it writes the prebuilt stream:

* throughput mode (the pickle holds ``{"data": bytes}``): everything at once, as fast as the
  socket takes it; just before the first byte it prints ``{"start": <time.monotonic()>}``
  (CLOCK_MONOTONIC is system-wide, so the client process can subtract it from its own reading);
* paced mode (``{"calls": [(key, bytes), ...], "cps": float}``): one call's frames per write at
  ``cps`` calls per second, remembering ``time.monotonic()`` of each write under the call's key
  (the calling number of calls that must raise an alert).

In paced mode it also runs the local webhook receiver (aiohttp): each POST's alerts are matched
by their ``caller_number`` label to the write time of that call. A line ``report`` on stdin makes
it print ``{"latencies_ms": [...], "posts": n, "unmatched": n, "written": n}``; EOF on stdin ends
the process. Being another process, it never competes with the client for the GIL.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aiohttp import web

AMI_BANNER = b"Asterisk Call Manager/7.0.3\r\n"
AMI_FULLY_BOOTED = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 5\r\nLastReload: 5\r\nStatus: Fully Booted\r\n\r\n"
)


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Feed:
    """What every connection gets after login, and the bookkeeping of paced mode."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.data: bytes | None = spec.get("data")
        self.calls: list[tuple[str | None, bytes]] = spec.get("calls", [])
        self.cps: float = float(spec.get("cps", 200.0))
        self.written_at: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.posts = 0
        self.unmatched = 0
        self.written = 0

    async def play(self, transport: asyncio.WriteTransport) -> None:
        if self.data is not None:
            _say({"start": time.monotonic()})
            transport.write(self.data)
            return
        loop = asyncio.get_running_loop()
        begin = loop.time()
        gap = 1.0 / self.cps
        for i, (key, chunk) in enumerate(self.calls):
            delay = begin + i * gap - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if transport.is_closing():
                return
            now = time.monotonic()
            transport.write(chunk)
            self.written += 1
            if key is not None:
                self.written_at[key] = now

    async def webhook(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        body = await request.json()
        self.posts += 1
        matched = False
        for alert in body.get("alerts", []):
            key = alert.get("labels", {}).get("caller_number")
            sent = self.written_at.pop(key, None) if key else None
            if sent is not None:
                self.latencies_ms.append((now - sent) * 1000.0)
                matched = True
        if not matched:
            self.unmatched += 1
        return web.Response(text="ok")

    def report(self) -> dict[str, Any]:
        return {"latencies_ms": self.latencies_ms, "posts": self.posts, "unmatched": self.unmatched,
                "written": self.written, "never_alerted": len(self.written_at)}


class AmiServer(asyncio.Protocol):
    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.buf = b""
        self.transport: asyncio.WriteTransport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        transport.write(AMI_BANNER)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        *frames, self.buf = self.buf.split(b"\r\n\r\n")
        for frame in frames:
            fields = {}
            for line in frame.decode("utf-8", "replace").split("\r\n"):
                key, _, value = line.partition(": ")
                fields[key.lower()] = value
            action = fields.get("action", "").lower()
            aid = fields.get("actionid", "")
            head = f"ActionID: {aid}\r\n".encode() if aid else b""
            if action == "login":
                self.transport.write(b"Response: Success\r\n" + head + b"Message: Authentication accepted\r\n\r\n")
                self.transport.write(AMI_FULLY_BOOTED)
                self.task = asyncio.ensure_future(self.feed.play(self.transport))
            elif action == "ping":
                self.transport.write(b"Response: Success\r\n" + head + b"Ping: Pong\r\nTimestamp: %.6f\r\n\r\n"
                                     % time.time())
            elif action == "logoff":
                self.transport.write(b"Response: Goodbye\r\n" + head + b"Message: Thanks for all the fish.\r\n\r\n")
                self.transport.close()
            else:
                self.transport.write(b"Response: Error\r\n" + head + b"Message: Invalid/unknown command\r\n\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()


class EslServer(asyncio.Protocol):
    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.buf = b""
        self.transport: asyncio.WriteTransport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        transport.write(b"Content-Type: auth/request\n\n")

    def _reply(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        *commands, self.buf = self.buf.split(b"\n\n")
        for raw in commands:
            command = raw.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0]
            if verb == "auth":
                self._reply("+OK accepted")
            elif verb == "event":
                self._reply("+OK event listener enabled " + command.split(" ")[1])
                if self.task is None:
                    self.task = asyncio.ensure_future(self.feed.play(self.transport))
            elif verb == "filter":
                self._reply("+OK filter added")
            elif verb == "exit":
                self._reply("+OK bye")
                notice = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
                self.transport.write(b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s"
                                     % (len(notice), notice))
                self.transport.close()
            else:
                self._reply("-ERR command not found")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()


async def serve(proto: str, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    feed = Feed(spec)
    factory = AmiServer if proto == "ami" else EslServer
    server = await loop.create_server(lambda: factory(feed), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    runner: web.AppRunner | None = None
    webhook_port = 0
    if spec.get("calls"):
        app = web.Application()
        app.router.add_post("/hook", feed.webhook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        webhook_port = runner.addresses[0][1]
    _say({"port": port, "webhook_port": webhook_port})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            if line.strip() == b"report":
                _say(feed.report())
    finally:
        server.close()
        if runner is not None:
            await runner.cleanup()


class FeederProcess:
    """The parent's handle on a feeder process (a context manager).

    ``spec`` is ``{"data": bytes}`` or ``{"calls": [...], "cps": float}`` (see the module docstring).
    """

    def __init__(self, proto: str, spec: dict[str, Any]) -> None:
        self.proto = proto
        fd, self._path = tempfile.mkstemp(prefix="bench-stream-", suffix=".pickle")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(spec, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.feeder", proto, self._path],
            cwd=Path(__file__).resolve().parent.parent,  # where ``-m bench.feeder`` is importable
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self.port: int = hello["port"]
        self.webhook_port: int = hello["webhook_port"]

    def _read(self) -> dict[str, Any]:
        out: IO[str] | None = self._proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise RuntimeError(f"bench feeder ({self.proto}) exited with {self._proc.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def started_at(self) -> float:
        """The ``time.monotonic()`` at which the next connection's stream started (blocks)."""
        return float(self._read()["start"])

    def report(self) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write("report\n")
        self._proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        os.unlink(self._path)

    def __enter__(self) -> FeederProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def main(argv: list[str]) -> None:
    proto, path = argv[0], argv[1]
    with open(path, "rb") as fh:
        spec = pickle.load(fh)
    asyncio.run(serve(proto, spec))


if __name__ == "__main__":
    main(sys.argv[1:])
