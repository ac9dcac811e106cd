"""ami_wire: framing, UTF-8 across reads, the size bound, the peek and the lean parse."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from blockradar.connectors.ami_calls import AmiCallTracker, AmiEventPipeline, RecordingEventTime
from blockradar.connectors.ami_wire import AmiFramer, header_value, parse_frame, peek_event

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"
HANGUP = (
    b"Event: Hangup\r\nPrivilege: call,all\r\nChannel: PJSIP/carrier-00000000\r\n"
    b"ConnectedLineName: J\xc3\xb6rg M\xc3\xbcller\r\nUniqueid: 1795458835.2\r\nCause: 127\r\n"
    b"Cause-txt: Interworking, unspecified\r\nTechCause: 608\r\n\r\n"
)


def test_banner_then_frames() -> None:
    framer = AmiFramer()
    frames = framer.feed(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\n\r\n")
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert frames == [b"Response: Success\r\nActionID: 1"]


def test_banner_alone_and_split() -> None:
    framer = AmiFramer()
    assert framer.feed(b"Asterisk Call") == []
    assert framer.feed(b" Manager/11.0.0\r") == []
    assert framer.banner is None
    assert framer.feed(b"\n") == []
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert framer.feed(HANGUP) == [HANGUP[:-4]]


def test_every_cut_of_a_frame_gives_the_same_frame() -> None:
    stream = HANGUP + HANGUP.replace(b"608", b"603")
    for cut in range(1, len(stream)):
        framer = AmiFramer()
        frames = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert frames == [HANGUP[:-4], HANGUP.replace(b"608", b"603")[:-4]], cut
        assert framer.pending_bytes == 0


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=400))
@settings(max_examples=200, deadline=None)
def test_any_read_sizes_give_the_same_frames(sizes: list[int]) -> None:
    """Frames, the banner and the pending count are the same whatever the stream's read sizes."""
    stream = b"Asterisk Call Manager/11.0.0\r\n" + HANGUP + b"Response: Success\r\nPing: Pong\r\n\r\n" + HANGUP
    framer, frames, pos = AmiFramer(), [], 0
    for size in sizes * (len(stream) // sum(sizes) + 1):
        if pos >= len(stream):
            break
        frames += framer.feed(stream[pos : pos + size])
        pos += size
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert frames == [HANGUP[:-4], b"Response: Success\r\nPing: Pong", HANGUP[:-4]]
    assert framer.pending_bytes == 0


def test_a_large_frame_fed_a_byte_at_a_time_is_framed_in_linear_time() -> None:
    """The audit: the framer re-joined its buffer on every read; 250 KB a byte at a time cost 17 s of CPU.
    Now the held chunks are joined once, when the terminator comes (this ran in about 0.1 s)."""
    frame = b"Event: UserEvent\r\nUserEvent: Big\r\nData: " + b"x" * 250_000 + b"\r\n\r\n"
    framer = AmiFramer(max_frame_bytes=512 * 1024)
    frames = []
    for i in range(len(frame)):
        frames += framer.feed(frame[i : i + 1])
        if i == len(frame) // 2:
            assert framer.pending_bytes == i + 1  # what is held is counted, not joined
    assert frames == [frame[:-4]] and framer.pending_bytes == 0
    bounded = AmiFramer(max_frame_bytes=1000)
    for _ in range(5000):  # an endless frame a byte at a time: bounded and counted once
        assert bounded.feed(b"y") == []
        assert bounded.pending_bytes <= 1001
    assert bounded.stats.oversized == 1


def test_utf8_split_across_reads_survives() -> None:
    """panoramisk P-6: 'Jörg' became 'Jrg' when the two bytes of ö came in two reads."""
    split_at = HANGUP.index(b"\xc3\xb6") + 1
    framer = AmiFramer()
    frames = framer.feed(HANGUP[:split_at]) + framer.feed(HANGUP[split_at:])
    event = parse_frame(frames[0])
    assert event is not None and event["ConnectedLineName"] == "Jörg Müller"


def test_invalid_utf8_is_replaced_not_dropped() -> None:
    event = parse_frame(b"Event: Hangup\r\nCallerIDName: A\xff\xfeB\r\nCause: 16")
    assert event is not None
    assert event["CallerIDName"] == "A\ufffd\ufffdB"
    assert event["Cause"] == "16"


def test_an_unterminated_frame_is_bounded_and_the_stream_recovers() -> None:
    framer = AmiFramer(max_frame_bytes=200)
    garbage = b"Event: Junk\r\n" + b"X: " + b"y" * 1000
    for i in range(0, len(garbage), 50):
        assert framer.feed(garbage[i : i + 50]) == []
        assert framer.pending_bytes <= 250  # never more than the bound (+ one read)
    assert framer.stats.oversized == 1
    # the tail of the junk frame ends, with the terminator split across reads; the next frame is intact
    assert framer.feed(b"yyy\r\n\r") == []
    assert framer.feed(b"\n" + HANGUP) == [HANGUP[:-4]]
    assert framer.stats.oversized == 1


def test_peek_and_header_value() -> None:
    frame = HANGUP[:-4]
    assert peek_event(frame) == b"Hangup"
    assert peek_event(b"Response: Success\r\nActionID: 1") is None
    assert peek_event(b"Privilege: call,all\r\nEvent: DialEnd\r\nDialStatus: ANSWER") == b"DialEnd"
    assert peek_event(b"garbage") is None
    assert header_value(frame, b"Channel") == b"PJSIP/carrier-00000000"
    assert header_value(frame, b"Event") == b"Hangup"
    assert header_value(frame, b"TechCause") == b"608"
    assert header_value(frame, b"Missing") is None


def test_parse_frame_chanvariables_and_odd_lines() -> None:
    event = parse_frame(
        b"Event: Hangup\r\nChanVariable: SIP_TECHCAUSE=SIP 603 Network Blocked\r\n"
        b"ChanVariable: SIP_CODE=603\r\nDestChanVariable: X=a=b\r\nNoSpace:value\r\nnot a header\r\nEmpty: "
    )
    assert event == {
        "Event": "Hangup",
        "ChanVariable(SIP_TECHCAUSE)": "SIP 603 Network Blocked",
        "ChanVariable(SIP_CODE)": "603",
        "DestChanVariable(X)": "a=b",
        "NoSpace": "value",
        "Empty": "",
    }
    assert parse_frame(b"no headers at all") is None


def test_malformed_frames_are_counted_not_fatal() -> None:
    pipeline = AmiEventPipeline(AmiCallTracker(), RecordingEventTime())
    data = (FIXTURES / "01-608-rejected.ami").read_bytes()
    noisy = data.replace(b"Event: NewCallerid", b"\x00\xffgarbage\r\n\r\nEvent: NewCallerid", 1)
    outcomes = pipeline.feed(noisy)
    assert len(outcomes) == 1 and outcomes[0].sip_code == 608
    assert pipeline.stats.parse_errors == 1
    assert pipeline.framer.stats.malformed == 1


def test_bad_values_in_wanted_events_degrade_to_none() -> None:
    tracker = AmiCallTracker()
    pipeline = AmiEventPipeline(tracker, RecordingEventTime())
    data = (FIXTURES / "01-608-rejected.ami").read_bytes()
    broken = data.replace(b"TechCause: 608", b"TechCause: six-oh-eight")
    (outcome,) = pipeline.feed(broken)
    assert outcome.sip_code is None and outcome.q850_cause == 127  # kept what could be read
