"""Fuzz of the AMI wire layer (blockradar.connectors.ami_wire): the framer on arbitrary bytes in arbitrary reads
(never raises, holds at most ``max_frame_bytes``, frames the same whatever the read sizes, recovers after an
oversized frame) and the peek / header / parse helpers on arbitrary frames (never raise, bounded values).
tests/test_ami_wire.py already checks read sizes over one fixed stream; these go over generated ones."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockradar.connectors.ami_wire import (
    MAX_KEY,
    MAX_VALUE,
    TERMINATOR,
    AmiFramer,
    header_value,
    is_response,
    parse_frame,
    peek_event,
)
from tests.fuzz.support import WIRE_TOKENS, ami_recordings, chunked, fuzz, mutated

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
AMI_TOKENS = (*WIRE_TOKENS, b"Event: Hangup", b"ChanVariable: ", b"DestChanVariable: SIP_CALLID=", b"Channel: ",
              b"Uniqueid: ", b"=")

# a stream of pieces that mean something to the framer, and arbitrary bytes between them
pieces = st.lists(st.one_of(st.sampled_from(AMI_TOKENS), st.binary(max_size=24)), max_size=60).map(b"".join)
# a frame short enough for every bound below: anything but the terminator
short_frame = st.lists(st.one_of(st.sampled_from(AMI_TOKENS[:20]), st.binary(max_size=12)), max_size=6).map(
    lambda parts: b"".join(parts)[:60].replace(TERMINATOR, b"\r\n."))


def feed_all(framer: AmiFramer, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
        assert framer.pending_bytes <= framer.max_frame_bytes  # memory is bounded after every read
    return frames


@pytest.mark.timeout(60)
@fuzz(300)
@given(data=st.data(), stream=pieces, banner=st.booleans(), max_frame=st.sampled_from([64, 4096]))
def test_any_bytes_in_any_reads_never_raise_and_stay_bounded(data, stream: bytes, banner: bool, max_frame: int):
    """Arbitrary bytes, cut anyhow: no exception, at most ``max_frame_bytes`` held between reads, no frame holds
    a terminator, and the counters add up."""
    stream = (BANNER if banner else b"") + stream
    chunks = data.draw(chunked(stream, max_size=32))
    framer = AmiFramer(max_frame_bytes=max_frame)
    started = time.monotonic()
    frames = feed_all(framer, chunks)
    assert time.monotonic() - started < 5
    assert all(isinstance(f, bytes) and TERMINATOR not in f for f in frames)
    assert framer.stats.frames == len(frames) and framer.stats.bytes == len(stream)


@pytest.mark.timeout(60)
@fuzz(300)
@given(data=st.data(), frames=st.lists(short_frame, max_size=12), tail=short_frame, banner=st.booleans())
def test_framing_does_not_depend_on_the_read_sizes(data, frames: list[bytes], tail: bytes, banner: bool):
    """Frames below the bound, joined by terminators (and an unterminated tail): any cut into reads gives the
    frames, the banner and the pending bytes that one read of the whole stream gives, under any bound they fit."""
    stream = (BANNER if banner else b"") + b"".join(f + TERMINATOR for f in frames) + tail
    whole = AmiFramer()
    expected = whole.feed(stream)
    for max_frame in (64, 256 * 1024):
        framer = AmiFramer(max_frame_bytes=max_frame)
        got = feed_all(framer, data.draw(chunked(stream, max_size=48)))
        assert got == expected
        assert framer.banner == whole.banner
        assert framer.pending_bytes == whole.pending_bytes
        assert framer.stats.oversized == 0


@pytest.mark.timeout(60)
@fuzz(200)
@given(data=st.data(), junk=st.binary(min_size=65, max_size=300), frames=st.lists(short_frame.filter(bool),
                                                                                   min_size=1, max_size=5))
def test_an_oversized_frame_is_dropped_and_the_frames_after_it_survive(data, junk: bytes, frames: list[bytes]):
    """A frame past the bound, arriving in pieces or whole, costs at most itself: the frames after it are
    delivered, and nothing is left pending."""
    while TERMINATOR in junk:
        junk = junk.replace(TERMINATOR, b"\r\n")
    junk = b"X" + junk.lstrip(b"\r\n")  # a frame of its own, not the tail of the banner line
    frames = [f for f in (f.lstrip(b"\r\n") for f in frames) if f and not f.endswith((b"\r", b"\n"))]
    stream = BANNER + junk + TERMINATOR + b"".join(f + TERMINATOR for f in frames)
    framer = AmiFramer(max_frame_bytes=64)
    got = feed_all(framer, data.draw(chunked(stream, max_size=48)))
    assert got[len(got) - len(frames):] == frames
    assert len(got) == len(frames) + 1 - framer.stats.oversized
    assert framer.stats.oversized <= 1 and framer.pending_bytes == 0


@pytest.mark.timeout(60)
@fuzz(400)
@given(frame=st.one_of(pieces, st.binary(max_size=200)))
def test_peek_header_and_parse_never_raise_and_are_bounded(frame: bytes):
    """Whatever a frame holds (invalid UTF-8, NUL, CR without LF, huge lines): the helpers return values of
    their types, nothing longer than the bounds, and the peek never names an event the parse cannot see."""
    name = peek_event(frame)
    assert name is None or (isinstance(name, bytes) and b"\r\n" not in name)
    assert isinstance(is_response(frame), bool)
    for header in (b"Event", b"Channel", b"Uniqueid", b"Timestamp"):
        value = header_value(frame, header)
        assert value is None or (isinstance(value, bytes) and b"\r\n" not in value)
    event = parse_frame(frame)
    assert event is None or (isinstance(event, dict) and event)
    if name is not None:
        assert event is not None and "Event" in event
    for key, value in (event or {}).items():
        assert isinstance(key, str) and isinstance(value, str)
        assert len(value) <= MAX_VALUE and len(key) <= MAX_KEY + len("DestChanVariable()")


@pytest.mark.timeout(60)
@fuzz(150)
@given(data=st.data(), index=st.integers(0, 7))
def test_mutated_recordings_frame_without_error(data, index: int):
    """A recorded AMI stream after byte edits (flips, inserted tokens, cut or repeated spans) frames and parses
    without an exception, in bounded time and memory."""
    recording = ami_recordings()[index]
    stream = data.draw(mutated(recording, tokens=AMI_TOKENS, max_ops=12))
    framer = AmiFramer(max_frame_bytes=4096)
    started = time.monotonic()
    for frame in feed_all(framer, data.draw(chunked(stream))):
        peek_event(frame)
        parse_frame(frame)
    assert time.monotonic() - started < 5
