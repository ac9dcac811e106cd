"""A real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) on a free loopback port, for the
tests of the ``alertmanager`` notifier: it routes every alert to a webhook receiver the test runs, with
short group timers so a test sees the firing and the resolved notifications within seconds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from blockradar.testing.ports import free_port
from tests.servers.debian_tools import require_tool

CONFIG = """\
global:
  resolve_timeout: 5m
route:
  receiver: sink
  group_by: [alertname, caller_number]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
    webhook_configs:
      - url: {sink_url}
        send_resolved: true
"""




class Alertmanager:
    """``async with Alertmanager(tmp_path, sink_url) as am``: ``am.url``, ``am.alerts()`` (API v2)."""

    def __init__(self, workdir: Path, sink_url: str) -> None:
        self.binary = require_tool("prometheus-alertmanager", "prometheus-alertmanager")
        self.workdir = workdir
        self.sink_url = sink_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Alertmanager:
        config = self.workdir / "alertmanager.yml"
        config.write_text(CONFIG.format(sink_url=self.sink_url))
        self._log = (self.workdir / "alertmanager.log").open("wb")
        self._process = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.path={self.workdir / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(self.workdir / 'alertmanager.log').read_text()[-500:]}")
            try:
                await asyncio.to_thread(self._get, "/-/ready")
                return self
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError("alertmanager did not become ready in 20 s")

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._log.close()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body and body[:1] in b"[{" else body

    async def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: what Alertmanager shows (active, silenced and inhibited alike)."""
        return await asyncio.to_thread(self._get, "/api/v2/alerts")
