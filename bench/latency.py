"""Alert latency: from the PBX writing a hangup frame to the local webhook receiving the POST.

The daemon's path, assembled from its components (``blockradar/daemon.py`` is not used):
a feeder process plays Asterisk and streams calls over loopback at 200 calls/s ->
``AsteriskConnector`` -> sink: ``Pipeline.process`` (bundled rules, default thresholds,
``group_wait: 0``, the SQLite store on a temporary file) -> as soon as an alert group is due, its
flush (``AlertLifecycle.tick``, what the proposed ``Pipeline.flush_due`` does) -> ``emit`` =
``Outbox.enqueue`` (one committed row, ``synchronous=FULL``) -> the outbox worker -> the webhook
notifier (aiohttp POST) -> the receiver, an aiohttp server in the feeder process. A 1 s ticker
does what the daemon's does (tick, write the buffered outcomes in one batch). The feeder
timestamps each call's write and each POST's arrival with the same
``time.monotonic()``, so no clock crosses a process.

Every tenth call is a 608 (a high-confidence analytics block; over AMI a 603+ loses its Reason
and is only medium) from a calling number used only once, so each raises its own
``number-strong-block`` alert; alerts are grouped by ``threshold`` and ``caller_number`` so each
is its own group and is notified at once (with the
default ``group_by: [threshold, trunk]`` a second alert on a trunk would wait ``group_interval``,
which is policy, not latency). The other calls follow the realistic mix over 1000 numbers.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.feeder import FeederProcess
from bench.streams import CALLS_PER_SECOND, call_specs, subscribed_ami_frames
from blockradar.alerts import AlertingConfig
from blockradar.classification import Classification
from blockradar.clock import SystemClock
from blockradar.connectors.asterisk import AsteriskConfig, AsteriskConnector
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.notifiers import build_notifier
from blockradar.outbox import Outbox
from blockradar.outcome import CallOutcome
from blockradar.pipeline import Pipeline
from blockradar.ruleset import load_ruleset
from blockradar.secret import Secret
from blockradar.store import Store

ALERT_EVERY = 10  # every n-th call is a strong block from a fresh number
TICK_S = 1.0
OUTCOME_FLUSH_ROWS = 500


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


class _Daemonlet:
    """The daemon's outcome path, nothing else: process, flush due groups, enqueue, ticker."""

    def __init__(self, store: Store, webhook_url: str, *, flush_when_due: bool = True) -> None:
        self.flush_when_due = flush_when_due
        self.clock = SystemClock()
        self.store = store
        self.outbox = Outbox(store, [build_notifier({"type": "webhook", "url": webhook_url})], clock=self.clock)
        alerting = AlertingConfig(group_wait=0, group_by=["threshold", "caller_number"])
        self.pipeline = Pipeline(load_ruleset(), alerting=alerting, emit=self.outbox.enqueue, store=store)
        self.pending: list[tuple[CallOutcome, Classification | None]] = []
        self.outcomes = 0
        self._ticker: asyncio.Task[None] | None = None

    def sink(self, outcome: CallOutcome) -> None:
        cls = self.pipeline.process(outcome)
        self.outcomes += 1
        self.pending.append((outcome, cls))
        if len(self.pending) >= OUTCOME_FLUSH_ROWS:
            self.flush_outcomes()
        if self.flush_when_due:
            # = the proposed Pipeline.flush_due(now): notify the groups that are due, nothing else
            due = self.pipeline.next_due()
            now = self.clock.now()
            if due is not None and due <= now:
                self.pipeline.lifecycle.tick(now)

    def flush_outcomes(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            self.store.add_outcomes(batch)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.flush_outcomes()
            self.pipeline.tick(self.clock.now())

    async def start(self) -> None:
        await self.outbox.start()
        self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.flush_outcomes()
        await self.outbox.drain(5.0)
        await self.outbox.stop()


async def _run(feeder: FeederProcess, calls: int, daemon: _Daemonlet) -> None:
    await daemon.start()
    config = AsteriskConfig(name="bench", host="127.0.0.1", port=feeder.port, username="bench",
                            secret=Secret("bench-secret"))
    connector = AsteriskConnector(config, daemon.sink)
    await connector.start()
    try:
        deadline = time.monotonic() + calls / CALLS_PER_SECOND + 30.0
        while daemon.outcomes < calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # the last POSTs (with the ticker only, the last alerts wait for its next tick)
        await asyncio.sleep(0.5 if daemon.flush_when_due else TICK_S + 0.5)
    finally:
        await connector.close()
        await daemon.stop()


def measure(seconds: float, progress: Callable[[str], None] = lambda _: None, *,
            flush_when_due: bool = True) -> dict[str, Any]:
    """``flush_when_due=False``: due groups wait for the 1 s ticker (what a daemon without the
    flush-when-due step in its sink does), for comparison."""
    n = int(seconds * CALLS_PER_SECOND)
    calls = build_calls(n)
    mode = "flush when due" if flush_when_due else "1 s ticker only"
    progress(f"latency ({mode}): {n} calls at {CALLS_PER_SECOND:g}/s, {len(calls) // ALERT_EVERY} alerting")
    fd, path = tempfile.mkstemp(prefix="bench-latency-", suffix=".sqlite")
    os.close(fd)
    try:
        with FeederProcess("ami", {"calls": calls, "cps": CALLS_PER_SECOND}) as feeder:
            store = Store(path)
            try:
                daemon = _Daemonlet(store, f"http://127.0.0.1:{feeder.webhook_port}/hook",
                                    flush_when_due=flush_when_due)
                asyncio.run(_run(feeder, n, daemon))
            finally:
                store.close()
            report = feeder.report()
    finally:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
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
        "outcomes": daemon.outcomes,
    }
    progress(f"latency ({mode}): p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms "
             f"({result['alerts_received']}/{result['alerts_expected']} alerts)")
    return result
