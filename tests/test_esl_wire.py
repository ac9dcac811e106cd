"""ESL framing and event-body reading (blockradar.connectors.esl_wire) on the recorded bytes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockradar.connectors.esl_wire import (
    EVENT_JSON,
    EVENT_PLAIN,
    DictEvent,
    EslFrame,
    EslFramer,
    EslProtocolError,
    KeySelection,
    PlainEvent,
    decode_value,
    event_name,
    event_view,
    iter_frames,
    parse_json_event,
    parse_plain_full,
)

FIXTURES = Path(__file__).parent / "fixtures" / "freeswitch"
LIFECYCLE = Path(__file__).parent / "fixtures" / "lifecycle" / "freeswitch"
PLAIN_608 = FIXTURES / "01-608-rejected-jwscard.esl"
JSON_608 = FIXTURES / "01-608-rejected-jwscard.json.esl"


def frames_of(path: Path) -> list[EslFrame]:
    framer = EslFramer()
    frames = framer.feed(path.read_bytes())
    assert framer.eof() == 0
    return frames


def test_recording_frames_start_with_the_handshake_and_end_clean() -> None:
    frames = frames_of(PLAIN_608)
    assert [f.content_type for f in frames[:3]] == ["auth/request", "command/reply", "command/reply"]
    assert frames[1].headers["Reply-Text"] == "+OK accepted"
    assert frames[2].headers["Reply-Text"] == "+OK event listener enabled plain"
    events = [f for f in frames if f.content_type == EVENT_PLAIN]
    assert len(events) == len(frames) - 3
    assert all(len(f.body) == int(f.headers["Content-Length"]) for f in events)
    names = [event_name(f) for f in events]
    assert names.count("CHANNEL_HANGUP_COMPLETE") == 1
    assert "BACKGROUND_JOB" in names


@pytest.mark.parametrize("chunk", [1, 7, 53, 1000, 4096])
def test_any_tcp_cut_gives_the_same_frames(chunk: int) -> None:
    data = PLAIN_608.read_bytes()
    whole = EslFramer().feed(data)
    framer = EslFramer()
    pieces: list[EslFrame] = []
    for start in range(0, len(data), chunk):
        pieces.extend(framer.feed(data[start : start + chunk]))
    assert pieces == whole
    assert framer.pending_bytes == 0
    assert framer.stats.bytes == len(data)


def test_eof_inside_a_body_is_a_truncated_frame_not_a_hang() -> None:
    data = PLAIN_608.read_bytes()
    cut = data.find(b"Content-Type: text/event-plain") + 200
    framer = EslFramer()
    frames = framer.feed(data[:cut])
    assert framer.pending_bytes > 0
    assert framer.eof() > 0
    assert framer.stats.truncated == 1
    assert all(f.content_type != EVENT_PLAIN for f in frames)


def test_disconnect_notice_body_is_read_by_length_and_frames_after_it_survive() -> None:
    """F3: stock greenswitch read the notice body as the next frame's headers and died."""
    frames = frames_of(LIFECYCLE / "F3-fsctl-shutdown.esl")
    types = [f.content_type for f in frames]
    notice = types.index("text/disconnect-notice")
    assert frames[notice].body == b"The system is being shut down.\n"
    after = [event_name(f) for f in frames[notice + 1 :]]
    assert after and set(after) == {"MODULE_UNLOAD"}


def test_rude_rejection_and_wrong_password_frames() -> None:
    rude = frames_of(LIFECYCLE / "F2-acl-rude-rejection.esl")
    assert [f.content_type for f in rude] == ["text/rude-rejection", "text/disconnect-notice"]
    assert rude[0].body == b"Access Denied, go away.\n"
    wrong = frames_of(LIFECYCLE / "F1-wrong-password.esl")
    assert wrong[1].headers["Reply-Text"] == "-ERR invalid"
    assert len(wrong[2].body) == 67


@pytest.mark.parametrize("length", ["12x", "\u00b2", "\u0661\u0662", "-1", ""])
def test_bad_content_length_is_a_protocol_error_keeping_earlier_frames(length: str) -> None:
    """The audit: ``Content-Length: \u00b2`` passed ``isdigit()``, then ``int()`` raised and killed the reader."""
    good = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    framer = EslFramer()
    with pytest.raises(EslProtocolError) as caught:
        framer.feed(good + f"Content-Length: {length}\nContent-Type: text/event-plain\n\nabc".encode())
    assert [f.headers["Reply-Text"] for f in caught.value.frames] == ["+OK accepted"]
    assert framer.stats.malformed == 1


def test_envelope_that_never_ends_is_bounded() -> None:
    framer = EslFramer(max_header_bytes=1024)
    framer.feed(b"Content-Type: x\n" * 10)
    with pytest.raises(EslProtocolError):
        framer.feed(b"X-Junk: y\n" * 200)


