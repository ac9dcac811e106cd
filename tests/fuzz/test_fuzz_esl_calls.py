"""Fuzz of the FreeSWITCH normalizer (blockradar.connectors.esl_calls): the recorded CHANNEL_HANGUP_COMPLETE events
of tests/fixtures (event-plain and event-json) with the values the normalizer reads set to hostile ones, lines lost
or repeated, JSON values of the wrong type, bytes flipped; and whole recordings, damaged, through the recording
reader. Only well-formed CallOutcomes come out, nothing raises, the dedup set stays within its cap, the same events
give the same outcomes, and a stream seen twice gives each call once."""

from __future__ import annotations

import functools
import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockradar.clock import EventTimeGuard
from blockradar.connectors.esl_calls import HANGUP_EVENT, EslCallNormalizer
from blockradar.connectors.esl_recording import read_esl_recording
from blockradar.connectors.esl_wire import EVENT_JSON, EVENT_PLAIN, EslFrame, EslFramer, event_name
from blockradar.outcome import MAX_ID, CallOutcome
from blockradar.recordings import ReadSettings
from tests.fuzz.support import check_outcome, esl_recordings, fuzz, mutated

RECEIVED_AT = 1_795_461_765.0

NUMBERS = ("0", "-1", "99", "128", "700", "999", "99999999999999999999", "999999999999999999999", "\u00b2",
           "\u0663\u0660\u0668", " 608 ", "", "608", "487", "6e2", "0x25")
TIMES = ("0", "1", "1795461761488136", "99999999999999999999", "253402300799999999", "-5", "nan", "1e20", "",
         "\u00b2", "1795461761288132")
TEXTS = ("", " ", "x" * 600, "y" * 5000, "%", "%zz", "%0A", "%00", "%E2%82", "%C3%B6", "J%C3%B6rg%20%E2%80%AE",
         "\u00f6", "+15551230001", "%2B15551230001", "405", "anonymous", "sip:+15551230001@carrier",
         "SIP;cause=603;text=\"v=analytics1;url=https://x.example;tel=+15551230000\"",
         "SIP%3Bcause%3D603%3Btext%3D%22v%3Danalytics1%22", "Q.850;cause=21", "SIP;cause=99999999", "a" * 5000 + ";")
KIND = {
    "Call-Direction": ("outbound", "inbound", "OUTBOUND", ""),
    "Channel-Name": ("sofia/external/x", "sofia%2Fx", "sofia/", "loopback/x", "", "sofia/" + "z" * 700),
    "Unique-ID": ("", "u" * 5000, "9db1defb-03e3-46a8-8ad5-a8747a758f3a", "%00", " ", "\u00f6" * 200),
    "Event-Date-Timestamp": TIMES, "Caller-Channel-Created-Time": TIMES, "Caller-Channel-Answered-Time": TIMES,
    "Caller-Channel-Hangup-Time": TIMES, "variable_sip_term_status": NUMBERS,
    "variable_sip_invite_failure_status": NUMBERS, "variable_hangup_cause_q850": NUMBERS,
    "variable_sip_hangup_disposition": ("send_cancel", "recv_refuse", ""),
    "variable_sip_gateway_name": ("carrier", "", "%", "g" * 600, "0f3c9a2e-uuid"),
}
KEYS = (*KIND, "variable_sip_invite_failure_phrase", "variable_sip_reason", "variable_sip_603plus_reason",
        "variable_sip_from_user", "variable_origination_caller_id_number", "Caller-Caller-ID-Number",
        "Caller-Orig-Caller-ID-Number", "Caller-ANI", "Caller-Orig-Caller-ID-Name", "Caller-Destination-Number",
        "Hangup-Cause", "variable_sip_rh_X-Reason", "variable_sip_rh_" + "h" * 600, "Event-Name")


@functools.cache
def hangups() -> tuple[EslFrame, ...]:
    """Every recorded CHANNEL_HANGUP_COMPLETE (plain and json), and one other event of each recording."""
    found: list[EslFrame] = []
    for recording in esl_recordings():
        others = 0
        for frame in EslFramer().feed(recording):
            name = event_name(frame)
            if name == HANGUP_EVENT or (name is not None and others < 1):
                others += name != HANGUP_EVENT
                found.append(frame)
    return tuple(found)


@st.composite
def hostile_value(draw: st.DrawFn, key: str) -> str:
    return draw(st.sampled_from(KIND.get(key, TEXTS) if draw(st.integers(0, 3)) else TEXTS + NUMBERS + TIMES))


@st.composite
def edited(draw: st.DrawFn, frame: EslFrame) -> EslFrame:
    """The frame with values the normalizer reads set to hostile ones (or added, or removed), lines repeated or lost,
    maybe bytes flipped; a JSON body gets values of any JSON type too."""
    edits = draw(st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 9)), min_size=1, max_size=6))
    if frame.content_type == EVENT_JSON:
        values = json.loads(frame.body)
        for key, how in edits:
            if how == 0:
                values.pop(key, None)
            elif how == 1:
                values[key] = draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                             st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.text(),
                                                                                                  max_size=2)))
            else:
                values[key] = draw(hostile_value(key))
        body = json.dumps(values).encode()
    else:
        lines = frame.body.decode("utf-8", "replace").split("\n")
        for key, how in edits:
            found = [i for i, line in enumerate(lines) if line.startswith(key + ": ")]
            if how == 0 and found:
                del lines[found[0]]
            elif how == 1 and found:
                lines.insert(found[0], lines[found[0]])  # a repeated key: the first one counts
            else:
                value = draw(hostile_value(key))
                line = key + ": " + (quote(value, safe="") if how % 2 else value.replace("\n", "%0A"))
                if found:
                    lines[found[0]] = line
                else:
                    lines.insert(how % len(lines), line)
        body = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        body = draw(mutated(body, max_ops=3))
    return EslFrame(frame.headers, body)


