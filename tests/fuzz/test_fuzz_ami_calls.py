"""Fuzz of the AMI normalizer (blockradar.connectors.ami_calls): the recorded call events of tests/fixtures, mixed
from several recordings, dropped, repeated, reordered and edited (values replaced with hostile ones, lines added or
lost, bytes flipped), run through the whole ``AmiEventPipeline`` in any reads. Only well-formed CallOutcomes come
out, nothing raises, every table stays within its cap, and the result depends on neither the read sizes nor the
peek, and not on how often the stream is fed."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockradar.clock import EventTimeGuard
from blockradar.connectors.ami_calls import (
    CALL_EVENTS,
    CLOCK_EVENTS,
    CONTROL_EVENTS,
    AmiCallTracker,
    AmiEventPipeline,
    LiveEventTime,
    RecordingEventTime,
)
from blockradar.connectors.ami_wire import TERMINATOR, AmiFramer, peek_event
from blockradar.outcome import CallOutcome
from tests.fuzz.support import FIXTURES, ami_recordings, check_outcome, chunked, fuzz, mutated

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
KEPT = CALL_EVENTS | CONTROL_EVENTS | set(CLOCK_EVENTS)
# logins: none (a recording), one between the Uniqueid epochs of the recordings, one after them all (a restart):
# the legs born before it may hang up with no DialBegin seen, their glue may come first
SESSIONS = (None, 1_795_458_900.0, 1_796_000_000.0)
RECEIVED_AT = 1_796_000_005.0

# the headers the normalizer reads, and values that have broken (or could break) a reader of them, by kind
NUMBERS = (b"0", b"000", b"99", b"128", b"700", b"999", b"999999", b"1000000", b"-1", b" 608 ",
           "\uff16\uff10\uff18".encode(), b"", b"603")
TIMES = (b"nan", b"inf", b"-inf", b"1e308", b"1e999", b"-1e308", b"1795458835.123", b"99999999999.9", b"-5", b"0",
         b"2026-11-23 18:33:55", b"9999-12-31 23:59:59", b"0001-01-01 00:00:00", b"2026-13-45 99:99:99", b"1_0")
GLUE = (b"SIP 603 Network Blocked", b"SIP 999 Nine", b"SIP 100 Trying", b"SIP 000", b"SIP 6033", b"SIP 608",
        b"c" * 700, b"")
GLUE_VARS = (b"SIP_TECHCAUSE=SIP 608 Rejected", b"SIP_TECHCAUSE=SIP 999 x", b"SIP_TECHCAUSE=SIP 000",
             b"SIP_TECHCAUSE=", b"SIP_CALLID=abc@host", b"SIP_CALLID=" + b"c" * 700, b"SIP_CALLID=", b"=x", b"x")
CHANNELS = (b"PJSIP/", b"PJSIP/-", b"PJSIP/carrier-00000001", b"PJSIP/carrier-a-00000002", b"SIP/peer/5551230007",
            b"IAX2/x", b"Local/x@y;1", b"PJSIP/" + b"z" * 700, b" PJSIP/carrier-1", b"pjsip/carrier-1")
UIDS = (b"1795458835.2", b"9999999999.1", b"system-1795458835.2", b"1.1", b"", b"u" * 700, b"1795458899.1",
        b"1795458901.1", b"99999999999.99999999999")
TEXT = (b"<unknown>", b"x" * 600, b"y" * 5000, b"+15551230008@carrier", b"carrier/sip:+1555@host", b"sip:@",
        b"ANSWER", b"Up", b"SipCallOutcome", "J\u00f6rg \u202e".encode(), b"\xff\xfe\x00", b"a\rb", b"+15551230008",
        b"405")
VALUES = NUMBERS + TIMES + GLUE + GLUE_VARS + CHANNELS + UIDS + TEXT
KIND = {b"TechCause": NUMBERS + GLUE, b"Cause": NUMBERS, b"ChannelState": NUMBERS, b"Timestamp": TIMES,
        b"EventTime": TIMES, b"EndTime": TIMES, b"Channel": CHANNELS, b"DestChannel": CHANNELS,
        b"DialedChannel": CHANNELS, b"Uniqueid": UIDS, b"DestUniqueid": UIDS, b"Linkedid": UIDS,
        b"DestLinkedid": UIDS, b"ChanVariable": GLUE_VARS, b"DestChanVariable": GLUE_VARS, b"Value": GLUE,
        b"CallID": GLUE, b"Variable": (b"SIP_TECHCAUSE", b"SIP_CALLID", b"sip_techcause", b"")}
KEYS = (b"Event", b"Channel", b"Uniqueid", b"Linkedid", b"DestChannel", b"DestUniqueid", b"DestLinkedid",
        b"DialString", b"DestCallerIDNum", b"DestConnectedLineNum", b"DestConnectedLineName", b"CallerIDNum",
        b"CallerIDName", b"ConnectedLineNum", b"ConnectedLineName", b"DialStatus", b"ChannelStateDesc",
        b"ChannelState", b"Variable", b"Value", b"UserEvent", b"DialedChannel", b"TechCause", b"CallID", b"Cause",
        b"Cause-txt", b"Timestamp", b"EventTime", b"EndTime", b"ChanVariable", b"DestChanVariable")


def _frames(recording: bytes) -> tuple[bytes, ...]:
    return tuple(f for f in AmiFramer().feed(recording) if peek_event(f) in KEPT)


@functools.cache
def event_pool() -> tuple[tuple[bytes, ...], ...]:
    """The call, control and clock events of every AMI recording, one tuple per recording, those with the most
    hangups first (hypothesis draws low indices most)."""
    pool = [frames for frames in map(_frames, ami_recordings()) if frames]
    return tuple(sorted(pool, key=lambda frames: -sum(f.startswith(b"Event: Hangup") for f in frames)))

# the values that become outcome fields come up more often
EDIT_KEYS = KEYS + (b"TechCause", b"Cause", b"Timestamp", b"ChanVariable", b"DestChanVariable", b"Value",
                    b"CallID", b"Uniqueid", b"DestUniqueid", b"Channel", b"DestChannel") * 3


@st.composite
def header_edit(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A header the normalizer reads and a hostile value for it (mostly one of its own kind)."""
    key = draw(st.sampled_from(EDIT_KEYS))
    return key, draw(st.sampled_from(KIND.get(key, TEXT) if draw(st.integers(0, 3)) else VALUES))


