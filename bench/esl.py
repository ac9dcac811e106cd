"""ESL throughput: blockradar's FreeswitchConnector end to end vs stock greenswitch parsing.

Both clients read the same prebuilt stream (the default subscription's events: every
CHANNEL_HANGUP_COMPLETE and the HEARTBEATs) from a feeder process over loopback. The rate is
stream events per second from the feeder's first byte to the moment the client has seen
everything:

* blockradar: ``FreeswitchConnector`` (its gevent thread, framing, lazy parse, normalize, the
  hand-off to asyncio) until its sink has received every outcome (one per call);
* greenswitch: a stock ``InboundESL`` (0.0.19) with one ``'*'`` handler that counts, until it has
  dispatched every event. It runs in its own process (``python -m bench.esl greenswitch PORT N``)
  with gevent in the main thread, as greenswitch is meant to be used.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.feeder import ESL_PASSWORD, FeederProcess
from bench.streams import Stream, esl_subscribed_events
from blockradar.connectors.freeswitch import FreeswitchConfig, FreeswitchConnector
from blockradar.outcome import CallOutcome
from blockradar.secret import Secret

PASSWORD = ESL_PASSWORD  # what the feeder's EslServer accepts
BENCH_ROOT = Path(__file__).resolve().parent.parent  # where ``-m bench.esl`` is importable
SKEW_TOLERANCE_S = 10 * 86400.0
TIMEOUT_S = 120.0


async def blockradar_once(port: int, stream: Stream) -> float:
    """Runs FreeswitchConnector over one served stream; returns ``time.monotonic()`` at the last outcome."""
    done = asyncio.Event()
    seen = 0
    finished_at = 0.0

    def sink(outcome: CallOutcome) -> None:
        nonlocal seen, finished_at
        seen += 1
        if seen == stream.outcomes:
            finished_at = time.monotonic()
            done.set()

    # The stream is replayed faster than real time, so its PBX times drift from the receive time:
    # a wide skew tolerance keeps the guard from logging it (the guard's cost is the same).
    config = FreeswitchConfig(name="bench", host="127.0.0.1", port=port, password=Secret(PASSWORD),
                              clock_skew_tolerance_s=SKEW_TOLERANCE_S)
    connector = FreeswitchConnector(config, sink)
    await connector.start()
    try:
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
    finally:
        await connector.close()
    return finished_at


def greenswitch_once(port: int, stream: Stream) -> float:
    """Runs stock greenswitch in a child process over one served stream; returns when it dispatched the last event."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.esl", "greenswitch", str(port), str(stream.events)],
        cwd=BENCH_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["finished_at"])


def _greenswitch_child(port: int, events: int) -> None:
    import gevent.event
    from greenswitch.esl import InboundESL

    done = gevent.event.Event()
    seen = 0
    finished_at = 0.0

    def on_event(event: object) -> None:
        nonlocal seen, finished_at
        seen += 1
        if seen == events:
            finished_at = time.monotonic()
            done.set()

    esl = InboundESL("127.0.0.1", port, PASSWORD)
    esl.connect()
    esl.register_handle("*", on_event)
    esl.send("event plain " + " ".join(sorted(esl_subscribed_events())))
    if not done.wait(timeout=TIMEOUT_S):
        raise SystemExit(f"greenswitch saw {seen} of {events} events")
    esl.stop()
    print(json.dumps({"finished_at": finished_at}))


def measure(stream: Stream, repeats: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, list[float]]:
    """Events/s of both clients, ``repeats`` times each, alternating."""
    rates: dict[str, list[float]] = {"blockradar": [], "greenswitch": []}

    async def run(feeder: FeederProcess) -> None:
        for i in range(repeats):
            finished = await blockradar_once(feeder.port, stream)
            rates["blockradar"].append(stream.events / (finished - feeder.started_at()))
            progress(f"esl blockradar {i + 1}/{repeats}: {rates['blockradar'][-1]:,.0f} events/s")
            finished = await asyncio.to_thread(greenswitch_once, feeder.port, stream)
            rates["greenswitch"].append(stream.events / (finished - feeder.started_at()))
            progress(f"esl greenswitch {i + 1}/{repeats}: {rates['greenswitch'][-1]:,.0f} events/s")

    with FeederProcess("esl", {"data": stream.data}) as feeder:
        asyncio.run(run(feeder))
    return rates


if __name__ == "__main__":
    if sys.argv[1:2] == ["greenswitch"]:
        _greenswitch_child(int(sys.argv[2]), int(sys.argv[3]))
