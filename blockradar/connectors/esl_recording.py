"""Reading recorded ESL streams (``.esl`` files: the bytes a client received, unchanged).

A recording is what ``blockradar record`` (``freeswitch.record_esl``) writes and what the
fixtures hold: the auth handshake, command replies, then event frames, ``event plain`` or
``event json``. It goes through exactly the framer and normalizer the live connector uses, and the
recorded event time is trusted (replay has no receive time to compare it with).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from blockradar.connectors.esl_calls import EslCallNormalizer, NormalizerStats
from blockradar.connectors.esl_wire import (
    DISCONNECT_NOTICE,
    EVENT_TYPES,
    LOG_DATA,
    RUDE_REJECTION,
    EslFramer,
    EslProtocolError,
    WireStats,
)
from blockradar.outcome import CallOutcome
from blockradar.recordings import ReadSettings

_ESL_START = re.compile(rb"\n*(?:Content-Type|Content-Length): [^\r\n]*\n")


@dataclass(slots=True)
class EslReplayStats:
    """What a recording held, besides its outcomes."""

    wire: WireStats = field(default_factory=WireStats)
    normalizer: NormalizerStats = field(default_factory=NormalizerStats)
    formats: list[str] = field(default_factory=list)  # event content types seen, in order of first use
    log_frames: int = 0
    other_frames: int = 0  # auth/request, command/reply, api/response
    disconnect_notices: int = 0
    rude_rejections: int = 0
    protocol_error: str | None = None  # framing gave up here (the rest of the file is unread)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class EslReplay:
    outcomes: list[CallOutcome]
    stats: EslReplayStats


def looks_like_esl(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) starts like an ESL stream."""
    return _ESL_START.match(head) is not None


def read_esl_recording(data: bytes, *, connector: str = "replay", settings: ReadSettings | None = None) -> EslReplay:
    """Every outcome of a recorded ESL stream, in stream order, with what else it held."""
    stats = EslReplayStats()
    framer = EslFramer()
    stats.wire = framer.stats
    settings = settings or ReadSettings()
    normalizer = EslCallNormalizer(connector, numbers=settings.numbers, gateways_only=settings.gateways_only,
                                   gateways=settings.gateways, gateway_names=settings.gateway_names,
                                   on_leg=settings.on_leg)
    stats.normalizer = normalizer.stats
    outcomes: list[CallOutcome] = []
    try:
        frames = framer.feed(data)
    except EslProtocolError as exc:
        frames = exc.frames
        stats.protocol_error = str(exc)
    framer.eof()
    for frame in frames:
        ctype = frame.content_type
        if ctype in EVENT_TYPES:
            if ctype not in stats.formats:
                stats.formats.append(ctype)
            outcome = normalizer.on_frame(frame)
            if outcome is not None:
                outcomes.append(outcome)
        elif ctype == LOG_DATA:
            stats.log_frames += 1
        elif ctype == DISCONNECT_NOTICE:
            stats.disconnect_notices += 1
        elif ctype == RUDE_REJECTION:
            stats.rude_rejections += 1
        else:
            stats.other_frames += 1
    return EslReplay(outcomes, stats)
