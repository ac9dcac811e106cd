"""Fuzz of the ESL wire layer (blockradar.connectors.esl_wire): the framer on arbitrary and mutated recorded
bytes in arbitrary reads (only ``EslProtocolError``, bounded memory, the same frames whatever the read sizes,
Content-Length read as ASCII digits only) and the body readers on arbitrary bodies (never raise; the lazy plain
reader agrees with the full parse; JSON bodies of any shape or depth)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from blockradar.connectors.esl_wire import (
    EVENT_JSON,
    EVENT_PLAIN,
    EslFrame,
    EslFramer,
    EslProtocolError,
    KeySelection,
    PlainEvent,
    event_name,
    event_view,
    parse_json_event,
    parse_plain_full,
)
from tests.fuzz.support import WIRE_TOKENS, chunked, esl_recordings, fuzz, mutated

ESL_TOKENS = (*WIRE_TOKENS, b"Content-Length: 0\n", b"Content-Length: 5\n\n", b"Content-Type: text/event-plain\n",
              b"Content-Type: text/event-json\n", b"Content-Type: command/reply\nReply-Text: +OK\n\n",
              b"Event-Name: CHANNEL_HANGUP_COMPLETE\n", b'{"Event-Name": "CHANNEL_HANGUP_COMPLETE"}', b"\n\n\n")

pieces = st.lists(st.one_of(st.sampled_from(ESL_TOKENS), st.binary(max_size=24)), max_size=60).map(b"".join)


class Fed:
    """What feeding a framer gave: the frames, and the protocol error that ended it (if one did)."""

    def __init__(self, framer: EslFramer, chunks: list[bytes]) -> None:
        self.frames: list[EslFrame] = []
        self.error: str | None = None
        bound = framer.max_header_bytes + 2 + framer.max_body_bytes
        for chunk in chunks:
            try:
                self.frames += framer.feed(chunk)
            except EslProtocolError as exc:  # the documented error; anything else fails the test
                self.frames += exc.frames
                self.error = str(exc)
                return
            assert framer.pending_bytes <= bound  # memory is bounded after every read


def check_frame(frame: EslFrame, framer: EslFramer) -> None:
    assert isinstance(frame.body, bytes)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in frame.headers.items())
    length = frame.headers.get("Content-Length")
    if length is None:
        assert frame.body == b""
    else:
        assert length.isascii() and length.isdigit()
        assert len(frame.body) == int(length) <= framer.max_body_bytes


@pytest.mark.timeout(60)
@fuzz(300)
@given(data=st.data(), stream=pieces, limits=st.sampled_from([(16, 8), (64, 64), (64 * 1024, 16 * 1024 * 1024)]))
def test_any_bytes_in_any_reads_frame_or_fail_with_the_protocol_error(data, stream: bytes, limits: tuple[int, int]):
    """Arbitrary bytes, cut anyhow: frames whose body is exactly their Content-Length (ASCII digits), or
    ``EslProtocolError``; never another exception; at most the bounds held between reads."""
    framer = EslFramer(max_header_bytes=limits[0], max_body_bytes=limits[1])
    started = time.monotonic()
    fed = Fed(framer, data.draw(chunked(stream, max_size=32)))
    assert time.monotonic() - started < 5
    for frame in fed.frames:
        check_frame(frame, framer)
    framer.eof()
    assert framer.pending_bytes == 0


@pytest.mark.timeout(60)
@fuzz(300)
@given(data=st.data(), stream=pieces, max_body=st.sampled_from([4, 64, 16 * 1024 * 1024]))
def test_framing_does_not_depend_on_the_read_sizes(data, stream: bytes, max_body: int):
    """Any cut of a stream into reads gives the frames (and the protocol error, if any) of one read of it."""
    whole = Fed(EslFramer(max_body_bytes=max_body), [stream])
    framer = EslFramer(max_body_bytes=max_body)
    cut = Fed(framer, data.draw(chunked(stream, max_size=24)))
    assert cut.frames == whole.frames
    assert cut.error == whole.error
    if whole.error is None:
        assert framer.stats.frames == len(whole.frames)


header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp", "Zs")), min_size=1,
                      max_size=10)
envelope = st.dictionaries(st.sampled_from(["Reply-Text", "Event-Name", "Job-UUID", "X-A", "Content-Disposition"]),
                           header_text, max_size=3)


@pytest.mark.timeout(60)
@fuzz(200)
@given(data=st.data(), frames=st.lists(st.tuples(st.sampled_from([EVENT_PLAIN, EVENT_JSON, "command/reply"]), envelope,
                                                 st.binary(max_size=40), st.booleans()), max_size=8),
       max_body=st.sampled_from([8, 64]))
def test_a_well_formed_stream_gives_back_its_frames_in_any_reads(data, frames, max_body: int):
    """Frames written as FreeSWITCH writes them (envelope, ``Content-Length`` when there is a body), cut anyhow:
    exactly those frames come back, in order, but for the bodies past the bound, which are skipped and counted."""
    stream, expected = b"", []
    for ctype, headers, body, stray in frames:
        headers = {"Content-Type": ctype, **headers}
        if body:
            headers["Content-Length"] = str(len(body))
        stream += b"\n" * stray + "".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n" + body
        if len(body) <= max_body:
            expected.append(EslFrame(headers, body))
    framer = EslFramer(max_body_bytes=max_body)
    fed = Fed(framer, data.draw(chunked(stream, max_size=24)))
    assert fed.error is None and fed.frames == expected
    assert framer.stats.oversized == len(frames) - len(expected) and framer.pending_bytes == 0


@pytest.mark.timeout(60)
@fuzz(100)
@given(data=st.data(), index=st.integers(0, 15))
def test_mutated_recordings_frame_the_same_in_any_reads(data, index: int):
    """A recorded ESL stream after byte edits (a Content-Length changed or cut, a body flipped, spans repeated)
    frames, or stops at ``EslProtocolError``, the same whether it comes in one read or in many."""
    recording = esl_recordings()[index]
    anchors = [i for i in range(len(recording)) if recording.startswith(b"Content-Length: ", i)]
    stream = data.draw(mutated(recording, tokens=ESL_TOKENS, max_ops=10, anchors=anchors))
    started = time.monotonic()
    whole = Fed(EslFramer(), [stream])
    cut = Fed(EslFramer(), data.draw(chunked(stream)))
    assert time.monotonic() - started < 5
    assert cut.frames == whole.frames and cut.error == whole.error


digits = st.integers(0, 12_000).map(lambda n: "1" * n)
content_lengths = st.one_of(
    st.text(max_size=12), st.integers(0, 50).map(str), digits, st.sampled_from(
        ["\u00b2", "\u0663", "\uff15", "+5", "-5", "5 ", " 5", "0x5", "5.0", "1_0", "", "\t7\t", "05", "4294967296"]))


@pytest.mark.timeout(60)
@fuzz(300)
@given(length=content_lengths, body=st.binary(max_size=64))
@example(length="1" * 5000, body=b"")  # the regression below, as a seed
def test_a_content_length_is_ascii_digits_or_a_protocol_error(length: str, body: bytes):
    """``Content-Length: <anything>``: a frame with that many body bytes when it is ASCII digits, else
    ``EslProtocolError``; never ValueError (``int("\u00b2")``) or another exception."""
    envelope = b"Content-Type: text/event-plain\nContent-Length: " + length.encode("utf-8", "replace") + b"\n\n"
    framer = EslFramer(max_body_bytes=64)
    try:
        frames = framer.feed(envelope + body + b"Content-Type: command/reply\n\n")
    except EslProtocolError:
        return
    value = length.encode("utf-8", "replace").decode().strip()
    assert value.isascii() and value.isdigit()
    if int(value) <= len(body) and int(value) <= 64:
        assert len(frames[0].body) == int(value)


def test_a_content_length_of_thousands_of_digits_is_a_protocol_error() -> None:
    """Found by the fuzz suite: 5,000 ASCII digits passed the digit check and ``int()`` raised ValueError (Python
    refuses to convert more than 4,300 digits), which is not the framer's documented error."""
    framer = EslFramer()
    frames = framer.feed(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
    with pytest.raises(EslProtocolError) as raised:
        framer.feed(b"Content-Type: text/event-plain\nContent-Length: " + b"1" * 5000 + b"\n\n")
    assert len(frames) == 1 and raised.value.frames == []


KEYS = ["Event-Name", "Unique-ID", "variable_sip_term_status", "variable_sip_rh_X-Reason", "Caller-Caller-ID-Number",
        "", "a:b", "variable_sip_rh_", "variable_sip_rh_X:Y"]
plain_body = st.lists(st.one_of(
    st.tuples(st.sampled_from(KEYS), st.sampled_from([": ", ":", "::", ": : "]),
              st.text(max_size=20)).map("".join),
    st.text(max_size=30)), max_size=12).map("\n".join)
SELECTION = KeySelection(names=("Event-Name", "Unique-ID", "variable_sip_term_status"), prefixes=("variable_sip_rh_",))


@pytest.mark.timeout(60)
@fuzz(300)
@given(body=st.one_of(plain_body.map(lambda t: t.encode("utf-8", "surrogatepass")), pieces, st.binary(max_size=200)))
def test_plain_bodies_read_lazily_as_the_full_parse_reads_them(body: bytes):
    """Any body: the lazy reader never raises and gives, key by key, the value the full (reference) parse gives;
    the event-name peek agrees with both."""
    full = parse_plain_full(body)
    lazy = PlainEvent(body)
    for key, value in full.items():
        assert lazy.get(key) == value, key
    for key in KEYS:
        assert lazy.get(key) == full.get(key)
        if key:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in lazy.prefixed(key))
    # (a header name with a colon is picked by the full parse only: SIP header names have none)
    assert {k: lazy.decode(v) for k, v in lazy.select(SELECTION).items() if ":" not in k} == {
        k: v for k, v in full.items() if ":" not in k and (k in SELECTION.names or k.startswith(SELECTION.prefixes))}
    name = event_name(EslFrame({"Content-Type": EVENT_PLAIN}, body))
    assert (name is None) == ("Event-Name" not in full)
    raw = lazy.raw("Event-Name")
    if raw is not None and raw.isascii():
        assert name == raw


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@pytest.mark.timeout(60)
@fuzz(200)
@given(value=st.one_of(json_values, st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)),
       depth=st.sampled_from([0, 0, 0, 10, 5000, 200_000]), data=st.data())
