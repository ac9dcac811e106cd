"""The PBX side of the benchmarks: a loopback AMI or ESL server in its own process.

Run as ``python -m bench.feeder <ami|esl> <stream.pickle>``. It binds 127.0.0.1:0, prints one JSON
line ``{"port": N, "webhook_port": M}`` and then serves every connection with the package's protocol
servers (``blockradar.testing``: ``AmiServer`` plays Asterisk's ``manager.c``, ``EslServer``
FreeSWITCH's ``mod_event_socket``: banner or ``auth/request``, Login / auth, Ping, ``api status``,
Logoff / exit, ``event`` and ``filter`` replies). Clients log in with ``AMI_USERNAME`` /
``AMI_SECRET`` or ``ESL_PASSWORD``. After the login (AMI) or the ``event`` subscription (ESL) every
connection gets the prebuilt stream, as it is (no subscription filter):

* throughput mode (the pickle holds ``{"data": bytes}``): everything in one write, as fast as the
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
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from aiohttp import web

from blockradar.testing.ami import AmiServer, AmiSession
from blockradar.testing.esl import EslServer, EslSession

AMI_USERNAME = "bench"
AMI_SECRET = "bench-secret"
ESL_PASSWORD = "ClueCon"
_say_lock = threading.Lock()  # the ESL server writes from its threads


def _say(obj: dict[str, Any]) -> None:
    with _say_lock:
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

    def session(self) -> dict[str, Any]:
        """The stream and its pace, as ``AmiSession`` / ``EslSession`` fields."""
        if self.data is not None:
            return {"stream": self.data, "on_write": self._started}
        return {
            "stream": b"".join(chunk for _, chunk in self.calls),
            "chunk_sizes": tuple(len(chunk) for _, chunk in self.calls),
            "interval": 1.0 / self.cps,
            "on_write": self._writing,
        }

    def _started(self, index: int) -> None:
        if index == 0:
            _say({"start": time.monotonic()})

    def _writing(self, index: int) -> None:
        now = time.monotonic()
        self.written += 1
        key = self.calls[index][0]
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


async def serve(proto: str, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    feed = Feed(spec)
    ami: AmiServer | None = None
    esl: EslServer | None = None
    if proto == "ami":
        ami = AmiServer(username=AMI_USERNAME, secret=AMI_SECRET, sessions=[AmiSession(**feed.session())])
        await ami.start()
        port = ami.port
    else:
        esl = EslServer(password=ESL_PASSWORD, default=EslSession(**feed.session())).start()
        port = esl.port
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
        if ami is not None:
            await ami.close()
        if esl is not None:
            esl.stop()
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
