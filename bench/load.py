"""Loop lag under load (issue 12): what a burst and a flood do to the daemon's event loop.

The real ``blockradar.daemon.Daemon`` (store, windows, alerts, its ESL connector in its gevent thread)
against a feeder process playing FreeSWITCH, which writes its whole stream as fast as the socket takes
it right after the subscription. A ``LoopLagMonitor`` on the daemon's loop asks to wake every 5 ms and
records how late it woke, from the daemon's start until the last outcome has been processed.

* **burst** (``loop_lag_p99_ms``): 10,000 ``CHANNEL_HANGUP_COMPLETE`` events of the realistic mix
  (``streams.esl_stream``, ~7 KB each): the loop's p99 lag while they are processed. Target 10 ms.
* **flood** (``flood_dropped``, ``flood_loop_lag_p99_ms``): 200,000 calls, each from a calling number
  never seen before (spoofed caller IDs), one in ten a 608, 5,000 a second (the audit's flood was
  4,500 a second), in compact hangup events (the headers the normalizer reads, ~1.3 KB): outcomes lost
  anywhere between the socket and the pipeline (the hand-off's drops plus any outcome never delivered),
  target 0, and the loop's p99 lag, target 10 ms. A stream written as fast as the socket takes it (the
  burst) keeps the loop saturated by design (the reader is held back to the loop's pace, never dropped):
  there the lag is how long the slices are.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.feeder import ESL_PASSWORD, FeederProcess
from bench.streams import Stream, call_specs, esl_stream
from blockradar.config import load_config
from blockradar.daemon import Daemon
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.looplag import LoopLagMonitor

BURST_EVENTS = 10_000
FLOOD_NUMBERS = 200_000
TIMEOUT_S = 300.0

CONFIG = """\
connectors:
  - {{name: bench, type: freeswitch, host: 127.0.0.1, port: {port}, password: {password}, heartbeat_timeout: 600s}}
