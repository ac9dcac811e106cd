"""AMI throughput: blockradar's AsteriskConnector end to end vs stock panoramisk parsing.

Both clients read the same prebuilt stream from a feeder process over loopback (``feeder.py``).
The rate is stream events per second from the feeder's first byte (its ``time.monotonic()``) to
the moment the client has seen everything:

* blockradar: ``AsteriskConnector`` (framing, peek, parse, correlate, normalize) until its sink
  has received every outcome of the stream (one per call);
* panoramisk: a stock ``Manager`` (1.4) with one ``'*'`` callback that counts, until it has
  dispatched every event of the stream (plus the ``FullyBooted`` sent after Login).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from panoramisk import Manager

from bench.feeder import AMI_SECRET, AMI_USERNAME, FeederProcess
from bench.streams import Stream
from blockradar.connectors.asterisk import AsteriskConfig, AsteriskConnector
from blockradar.outcome import CallOutcome
from blockradar.secret import Secret

USERNAME = AMI_USERNAME  # what the feeder's AmiServer accepts
SECRET = AMI_SECRET
TIMEOUT_S = 120.0


class _Countdown:
    """Counts to ``target`` and remembers ``time.monotonic()`` when it gets there."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.finished_at = 0.0
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.finished_at = time.monotonic()
            self.done.set()


async def blockradar_once(port: int, stream: Stream) -> float:
    """Runs AsteriskConnector over one served stream; returns ``time.monotonic()`` at the last outcome."""
    countdown = _Countdown(stream.outcomes)

    def sink(outcome: CallOutcome) -> None:
        countdown.tick()

    config = AsteriskConfig(name="bench", host="127.0.0.1", port=port, username=USERNAME, secret=Secret(SECRET))
    connector = AsteriskConnector(config, sink)
    await connector.start()
    try:
        await asyncio.wait_for(countdown.done.wait(), TIMEOUT_S)
    finally:
        await connector.close()
    return countdown.finished_at


async def panoramisk_once(port: int, stream: Stream) -> float:
    """Runs a stock panoramisk Manager over one served stream; returns when the last event was dispatched."""
    countdown = _Countdown(stream.events + 1)  # + the FullyBooted after Login

    def on_event(manager: Manager, message: object) -> None:
        countdown.tick()

    manager = Manager(
        loop=asyncio.get_running_loop(),
        host="127.0.0.1",
        port=port,
        username=USERNAME,
        secret=SECRET,
        events="on",
        log=logging.getLogger("bench.panoramisk"),
    )
    manager.register_event("*", on_event)
    await manager.connect()
    try:
        await asyncio.wait_for(countdown.done.wait(), TIMEOUT_S)
    finally:
        manager.close()
    return countdown.finished_at


def measure(stream: Stream, repeats: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, list[float]]:
    """Events/s of both clients, ``repeats`` times each, alternating (noise hits both alike)."""
    rates: dict[str, list[float]] = {"blockradar": [], "panoramisk": []}
    clients = {"blockradar": blockradar_once, "panoramisk": panoramisk_once}

    async def run(feeder: FeederProcess) -> None:
        for i in range(repeats):
            for name, client in clients.items():
                finished = await client(feeder.port, stream)
                started = feeder.started_at()
                rates[name].append(stream.events / (finished - started))
                progress(f"ami {name} {i + 1}/{repeats}: {rates[name][-1]:,.0f} events/s")

    with FeederProcess("ami", {"data": stream.data}) as feeder:
        asyncio.run(run(feeder))
    return rates