def test_json_bodies_of_any_shape_or_depth_read_or_are_refused(value, depth: int, data):
    """``text/event-json`` bodies, valid or damaged, of any shape and nesting depth: a dict of strings or None,
    never an exception (the JSON parser's RecursionError included)."""
    text = json.dumps(value)
    if depth:
        text = '{"Event-Name": "CHANNEL_HANGUP_COMPLETE", "x": ' + "[" * depth + text + "]" * depth + "}"
    body = data.draw(mutated(text.encode(), tokens=ESL_TOKENS, max_ops=3))
    parsed = parse_json_event(body)
    assert parsed is None or all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())
    frame = EslFrame({"Content-Type": EVENT_JSON}, body)
    name = event_name(frame)
    assert name is None or isinstance(name, str)
    view = event_view(frame)
    assert (view is None) == (parsed is None)


def test_a_deeply_nested_json_body_is_unreadable_not_a_crash() -> None:
    """Found by the fuzz suite: ``[`` nested 100,000 deep in an event-json body made ``json.loads`` raise
    RecursionError, which ``parse_json_event`` (and the normalizer and the recording reader above it) let out."""
    body = b'{"Event-Name": "CHANNEL_HANGUP_COMPLETE", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert parse_json_event(body) is None
    assert event_view(EslFrame({"Content-Type": EVENT_JSON}, body)) is None