def set_header(frame: bytes, key: bytes, value: bytes, where: int) -> bytes:
    """``frame`` with its first ``key`` line given ``value``, or with that line added when it has none."""
    lines = frame.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.startswith(key + b": "):
            lines[i] = key + b": " + value
            break
    else:
        lines.insert(1 + where % len(lines), key + b": " + value)
    return b"\r\n".join(lines)


WANTED = (b"Event: Hangup", b"Event: DialBegin", b"Event: VarSet", b"Event: UserEvent", b"Event: DialEnd",
          b"Event: Newstate")


@st.composite
def event_stream(draw: st.DrawFn, *, bytewise: bool = True) -> bytes:
    """Events of one to three recordings, interleaved; then headers the normalizer reads set to hostile values
    (on the frames it reads, mostly); then frames dropped, repeated, moved or cut off, and (``bytewise``) lines
    lost or repeated and bytes flipped: as one byte stream."""
    pool = event_pool()
    sources = [list(pool[i]) for i in draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=3))]
    events: list[bytes] = []
    while any(sources):
        source = draw(st.sampled_from([s for s in sources if s]))
        events.append(source.pop(0))
    lost = draw(st.sampled_from((None, (b"Event: DialBegin",), None, (b"Event: Hangup",), (b"Event: DialEnd",),
                                 (b"Event: DialBegin", b"Event: Hangup"))))
    if lost:  # every event of a kind gone: the DialBegins went by before the login, say
        events = [e for e in events if not e.startswith(lost)] or events
    wanted = [i for i, e in enumerate(events) if e.startswith(WANTED)] or list(range(len(events)))
    for key, value in draw(st.lists(header_edit(), min_size=1, max_size=8)):
        holders = [i for i in wanted if b"\r\n" + key + b": " in events[i]]  # the frames that carry it, mostly
        index = draw(st.sampled_from(holders if holders and draw(st.integers(0, 3)) else wanted))
        events[index] = set_header(events[index], key, value, draw(st.integers(0, 99)))
    for op, index, other in draw(st.lists(st.tuples(
            st.sampled_from(("drop", "repeat", "move", "truncate", "lines", "bytes") if bytewise
                            else ("drop", "repeat", "move", "truncate")),
            st.integers(0, 999), st.integers(0, 999)), max_size=6)):
        if not events:
            break
        index %= len(events)
        if op == "drop":
            del events[index]
        elif op == "repeat":
            events.insert(index + other % (len(events) - index + 1), events[index])
        elif op == "move":
            events.insert(other % len(events), events.pop(index))
        elif op == "truncate":
            del events[index + 1 :]
        elif op == "lines":
            lines = events[index].split(b"\r\n")
            line = other % len(lines)
            lines[line:line + 1] = [] if other % 2 else [lines[line]] * 2
            events[index] = b"\r\n".join(lines)
        else:
            events[index] = draw(mutated(events[index], max_ops=3))
    return BANNER + b"".join(e + TERMINATOR for e in events)