@st.composite
def event_frames(draw: st.DrawFn) -> list[EslFrame]:
    """Recorded hangups (and other events), some repeated, most edited, in any order."""
    pool = hangups()
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=8))
    frames = [draw(edited(pool[i])) if draw(st.integers(0, 4)) else pool[i] for i in picks]
    return frames + draw(st.lists(st.sampled_from(frames), max_size=3))


def normalizer(*, live: bool = False, dedup: int = 20_000, gateways_only: bool = True,
               gateways: tuple[str, ...] | None = None) -> EslCallNormalizer:
    return EslCallNormalizer("fs1", guard=EventTimeGuard("fs1") if live else None, dedup_size=dedup,
                             gateways_only=gateways_only, gateways=gateways,
                             gateway_names={"carrier": "Carrier A", "0f3c9a2e-uuid": "B" * 600})


def run(norm: EslCallNormalizer, frames: list[EslFrame], live: bool = False) -> list[CallOutcome]:
    outcomes = []
    for i, frame in enumerate(frames):
        outcome = norm.on_frame(frame, RECEIVED_AT + i if live else None)
        if outcome is not None:
            outcomes.append(outcome)
        assert len(norm._seen) <= norm._dedup_size and all(len(k) <= MAX_ID for k in norm._seen)
    return outcomes


@pytest.mark.timeout(90)
@fuzz(200)
@given(frames=event_frames(), live=st.booleans(), dedup=st.sampled_from([1, 3, 20_000]), gateways_only=st.booleans(),
       gateways=st.sampled_from([None, ("carrier*",), ("nothing",)]))
def test_any_hangup_events_give_only_well_formed_outcomes(frames: list[EslFrame], live: bool, dedup: int,
                                                          gateways_only: bool, gateways: tuple[str, ...] | None):
    """Hangups with hostile values, repeated, of any type (plain, json, damaged json), live (guarded receive time)
    or replayed (the PBX's time): never an exception, every outcome keeps the contract, the dedup set within its
    cap, every event counted."""
    norm = normalizer(live=live, dedup=dedup, gateways_only=gateways_only, gateways=gateways)
    outcomes = run(norm, frames, live)
    for outcome in outcomes:
        check_outcome(outcome, "freeswitch")
    stats = norm.stats
    assert stats.events == len(frames) and stats.outcomes == len(outcomes)
    assert stats.skipped + stats.legs_ignored + stats.duplicates + stats.malformed + stats.errors + stats.outcomes \
        == stats.events


@pytest.mark.timeout(90)
@fuzz(100)
@given(frames=event_frames())
def test_the_same_events_give_the_same_outcomes_and_each_call_once(frames: list[EslFrame]):
    """Deterministic: two normalizers fed the same events give the same outcomes; a normalizer fed them twice gives
    nothing the second time (a reconnect or an overlapping replay never counts a call twice)."""
    first = normalizer()
    outcomes = run(first, frames)
    assert run(normalizer(), frames) == outcomes
    assert run(first, frames) == []
    assert len({o.call_id for o in outcomes}) == len(outcomes)


@functools.cache
def _anchors(index: int) -> tuple[int, ...]:
    recording = esl_recordings()[index]
    marks = (b"Content-Length: ", b"variable_sip_term_status: ", b"Unique-ID: ", b"Event-Date-Timestamp: ",
             b"Call-Direction: ", b'"variable_sip_term_status"', b"CHANNEL_HANGUP_COMPLETE")
    return tuple(i for i in range(len(recording)) if any(recording.startswith(m, i) for m in marks))


@pytest.mark.timeout(90)
@fuzz(100)
@given(data=st.data(), index=st.integers(0, 40), gateways_only=st.booleans())
def test_damaged_recordings_replay_without_error(data, index: int, gateways_only: bool):
    """A recorded ESL stream after byte edits aimed at its lengths and hangup values replays through the recording
    reader (framer, then normalizer) without an exception: well-formed outcomes, or a protocol error recorded."""
    recording = esl_recordings()[index]
    damaged = data.draw(mutated(recording, max_ops=10, anchors=_anchors(index)))
    replay = read_esl_recording(damaged, connector="fs1", settings=ReadSettings(gateways_only=gateways_only))
    for outcome in replay.outcomes:
        check_outcome(outcome, "freeswitch")
    assert replay.stats.protocol_error is None or isinstance(replay.stats.protocol_error, str)


def test_a_hostile_hangup_keeps_the_outcome_contract() -> None:
    """Found by the fuzz suite: a SIP status of 700, a 20-digit Q.850 cause and a 20-digit Event-Date-Timestamp (the
    year 3 million) came out as they were; SQLite and the store's ``to_dict`` (``iso()``) cannot write the last two."""
    frame = next(f for f in hangups() if f.content_type == EVENT_PLAIN and event_name(f) == HANGUP_EVENT
                 and b"Event-Date-Timestamp: 1795461761488136" in f.body)
    body = frame.body.replace(b"variable_sip_term_status: 608", b"variable_sip_term_status: 700")
    body = body.replace(b"variable_hangup_cause_q850: 21", b"variable_hangup_cause_q850: 99999999999999999999")
    body = body.replace(b"Event-Date-Timestamp: 1795461761488136", b"Event-Date-Timestamp: 99999999999999999999")
    outcome = EslCallNormalizer("fs1").on_frame(EslFrame(frame.headers, body))
    assert outcome is not None
    check_outcome(outcome, "freeswitch")
    assert (outcome.sip_code, outcome.q850_cause, outcome.ended_at) == (None, None, None)
