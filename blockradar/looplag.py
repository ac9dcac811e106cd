"""How late the asyncio event loop runs: a task that asks to wake every ``interval_s`` and records how
much later than asked it woke, into the ``blockradar_loop_lag_seconds`` histogram.

Everything the daemon does for a call (classify, count, alert, store) runs on one event loop, so its lag
is the delay every other piece of work (a PBX read, a Pong, /healthz) suffers. The issue 12 audit found
4.8 s of it under a flood of spoofed numbers; the histogram makes it visible on any dashboard, and the
bench reads the same samples (``samples``) for its ``loop_lag_p99_ms`` figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from prometheus_client import CollectorRegistry, Histogram

# from "no lag" to "the daemon is stuck": a tick slice and a hand-off slice are budgeted at 1 ms each
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopLagMonitor:
    """Measures the lag of the running loop while started; ``samples`` keeps the last ``keep`` of them."""

    def __init__(self, registry: CollectorRegistry | None = None, *, interval_s: float = 0.02,
                 keep: int = 10_000) -> None:
        self.interval_s = interval_s
        self.histogram = None if registry is None else Histogram(
            "blockradar_loop_lag_seconds", "How much later than asked the event loop ran a timer: the delay "
            "every PBX read, probe answer and HTTP request waits.", buckets=BUCKETS, registry=registry)
        self.samples: deque[float] = deque(maxlen=keep)
        self.worst_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="blockradar-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        interval = self.interval_s
        observe = self.histogram.observe if self.histogram is not None else None
        while True:
            asked = time.perf_counter() + interval
            await asyncio.sleep(interval)
            lag = max(0.0, time.perf_counter() - asked)
            self.samples.append(lag)
            if lag > self.worst_s:
                self.worst_s = lag
            if observe is not None:
                observe(lag)

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the kept samples, nearest rank; 0.0 without samples."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]
