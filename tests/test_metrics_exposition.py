"""``/metrics`` as Prometheus' own linter sees it (``promtool check metrics``, Debian's ``prometheus``):
after real traffic (a 608 that fires an alert, answered and busy calls), with every collector the
daemon registers, and without the ``*_created`` twins of the counters; and the example Grafana
dashboard charts only series that exist."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from blockradar.config import load_config
from blockradar.daemon import Daemon
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.testing import AmiServer, AmiSession
from tests.servers.debian_tools import require_tool

pytestmark = pytest.mark.timeout(60)

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana" / "blockradar-dashboard.json"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_promtool_finds_nothing_to_say_about_the_metrics(tmp_path: Path):
    promtool = require_tool("promtool", "prometheus")
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw}}
            alerting: {{group_wait: 0s}}
            store: {tmp_path / "state.db"}
            http: {{listen: "127.0.0.1:0"}}
            """))
        daemon = Daemon(load_config(config))
        await daemon.start()
        try:
            deadline = time.monotonic() + 20
            while not daemon.healths()[0].last_event_at and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            builder, now = TrafficBuilder(), time.time()
            for i, scenario in enumerate(["608", "200", "486", "608"]):
                await ami.push(b"".join(builder.ami_frames(CallSpec(scenario, "+15557700001", "+12125550100",
                                                                    "carrier-a", now + i))))
            port = daemon.http.bound_port
            text = ""
            while "blockradar_alerts_firing{" not in text or ' 1.0\n' not in text.split("blockradar_alerts_firing{")[1]:
                assert time.monotonic() < deadline + 20, "no alert fired"
                await asyncio.sleep(0.1)
                text = await asyncio.to_thread(scrape, port)
        finally:
            await daemon.stop(flush_s=2.0)
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr
    assert "_created" not in text
    for name in ("blockradar_build_info", "process_resident_memory_bytes", "python_info",
                 "blockradar_last_frame_timestamp_seconds", "blockradar_frames_received_total",
                 "blockradar_alert_transitions_total", "blockradar_outcomes_dropped_total"):
        assert f"\n{name}" in text, name
    # the example Grafana dashboard charts only series that exist
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    charted = {name for expr in exprs for name in re.findall(r"\b(blockradar_[a-z_]+)", expr)}
    assert len(charted) >= 8
    assert not [name for name in charted if f"# TYPE {name.removesuffix('_bucket')} " not in text]
