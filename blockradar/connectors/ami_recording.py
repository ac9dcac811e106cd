"""Reading a recorded AMI stream (raw bytes as a client received them) into call outcomes.

A recording is what ``asterisk.record_ami`` writes and what shared/fixtures/asterisk/*.ami hold:
the banner line, then every frame byte-exact with CRLF. ``read_ami_recording`` runs it through
exactly the live path (``ami_wire`` framing and peek, ``ami_calls`` normalizer); only the event
time differs: a recording has no receive times, so the time is the latest PBX time the stream
shows (``ami_calls.RecordingEventTime``: ``Timestamp:`` if recorded with timestampevents, else
Uniqueid epochs and CEL/Cdr wall times read as UTC).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from blockradar.connectors.ami_calls import AmiCallTracker, AmiEventPipeline, RecordingEventTime
from blockradar.connectors.ami_wire import BANNER_PREFIX
from blockradar.numbers import NumberPlan
from blockradar.outcome import CallOutcome
from blockradar.recordings import ReadSettings

_AMI_HEADS = (BANNER_PREFIX, b"Event: ", b"Response: ")


@dataclass(slots=True)
class AmiReplay:
    """The outcomes of one recording, in stream order, and what the reader counted on the way."""

    outcomes: list[CallOutcome] = field(default_factory=list)
    banner: str | None = None
    frames: int = 0
    parsed: int = 0
    skipped: int = 0  # frames the peek did not need to parse
    parse_errors: int = 0
    oversized: int = 0  # unterminated frames dropped at the size bound
    trailing_bytes: int = 0  # an unterminated frame left at the end of the recording
    open_legs: int = 0  # trunk legs that had not hung up when the recording ended
    duplicates: int = 0


def looks_like_ami(head: bytes) -> bool:
    """True when the first bytes of a file are an AMI stream (banner or an AMI frame)."""
    head = head.lstrip(b"\r\n")
    return head.startswith(_AMI_HEADS)


def read_ami_recording(data: bytes, *, connector: str = "replay", chunk_size: int = 0,
                       settings: ReadSettings | None = None) -> AmiReplay:
    """All outcomes of a recorded AMI stream. ``chunk_size`` > 0 feeds it in pieces (for tests)."""
    if chunk_size > 0:
        return read_ami_stream((data[i : i + chunk_size] for i in range(0, len(data), chunk_size)), connector=connector,
                               settings=settings)
    return read_ami_stream((data,), connector=connector, settings=settings)


def read_ami_stream(chunks: Iterable[bytes], *, connector: str = "replay",
                    settings: ReadSettings | None = None) -> AmiReplay:
    """Like ``read_ami_recording`` for a recording read piece by piece (a large file, stdin)."""
    settings = settings or ReadSettings()
    tracker = AmiCallTracker(connector=connector, numbers=settings.numbers or NumberPlan(),
                             trunks=tuple(settings.trunks) if settings.trunks else None, on_leg=settings.on_leg)
    pipeline = AmiEventPipeline(tracker, RecordingEventTime())
    outcomes: list[CallOutcome] = []
    for chunk in chunks:
        outcomes.extend(pipeline.feed(chunk))
    framer = pipeline.framer
    return AmiReplay(
        outcomes=outcomes,
        banner=framer.banner,
        frames=pipeline.stats.frames,
        parsed=pipeline.stats.parsed,
        skipped=pipeline.stats.skipped,
        parse_errors=pipeline.stats.parse_errors,
        oversized=framer.stats.oversized,
        trailing_bytes=framer.pending_bytes,
        open_legs=tracker.open_legs,
        duplicates=tracker.stats.duplicates,
    )
