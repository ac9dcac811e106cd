"""The byte streams the benchmarks replay: realistic AMI and ESL traffic built from the recordings.

``TrafficBuilder`` (blockradar.demo.traffic) turns the real Asterisk 22 / FreeSWITCH 1.11 recordings
into fresh calls (new unique ids, numbers, trunks, times). This module owns the *mix*:

* which scenarios and how often (``SCENARIO_WEIGHTS``: an outbound dialler's day, mostly answered,
  unanswered and busy calls, a few percent blocked);
* what the PBX would send to blockradar's subscription: AMI events of the classes in the
  connector's default ``Events:`` mask (``system,call,dialplan,user``; the recordings were made
  with ``Events: on``, so ``CEL`` and ``Cdr`` frames are removed); for ESL the events in
  ``FreeswitchConfig``'s default subscription (CHANNEL_HANGUP_COMPLETE, plus a HEARTBEAT every
  20 s of PBX time);
* the expected counts (events, outcomes) a client must see to have read the whole stream.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from blockradar.connectors.esl_calls import HEARTBEAT_EVENT
from blockradar.connectors.freeswitch import FreeswitchConfig
from blockradar.demo.traffic import RECORDINGS, CallSpec, TrafficBuilder
from blockradar.secret import Secret

# scenario -> weight (per 200 calls): 38 % answered, 28 % unanswered, 12 % busy, 12 % temporarily
# unavailable, 4 % plain 603, 3 % 607, 1.5 % 603+ and 1.5 % 608 (a dialler with a reputation problem)
SCENARIO_WEIGHTS: dict[str, int] = {
    "200": 76,
    "noanswer": 56,
    "486": 24,
    "480": 24,
    "603": 8,
    "607": 6,
    "603plus": 3,
    "608": 3,
}
BLOCKING_SCENARIOS = ("608", "603plus")  # classified analytics_block with high confidence
TRUNKS = ("carrier1", "carrier2", "carrier3", "carrier4")
CALLS_PER_SECOND = 200.0
AMI_CLASSES_NOT_SUBSCRIBED = (b"Event: CEL\r\n", b"Event: Cdr\r\n")
HEARTBEAT_EVERY_S = 20.0
_HEARTBEAT_BODY_RE = re.compile(rb"Content-Length: (\d+)\nContent-Type: text/event-plain\n\n")


@dataclass(frozen=True, slots=True)
class Stream:
    """A prebuilt stream: the bytes to write after login and what a client must see of it."""

    data: bytes
    calls: int
    events: int  # event frames in ``data``
    outcomes: int  # outcomes blockradar must produce from it


def scenario_sequence(n: int, seed: int = 7) -> list[str]:
    """``n`` scenarios drawn with ``SCENARIO_WEIGHTS`` (deterministic)."""
    rng = random.Random(seed)
    names = list(SCENARIO_WEIGHTS)
    return rng.choices(names, weights=[SCENARIO_WEIGHTS[s] for s in names], k=n)


def caller_number(i: int) -> str:
    return f"+1555{i:07d}"


def call_specs(n: int, *, callers: int = 1000, seed: int = 7, start: float | None = None) -> Iterator[CallSpec]:
    """``n`` calls at ``CALLS_PER_SECOND`` from ``callers`` calling numbers over ``TRUNKS``, starting
    at ``start`` (default: now, so a live connector's clock guard trusts the PBX times)."""
    start = time.time() if start is None else start
    for i, scenario in enumerate(scenario_sequence(n, seed)):
        yield CallSpec(
            scenario=scenario,
            caller=caller_number(i % callers),
            callee=f"+1202{(i * 7919) % 10_000_000:07d}",
            trunk=TRUNKS[i % len(TRUNKS)],
            at=start + i / CALLS_PER_SECOND,
        )


def subscribed_ami_frames(builder: TrafficBuilder, spec: CallSpec) -> list[bytes]:
    """The call's AMI frames the default ``Events:`` mask would receive (CRLFCRLF-terminated)."""
    return [f for f in builder.ami_frames(spec) if not f.startswith(AMI_CLASSES_NOT_SUBSCRIBED)]


def ami_stream(n_calls: int, *, seed: int = 7, builder: TrafficBuilder | None = None) -> Stream:
    builder = builder or TrafficBuilder()
    parts: list[bytes] = []
    events = 0
    for spec in call_specs(n_calls, seed=seed):
        frames = subscribed_ami_frames(builder, spec)
        events += len(frames)
        parts.extend(frames)
    return Stream(b"".join(parts), n_calls, events, n_calls)


def heartbeat_body() -> bytes:
    """A real HEARTBEAT body (from the 603+ recording)."""
    data = (RECORDINGS / "freeswitch" / "15-603plus-atis-analytics1.esl").read_bytes()
    for match in _HEARTBEAT_BODY_RE.finditer(data):
        body = data[match.end() : match.end() + int(match.group(1))]
        if TrafficBuilder.esl_event_name(body) == HEARTBEAT_EVENT:
            return body
    raise LookupError("no HEARTBEAT in the recording")


def esl_subscribed_events() -> frozenset[str]:
    """What ``FreeswitchConnector`` subscribes to with its default config."""
    config = FreeswitchConfig(name="bench", host="127.0.0.1", password=Secret("x"))
    return frozenset(config.subscription().split()[2:])


def esl_stream(n_calls: int, *, seed: int = 7, builder: TrafficBuilder | None = None) -> Stream:
    builder = builder or TrafficBuilder()
    wanted = esl_subscribed_events()
    heartbeat = TrafficBuilder.esl_frame(heartbeat_body()) if HEARTBEAT_EVENT in wanted else b""
    every = max(1, int(HEARTBEAT_EVERY_S * CALLS_PER_SECOND))
    parts: list[bytes] = []
    events = 0
    for i, spec in enumerate(call_specs(n_calls, seed=seed)):
        if heartbeat and i % every == 0:
            parts.append(heartbeat)
            events += 1
        for body in builder.esl_bodies(spec):
            if TrafficBuilder.esl_event_name(body) in wanted:
                parts.append(TrafficBuilder.esl_frame(body))
                events += 1
    return Stream(b"".join(parts), n_calls, events, n_calls)