store: {store}
http: null
"""

# the headers a hangup needs to become an outcome (``esl_calls``, ``legs``): the rest of FreeSWITCH's ~160
# variables are left out of the flood's frames so that 200,000 calls fit in memory on both sides
_KEEP = re.compile(rb"^(Event-Name|Event-Date-Timestamp|Core-UUID|Unique-ID|Call-Direction|Channel-Name|"
                   rb"Hangup-Cause|Caller-(?:ANI|Caller-ID-Number|Caller-ID-Name|Destination-Number|"
                   rb"Orig-Caller-ID-Number|Orig-Caller-ID-Name|Channel-[A-Za-z-]+-Time|Direction|Unique-ID)|"
                   rb"variable_sip_(?:gateway_name|hangup_disposition|invite_failure_phrase|invite_failure_status|"
                   rb"reason|term_status|term_cause|from_user|call_id|rh_[A-Za-z0-9_-]+)|"
                   rb"variable_origination_caller_id_number|variable_direction|variable_call_uuid): ")


def compact(body: bytes) -> bytes:
    return b"\n".join(line for line in body.split(b"\n") if _KEEP.match(line)) + b"\n\n"


FLOOD_PER_S = 5_000.0  # new calling numbers a second: above the audit's 200,000 in 44 s (4,500/s)
FLOOD_CALLS_PER_WRITE = 25  # the feeder writes this many calls at a time, FLOOD_PER_S / 25 times a second


def flood_stream(numbers: int) -> Stream:
    """``numbers`` calls, each from its own calling number, in compact hangup frames: one compact body per
    scenario from the recordings, then per call its own Unique-ID and calling number put in."""
    builder = TrafficBuilder()
    templates: dict[str, tuple[bytes, bytes, bytes]] = {}
    parts: list[bytes] = []
    for i, spec in enumerate(call_specs(numbers)):
        scenario = "608" if i % 10 == 0 else spec.scenario
        if scenario not in templates:
            caller = "+15569999999"
            (body,) = [b for b in builder.esl_bodies(CallSpec(scenario, caller, spec.callee, spec.trunk, spec.at))
                       if TrafficBuilder.esl_event_name(b) == "CHANNEL_HANGUP_COMPLETE"]
            body = compact(body)
            uuid = re.search(rb"^Unique-ID: (\S+)$", body, re.M).group(1)  # type: ignore[union-attr]
            templates[scenario] = (body, uuid, b"15569999999")
        body, uuid, number = templates[scenario]
        fresh = b"%08x-0000-4000-8000-%012x" % (i, i)
        parts.append(TrafficBuilder.esl_frame(body.replace(uuid, fresh[:len(uuid)].ljust(len(uuid), b"0"))
                                              .replace(number, b"1557%07d" % i)))
    return Stream(b"".join(parts), numbers, len(parts), numbers)


async def _run(daemon: Daemon, expected: int, seen: list[int], lag: LoopLagMonitor) -> float:
    await daemon.start()
    lag.start()
    started = time.monotonic()
    try:
        deadline = started + TIMEOUT_S
        while seen[0] < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            connector = daemon.connectors[0]
            health = connector.health()
            if seen[0] + health.dropped >= expected and health.extra.get("pending", 0) == 0:
                break
        return time.monotonic() - started
    finally:
        await lag.stop()
        await daemon.stop(flush_s=2.0)


def measure_stream(stream: Stream, progress: Callable[[str], None], label: str,
                   per_s: float | None = None) -> dict[str, Any]:
    """The daemon on ``stream``: all at once, or ``per_s`` calls a second (in writes of
    ``FLOOD_CALLS_PER_WRITE`` calls)."""
    seen = [0]
    lag = LoopLagMonitor(interval_s=0.005, keep=1_000_000)
    spec: dict[str, Any] = {"data": stream.data}
    if per_s is not None:
        frames = stream.data.split(b"Content-Length: ")[1:]
        spec = {"calls": [(None, b"".join(b"Content-Length: " + f for f in frames[i:i + FLOOD_CALLS_PER_WRITE]))
                          for i in range(0, len(frames), FLOOD_CALLS_PER_WRITE)],
                "cps": per_s / FLOOD_CALLS_PER_WRITE}
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as tmp, \
            FeederProcess("esl", spec) as feeder:
        config = Path(tmp) / "blockradar.yaml"
        config.write_text(CONFIG.format(port=feeder.port, password=ESL_PASSWORD, store=Path(tmp) / "state.db"))
        daemon = Daemon(load_config(config), on_outcome=lambda outcome, cls: seen.__setitem__(0, seen[0] + 1))
        seconds = asyncio.run(_run(daemon, stream.outcomes, seen, lag))
        health = daemon.connectors[0].health()
    result = {
        "events": stream.events,
        "outcomes_expected": stream.outcomes,
        "outcomes_seen": seen[0],
        "dropped": health.dropped,
        "lost": stream.outcomes - seen[0],
        "held_back": health.extra.get("held_back", 0),
        "seconds": seconds,
        "lag_p50_ms": lag.percentile(0.50) * 1000.0,
        "lag_p99_ms": lag.percentile(0.99) * 1000.0,
        "lag_max_ms": lag.worst_s * 1000.0,
        "lag_samples": len(lag.samples),
    }
    progress(f"{label}: {seen[0]:,}/{stream.outcomes:,} outcomes in {seconds:.1f} s, loop lag p99 "
             f"{result['lag_p99_ms']:.1f} ms (max {result['lag_max_ms']:.1f} ms), dropped {health.dropped}")
    return result


def measure_burst(progress: Callable[[str], None] = lambda _: None, events: int = BURST_EVENTS) -> dict[str, Any]:
    progress(f"burst: building {events:,} ESL hangup events")
    return measure_stream(esl_stream(events), progress, "burst")


def measure_flood(progress: Callable[[str], None] = lambda _: None, numbers: int = FLOOD_NUMBERS) -> dict[str, Any]:
    progress(f"flood: {numbers:,} calls from as many calling numbers, {FLOOD_PER_S:,.0f} a second")
    return measure_stream(flood_stream(numbers), progress, "flood", FLOOD_PER_S)
