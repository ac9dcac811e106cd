"""Alert latency: from the PBX writing a hangup frame to the local webhook receiving the POST.

The real daemon (``blockradar.daemon.Daemon``, started from a real config file) against a feeder
process that plays Asterisk and streams calls over loopback at 200 calls/s: ``AsteriskConnector``
-> the daemon's sink (``Pipeline.process`` with the bundled rules and default thresholds,
``group_wait: 0``, then ``Pipeline.flush_due``) -> ``Outbox.enqueue`` (one committed SQLite row,
``synchronous=FULL``) -> the outbox worker -> the webhook notifier (aiohttp POST) -> the receiver,
an aiohttp server in the feeder process. The feeder timestamps each call's write and each POST's
arrival with the same ``time.monotonic()``, so no clock crosses a process.

Every tenth call is a 608 (a high-confidence analytics block; over AMI a 603+ loses its Reason
and is only medium) from a calling number used only once, so each raises its own
``number-strong-block`` alert; alerts are grouped by ``threshold`` and ``caller_number`` so each
is its own group and is notified at once (with the default ``group_by: [threshold, trunk]`` a
second alert on a trunk would wait ``group_interval``, which is policy, not latency). The other
calls follow the realistic mix over 1000 numbers.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.feeder import AMI_SECRET, AMI_USERNAME, FeederProcess
from bench.streams import CALLS_PER_SECOND, call_specs, subscribed_ami_frames
from blockradar.config import load_config
from blockradar.daemon import Daemon
from blockradar.demo.traffic import CallSpec, TrafficBuilder

ALERT_EVERY = 10  # every n-th call is a strong block from a fresh number


def build_calls(n: int, *, start: float | None = None) -> list[tuple[str | None, bytes]]:
    """``n`` calls as (key, AMI bytes); the key is the calling number of calls that must alert."""
    builder = TrafficBuilder()
    calls: list[tuple[str | None, bytes]] = []
    for i, spec in enumerate(call_specs(n, start=start)):
        key: str | None = None
        if i % ALERT_EVERY == 0:
            key = f"+1444{i:07d}"
            spec = CallSpec(scenario="608", caller=key, callee=spec.callee, trunk=spec.trunk, at=spec.at)
        calls.append((key, b"".join(subscribed_ami_frames(builder, spec))))
    return calls


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[rank]


CONFIG = """\
connectors:
  - {{name: bench, type: asterisk, host: 127.0.0.1, port: {ami_port}, username: {username}, secret: {secret}}}
alerting: {{group_wait: 0s, group_by: [threshold, caller_number]}}
notifiers:
  - {{type: webhook, url: "http://127.0.0.1:{webhook_port}/hook"}}
store: {store}
http: null
"""


async def _run(daemon: Daemon, calls: int, seen: list[int]) -> None:
    await daemon.start()
    try:
        deadline = time.monotonic() + calls / CALLS_PER_SECOND + 30.0
        while seen[0] < calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the last POSTs
    finally:
        await daemon.stop(flush_s=5.0)


def measure(seconds: float, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    n = int(seconds * CALLS_PER_SECOND)
    calls = build_calls(n)
    progress(f"latency: {n} calls at {CALLS_PER_SECOND:g}/s, {len(calls) // ALERT_EVERY} alerting")
    seen = [0]
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp, \
            FeederProcess("ami", {"calls": calls, "cps": CALLS_PER_SECOND}) as feeder:
        config = Path(tmp) / "blockradar.yaml"
        config.write_text(CONFIG.format(ami_port=feeder.port, username=AMI_USERNAME, secret=AMI_SECRET,
                                        webhook_port=feeder.webhook_port,
                                        store=Path(tmp) / "state.db"))
        daemon = Daemon(load_config(config), on_outcome=lambda outcome, cls: seen.__setitem__(0, seen[0] + 1))
        asyncio.run(_run(daemon, n, seen))
        report = feeder.report()
    latencies: list[float] = report["latencies_ms"]
    result = {
        "calls": n,
        "calls_per_s": CALLS_PER_SECOND,
        "alerts_expected": (n + ALERT_EVERY - 1) // ALERT_EVERY,
        "alerts_received": len(latencies),
        "posts": report["posts"],
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "outcomes": seen[0],
    }
    progress(f"latency: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms "
             f"({result['alerts_received']}/{result['alerts_expected']} alerts)")
    return result