def test_oversized_body_is_skipped_and_counted() -> None:
    big = b"Content-Length: 5000\nContent-Type: text/event-plain\n\n" + b"x" * 5000
    after = b"Content-Type: command/reply\nReply-Text: +OK\n\n"
    framer = EslFramer(max_body_bytes=1000)
    frames = framer.feed(big[:3000]) + framer.feed(big[3000:] + after)
    assert [f.content_type for f in frames] == ["command/reply"]
    assert framer.stats.oversized == 1


def test_json_event_name_and_body() -> None:
    frames = [f for f in frames_of(JSON_608) if f.content_type == EVENT_JSON]
    names = [event_name(f) for f in frames]
    assert names == ["CHANNEL_ORIGINATE", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"]
    values = parse_json_event(frames[2].body)
    assert values is not None
    assert values["variable_sip_term_status"] == "608"
    assert values["Caller-Orig-Caller-ID-Name"] == "Acme Sales"
    assert parse_json_event(b"[1, 2]") is None
    assert parse_json_event(b"{not json") is None


def test_lazy_plain_event_reads_like_a_full_parse() -> None:
    hangup = next(f for f in frames_of(PLAIN_608) if event_name(f) == "CHANNEL_HANGUP_COMPLETE")
    lazy = PlainEvent(hangup.body)
    full = parse_plain_full(hangup.body)
    for key in full:
        assert lazy.get(key) == full[key], key
    assert lazy.raw("Caller-Orig-Caller-ID-Number") == "%2B15557654321"
    assert lazy.get("Caller-Orig-Caller-ID-Number") == "+15557654321"
    assert lazy.get("Event-Name") == "CHANNEL_HANGUP_COMPLETE"  # the first line has no "\n" before it
    assert lazy.get("No-Such-Header") is None
    picked = lazy.select(KeySelection(names=("variable_sip_term_status", "variable_sip_reason")))
    assert picked == {"variable_sip_term_status": "608"}


def test_values_are_decoded_after_the_lines_are_split_g9() -> None:
    """A value whose *decoded* form holds a newline and a header must not forge that header."""
    forged = quote("line1\nHangup-Cause: NORMAL_CLEARING", safe="")
    body = (f"Event-Name: CHANNEL_HANGUP_COMPLETE\nvariable_x: {forged}\nHangup-Cause: USER_BUSY\n\n").encode()
    lazy = PlainEvent(body)
    assert lazy.get("Hangup-Cause") == "USER_BUSY"
    assert lazy.get("variable_x") == "line1\nHangup-Cause: NORMAL_CLEARING"
    assert parse_plain_full(body)["Hangup-Cause"] == "USER_BUSY"


def test_prefixed_and_select_on_both_views() -> None:
    body = (
        b"Event-Name: CHANNEL_HANGUP_COMPLETE\nvariable_sip_rh_X-Block-Reason: analytics%3B%20score%3D97\n"
        b"variable_sip_rh_P-Redress-Info: https%3A//r.example\nvariable_sip_term_status: 608\n\n"
    )
    plain = PlainEvent(body)
    full = DictEvent(parse_plain_full(body))
    expected = [("X-Block-Reason", "analytics; score=97"), ("P-Redress-Info", "https://r.example")]
    assert plain.prefixed("variable_sip_rh_") == expected
    assert full.prefixed("variable_sip_rh_") == expected
    selection = KeySelection(names=("variable_sip_term_status",), prefixes=("variable_sip_rh_",))
    assert (
        set(plain.select(selection))
        == set(full.select(selection))
        == {
            "variable_sip_term_status",
            "variable_sip_rh_X-Block-Reason",
            "variable_sip_rh_P-Redress-Info",
        }
    )


def test_event_view_by_content_type() -> None:
    assert isinstance(event_view(EslFrame({"Content-Type": EVENT_PLAIN}, b"Event-Name: X\n\n")), PlainEvent)
    assert isinstance(event_view(EslFrame({"Content-Type": EVENT_JSON}, b'{"Event-Name": "X"}')), DictEvent)
    assert event_view(EslFrame({"Content-Type": EVENT_JSON}, b"nope")) is None
    assert event_view(EslFrame({"Content-Type": "log/data"}, b"x")) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_decode_value_agrees_with_urllib(text: str) -> None:
    from urllib.parse import unquote

    encoded = quote(text, safe="")
    assert decode_value(encoded) == text
    assert decode_value(text) == unquote(text)


def test_every_recording_frames_completely() -> None:
    for path in sorted(FIXTURES.rglob("*.esl")) + sorted(LIFECYCLE.glob("*.esl")):
        framer = EslFramer()
        frames = list(iter_frames(path.read_bytes(), framer))
        assert frames, path
        assert framer.stats.truncated == 0 and framer.stats.malformed == 0, path