def pipeline(*, small: bool = False, live: bool = False, session: float | None = None, peek: bool = True,
             trunks: tuple[str, ...] | None = None, expire_every: int = 7) -> AmiEventPipeline:
    caps = {"max_legs": 2, "max_unlinked": 1, "max_emitted": 2} if small else {}
    tracker = AmiCallTracker(connector="pbx1", trunks=trunks, **caps)
    if session is not None:
        tracker.session_started(session)
    event_time = LiveEventTime(EventTimeGuard("pbx1")) if live else RecordingEventTime()
    return AmiEventPipeline(tracker, event_time, peek=peek, expire_every=expire_every)


def check_tables(tracker: AmiCallTracker) -> None:
    assert tracker.open_legs <= tracker.max_legs
    assert len(tracker._unlinked) <= tracker.max_unlinked and len(tracker._early_glue) <= tracker.max_unlinked
    assert len(tracker._emitted) <= tracker.max_emitted
    assert set(tracker._by_channel.values()) <= set(tracker._legs)  # no channel points at a finished leg


def run(pipe: AmiEventPipeline, chunks: list[bytes], received_at: float | None = None) -> list[CallOutcome]:
    outcomes: list[CallOutcome] = []
    for i, chunk in enumerate(chunks):
        outcomes += pipe.feed(chunk, None if received_at is None else received_at + i)
        check_tables(pipe.tracker)
    return outcomes


@pytest.mark.timeout(90)
@fuzz(150)
@given(data=st.data(), stream=event_stream(), small=st.booleans(), live=st.booleans(),
       session=st.sampled_from(SESSIONS), trunks=st.sampled_from([None, ("carrier*",), ("nothing",)]))
def test_any_event_sequence_gives_only_well_formed_outcomes(data, stream: bytes, small: bool, live: bool,
                                                            session: float | None, trunks: tuple[str, ...] | None):
    """Mixed, cut, repeated and damaged events, live (guarded receive time) or replayed (stream time), with
    tables at tiny caps: never an exception, every outcome keeps the contract, every table within its cap."""
    pipe = pipeline(small=small, live=live, session=session, trunks=trunks)
    outcomes = run(pipe, data.draw(chunked(stream)), received_at=RECEIVED_AT if live else None)
    for outcome in outcomes:
        check_outcome(outcome, "asterisk")
    pipe.tracker.expire(RECEIVED_AT + 10 * 86400)
    check_tables(pipe.tracker)


@pytest.mark.timeout(90)
@fuzz(100)
@given(data=st.data(), stream=event_stream(), session=st.sampled_from(SESSIONS))
def test_the_same_stream_gives_the_same_outcomes_in_any_reads_and_once(data, stream: bytes, session: float | None):
    """Deterministic: two pipelines fed the same (damaged) stream, one in a single read and one in many, give the
    same outcomes; fed a second time, a pipeline gives none (each leg is emitted once), unless it had let a leg go
    (TTL, a cap) the first time."""
    first = pipeline(session=session)
    outcomes = run(first, [stream])
    again = run(pipeline(session=session), data.draw(chunked(stream)))
    assert again == outcomes
    stats = first.tracker.stats
    let_go = stats.expired + stats.evicted + stats.unlinked_dropped
    assert run(first, [stream]) == [] or let_go


@pytest.mark.timeout(90)
@fuzz(100)
@given(stream=event_stream(bytewise=False), session=st.sampled_from(SESSIONS))
def test_the_peek_never_changes_the_outcomes(stream: bytes, session: float | None):
    """Events reordered, dropped, repeated and given hostile values (each frame still one header per line): the
    pipeline that peeks before it parses gives what the one that parses every frame gives."""
    # (no TTL expiry here: it runs every N events the tracker is given, and the peek gives it fewer)
    peeked = run(pipeline(session=session, expire_every=10**9), [stream])
    assert peeked == run(pipeline(session=session, peek=False, expire_every=10**9), [stream])


def test_hostile_numbers_in_a_recording_keep_the_outcome_contract_and_the_clock() -> None:
    """Found by the fuzz suite: ``Timestamp: inf`` (or nan, or 1e300) on one event set the recording's clock to it
    for good, so every later outcome ended at inf (the store's ``iso()`` raises) or started at nan; ``TechCause: 700``
    came out as SIP code 700. Now such a hint is no time at all and the clock goes on from the others, and a code
    that is no SIP status is None."""
    data = (FIXTURES / "asterisk" / "legs" / "01-dial-trunk-608.ami").read_bytes()
    for hostile in (b"inf", b"nan", b"1e300"):
        stream = data.replace(b"Timestamp: 1795980988.328630", b"Timestamp: " + hostile)  # the first DialBegin
        stream = stream.replace(b"TechCause: 608", b"TechCause: 700")
        [outcome] = run(pipeline(), [stream])
        check_outcome(outcome, "asterisk")
        assert (outcome.sip_code, outcome.started_at, outcome.ended_at) == (None, 1795980988.331683, 1795980988.736808)
