"""Recorded AMI streams (the real Asterisk 22.10.1 captures) -> exactly the expected outcomes.

The table below is read off shared/fixtures/asterisk/MANIFEST.md (SIPp response sent, PJSIP Hangup
Cause/TechCause, the enriched HANGUPCAUSE tech string), not off our own output.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from panoramisk.message import Message

from blockradar.connectors.ami_calls import AmiCallTracker, AmiEventPipeline, RecordingEventTime
from blockradar.connectors.ami_recording import looks_like_ami, read_ami_recording, read_ami_stream
from blockradar.outcome import CallOutcome

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"
LIFECYCLE = Path(__file__).parent / "fixtures" / "lifecycle" / "asterisk"


@dataclass(frozen=True)
class Case:
    nn: str
    slug: str
    sip_code: int | None
    phrase: str | None  # the enriched HANGUPCAUSE tech phrase (None where the code is < 300)
    q850: int | None
    pbx_cause: str
    answered: bool
    category_plain: str
    category_enriched: str


# fmt: off
CASES = [
    Case("01", "608-rejected", 608, "Rejected", 127, "Interworking, unspecified", False,
         "analytics_block", "analytics_block"),
    Case("02", "603plus-network-blocked", 603, "Network Blocked", 21, "Call Rejected", False,
         "declined", "analytics_block"),
    Case("03", "603-decline", 603, "Decline", 21, "Call Rejected", False, "declined", "declined"),
    Case("04", "603-decline-q850-21", 603, "Decline", 21, "Call Rejected", False, "declined", "declined"),
    Case("05", "607-unwanted", 607, "Unwanted", 127, "Interworking, unspecified", False,
         "unwanted", "unwanted"),
    Case("06", "403-forbidden-spam", 403, "Forbidden - Suspected Spam", 21, "Call Rejected", False,
         "forbidden", "analytics_block"),
    Case("07", "486-busy-here", 486, "Busy Here", 17, "User busy", False, "busy", "busy"),
    Case("08", "480-temporarily-unavailable", 480, "Temporarily Unavailable", 19, "User alerting, no answer",
         False, "no_answer", "no_answer"),
    Case("09", "404-not-found", 404, "Not Found", 1, "Unallocated (unassigned) number", False,
         "invalid_number", "invalid_number"),
    Case("10", "503-service-unavailable", 503, "Service Unavailable", 34, "Circuit/channel congestion", False,
         "network_failure", "network_failure"),
    Case("11", "438-invalid-identity-header", 438, "Invalid Identity Header", 127, "Interworking, unspecified",
         False, "identity_failure", "identity_failure"),
    Case("12", "183-then-608-rejected", 608, "Rejected", 127, "Interworking, unspecified", False,
         "analytics_block", "analytics_block"),
    Case("13", "200-ok-then-carrier-bye", None, None, 16, "Normal Clearing", True, "answered", "answered"),
    Case("14", "no-answer-dial-timeout", None, None, None, "Unknown", False, "no_answer", "no_answer"),
]
# fmt: on

# (case, enriched?) for every single-call fixture, plain and enriched
FIXTURE_CASES = [(case, enriched) for case in CASES for enriched in (False, True)]
FIXTURE_IDS = [f"{c.nn}-{c.slug}{'.enriched' if e else ''}" for c, e in FIXTURE_CASES]


def fixture_path(case: Case, enriched: bool) -> Path:
    return FIXTURES / f"{case.nn}-{case.slug}{'.enriched' if enriched else ''}.ami"


def check_outcome(outcome: CallOutcome, case: Case, enriched: bool, connector: str) -> None:
    """The assertions every path (replay, live over loopback) must satisfy for one fixture."""
    assert outcome.pbx == "asterisk"
    assert outcome.connector == connector
    assert outcome.trunk == "carrier"
    assert outcome.caller_number == "+15557654321"  # ConnectedLineNum, not the leg's CallerIDNum
    assert outcome.caller_name == "Acme Sales"
    assert outcome.callee_number == f"+155512300{case.nn}"
    assert outcome.sip_code == case.sip_code
    assert outcome.sip_phrase == (case.phrase if enriched else None)
    assert outcome.q850_cause == case.q850
    assert outcome.pbx_cause == case.pbx_cause
    assert outcome.answered is case.answered
    assert (outcome.talk_s is not None) is case.answered
    assert outcome.reason is None and outcome.call_info is None  # never reach AMI on stock Asterisk
    if enriched:
        assert outcome.call_id and "-" in outcome.call_id and "." not in outcome.call_id  # SIP Call-ID
    else:
        assert outcome.call_id.replace(".", "").isdigit()  # the PJSIP channel's Uniqueid
    assert outcome.ended_at is not None and outcome.started_at is not None
    assert outcome.started_at <= outcome.ended_at


def expected_category(case: Case, enriched: bool) -> str:
    return case.category_enriched if enriched else case.category_plain


def panoramisk_parse(frame: bytes) -> dict[str, str] | None:
    """The reference parse: panoramisk's own Message.from_line, flattened like ami_wire's dicts."""
    message = Message.from_line(frame.decode("utf-8", "replace").strip())
    if message is None:
        return None
    out: dict[str, str] = {}
    for key, value in message.items():
        values = value if isinstance(value, list) else [value]
        if key in ("ChanVariable", "DestChanVariable"):
            for item in values:
                name, _, var_value = item.partition("=")
                out[f"{key}({name})"] = var_value
        else:
            out[key] = values[-1]
    return out


@pytest.mark.parametrize(("case", "enriched"), FIXTURE_CASES, ids=FIXTURE_IDS)
def test_every_fixture_gives_its_one_outcome(case: Case, enriched: bool) -> None:
    replay = read_ami_recording(fixture_path(case, enriched).read_bytes(), connector="lab")
    assert len(replay.outcomes) == 1
    check_outcome(replay.outcomes[0], case, enriched, "lab")
    assert replay.parse_errors == 0
    assert replay.oversized == 0
    assert replay.trailing_bytes == 0
    assert replay.open_legs == 0
    assert replay.banner == "Asterisk Call Manager/11.0.0"
    assert replay.skipped > replay.parsed  # the peek skipped most of the stream


def test_the_608_fixture_as_replay_prints_it() -> None:
    data = (FIXTURES / "01-608-rejected.ami").read_bytes()
    (outcome,) = read_ami_recording(data).outcomes
    assert (outcome.sip_code, outcome.caller_number, outcome.trunk) == (608, "+15557654321", "carrier")
    assert outcome.connector == "replay"
    # recording clock: the CEL EventTime / Uniqueid epoch of the capture (2026-11-23 18:33:55 UTC)
    assert outcome.to_dict()["ended_at"] == "2026-11-23T18:33:55.000Z"


def test_replay_times_come_from_the_recording() -> None:
    timeout = read_ami_recording((FIXTURES / "14-no-answer-dial-timeout.ami").read_bytes()).outcomes[0]
    assert timeout.ended_at is not None and timeout.started_at is not None
    assert timeout.ended_at - timeout.started_at == 15.0  # Dial(...,15) timed out
    answered = read_ami_recording((FIXTURES / "13-200-ok-then-carrier-bye.ami").read_bytes()).outcomes[0]
    assert answered.talk_s is not None and 0.0 < answered.talk_s <= 3.0  # carrier BYE after 1 s; 1 s clock


def test_categories_with_the_default_ruleset() -> None:
    if importlib.util.find_spec("blockradar.ruleset") is None:
        pytest.skip("blockradar.ruleset not in the tree yet")
    from blockradar.ruleset import load_ruleset

    ruleset = load_ruleset(None)
    wrong = []
    for case, enriched in FIXTURE_CASES:
        (outcome,) = read_ami_recording(fixture_path(case, enriched).read_bytes()).outcomes
        got = ruleset.classify(outcome).category
        if got != expected_category(case, enriched):
            wrong.append((case.nn, enriched, got, expected_category(case, enriched)))
    assert wrong == []


@pytest.mark.parametrize(("case", "enriched"), FIXTURE_CASES, ids=FIXTURE_IDS)
def test_chunking_never_changes_the_outcome(case: Case, enriched: bool) -> None:
    """Chunks of 1 byte cut the stream at every byte boundary; random sizes add realistic cuts."""
    data = fixture_path(case, enriched).read_bytes()
    whole = read_ami_recording(data).outcomes
    assert read_ami_recording(data, chunk_size=1).outcomes == whole
    rng = random.Random(f"{case.nn}{enriched}")
    for _ in range(3):
        tracker = AmiCallTracker(connector="replay")
        pipeline = AmiEventPipeline(tracker, RecordingEventTime())
        got: list[CallOutcome] = []
        pos = 0
        while pos < len(data):
            size = rng.randint(1, 3000)
            got.extend(pipeline.feed(data[pos : pos + size]))
            pos += size
        assert got == whole


ALL_RECORDINGS = sorted(FIXTURES.glob("*.ami")) + sorted(LIFECYCLE.glob("*.ami"))


@pytest.mark.parametrize("path", ALL_RECORDINGS, ids=[p.name for p in ALL_RECORDINGS])
def test_fast_path_equals_panoramisk_full_parse(path: Path) -> None:
    """ami_wire's peek + lean parse vs parsing every frame with panoramisk's Message.from_line."""
    data = path.read_bytes()

    def run(**options: object) -> list[CallOutcome]:
        pipeline = AmiEventPipeline(AmiCallTracker(connector="x"), RecordingEventTime(), **options)  # type: ignore[arg-type]
        return pipeline.feed(data)

    fast = run()
    full = run(peek=False, parse=panoramisk_parse)
    assert fast == full
    calls = {"A8-sigterm-idle.ami": 0, "A9-sigterm-calls.ami": 12}  # the lab's SIGTERM recordings
    expected = 0 if path.name.startswith(("A1", "A2", "A5")) or "after" in path.name else 1
    assert len(fast) == calls.get(path.name, expected)


def test_lifecycle_calls() -> None:
    a7 = read_ami_recording((LIFECYCLE / "A7-eventfilter-608.ami").read_bytes()).outcomes
    assert [(o.sip_code, o.sip_phrase) for o in a7] == [(608, "Rejected")]  # filtered stream still works
    a6 = read_ami_recording((LIFECYCLE / "A6-events-call-only.ami").read_bytes()).outcomes
    assert [(o.sip_code, o.sip_phrase) for o in a6] == [(608, None)]  # Events: call only
    for name in ("A3-restart-now-before.ami", "A4-stop-now.ami", "A3-restart-gracefully-before.ami"):
        (outcome,) = read_ami_recording((LIFECYCLE / name).read_bytes()).outcomes
        assert outcome.answered and outcome.q850_cause == 16 and outcome.sip_code is None


def test_looks_like_ami() -> None:
    for path in ALL_RECORDINGS:
        assert looks_like_ami(path.read_bytes()[:64])
    assert looks_like_ami(b"Event: Hangup\r\nChannel: PJSIP/x-1\r\n")
    assert not looks_like_ami(b"Content-Type: text/event-plain\nContent-Length: 10\n\n")
    assert not looks_like_ami(b'{"kind": "outcome"}')
    assert not looks_like_ami(b"")


def test_read_ami_stream_from_a_file_in_pieces(tmp_path: Path) -> None:
    path = tmp_path / "two-calls.ami"
    path.write_bytes(fixture_path(CASES[0], False).read_bytes() + event_stream_of(CASES[6]))
    with path.open("rb") as handle:
        replay = read_ami_stream(iter(lambda: handle.read(4096), b""), connector="file")
    assert [o.sip_code for o in replay.outcomes] == [608, 486]
    assert {o.connector for o in replay.outcomes} == {"file"}


def event_stream_of(case: Case) -> bytes:
    data = fixture_path(case, False).read_bytes()
    return data[data.index(b"\r\n") + 2 :]  # without its banner, as if the session had continued
