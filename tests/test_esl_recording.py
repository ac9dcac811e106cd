"""Recorded FreeSWITCH streams -> call outcomes (esl_recording + esl_calls), for every fixture.

The expected values are read off tests/fixtures/freeswitch/MANIFEST.md ("Key results" table,
per-scenario sections and the 1.10.12 comparison): what the carrier (SIPp) sent and what
FreeSWITCH put in the sofia leg's CHANNEL_HANGUP_COMPLETE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from greenswitch.esl import ESLEvent

from blockradar.connectors.esl_calls import EslCallNormalizer, outcome_from_hangup
from blockradar.connectors.esl_recording import looks_like_esl, read_esl_recording
from blockradar.connectors.esl_wire import (
    EVENT_PLAIN,
    DictEvent,
    PlainEvent,
    event_name,
    iter_frames,
    parse_json_event,
    parse_plain_full,
)
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset

FIXTURES = Path(__file__).parent / "fixtures" / "freeswitch"
LIFECYCLE = Path(__file__).parent / "fixtures" / "lifecycle" / "freeswitch"
VERSIONS = {"1.11.1": FIXTURES, "1.10.12": FIXTURES / "v1.10.12"}
ATIS_REASON = 'SIP;cause=603;text="v=analytics1;url=https://analytics.example.net/redress";location=TN'
CALLER = "+15557654321"
CALLER_NAME = "Acme Sales"
CALLEE = "+15551230001"
TRUNK = "carrier"


@dataclass(frozen=True)
class Case:
    nn: str
    slug: str
    code: int | None
    phrase: str | None
    q850: int
    pbx_cause: str
    category: str
    reason: str | None = None  # variable_sip_reason on 1.11.1 (1.10.12 never has one)
    answered: bool = False
    redress_url: str | None = None  # 1.11.1 only (from sip_603plus_reason)


CASES = [
    Case("01", "608-rejected-jwscard", 608, "Rejected", 21, "CALL_REJECTED", "analytics_block"),
    Case(
        "02",
        "603-network-blocked",
        603,
        "Network Blocked",
        21,
        "CALL_REJECTED",
        "analytics_block",
        reason='SIP;cause=603;text="Network Blocked"',
    ),
    Case("03", "603-decline", 603, "Decline", 21, "CALL_REJECTED", "declined"),
    Case(
        "04",
        "603-decline-q850-21",
        603,
        "Decline",
        21,
        "CALL_REJECTED",
        "declined",
        reason='Q.850;cause=21;text="Call Rejected"',
    ),
    Case("05", "607-unwanted", 607, "Unwanted", 16, "UNWANTED", "unwanted"),
    Case("06", "403-forbidden-spam", 403, "Forbidden - Suspected Spam", 21, "CALL_REJECTED", "analytics_block"),
    Case("07", "486-busy-here", 486, "Busy Here", 17, "USER_BUSY", "busy"),
    Case("08", "480-temporarily-unavailable", 480, "Temporarily Unavailable", 18, "NO_USER_RESPONSE", "no_answer"),
    Case("09", "404-not-found", 404, "Not Found", 1, "UNALLOCATED_NUMBER", "invalid_number"),
    Case(
        "10", "503-service-unavailable", 503, "Service Unavailable", 41, "NORMAL_TEMPORARY_FAILURE", "network_failure"
    ),
    Case(
        "11", "438-invalid-identity-header", 438, "Invalid Identity Header", 16, "INVALID_IDENTITY", "identity_failure"
    ),
    Case("12", "183-then-608-rejected", 608, "Rejected", 21, "CALL_REJECTED", "analytics_block"),
    Case("13", "200-ok-then-carrier-bye", 200, None, 16, "NORMAL_CLEARING", "answered", answered=True),
    # FreeSWITCH's own 487/CANCEL at originate_timeout is not a carrier response (MANIFEST surprise 4)
    Case("14", "100-trying-no-answer-timeout", None, None, 19, "NO_ANSWER", "no_answer"),
    Case(
        "15",
        "603plus-atis-analytics1",
        603,
        "Network Blocked",
        21,
        "CALL_REJECTED",
        "analytics_block",
        reason=ATIS_REASON,
        redress_url="https://analytics.example.net/redress",
    ),
]
CASE_BY_NN = {case.nn: case for case in CASES}


def fixture_files() -> list[tuple[str, str, Case, Path]]:
    """(version, pass, case, path) for every single-call recording."""
    files = []
    for version, folder in VERSIONS.items():
        passes = ["plain", "json", "bridged"] + (["enriched"] if version == "1.11.1" else [])
        for case in CASES:
            for pass_name in passes:
                suffix = "" if pass_name == "plain" else f".{pass_name}"
                files.append((version, pass_name, case, folder / f"{case.nn}-{case.slug}{suffix}.esl"))
        files.append(
            (
                version,
                "ignore-early-media",
                CASE_BY_NN["12"],
                folder / "12-183-then-608-rejected.ignore-early-media.esl",
            )
        )
    return files


FIXTURE_FILES = fixture_files()
FIXTURE_IDS = [f"{v}-{p}-{c.nn}" for v, p, c, _ in FIXTURE_FILES]


def check_outcome(outcome: CallOutcome, case: Case, version: str) -> None:
    """Assert everything the MANIFEST says about this scenario's outbound (sofia) leg."""
    assert outcome.pbx == "freeswitch"
    assert outcome.caller_number == CALLER
    assert outcome.caller_name == CALLER_NAME
    assert outcome.callee_number == CALLEE
    assert outcome.trunk == TRUNK
    assert outcome.sip_code == case.code
    assert outcome.sip_phrase == case.phrase
    assert outcome.q850_cause == case.q850
    assert outcome.pbx_cause == case.pbx_cause
    assert outcome.answered is case.answered
    assert outcome.call_info is None  # FreeSWITCH never exposes a failure response's Call-Info
    assert outcome.ended_at is not None and outcome.started_at is not None
    assert 0 < outcome.ended_at - outcome.started_at < 30
    if case.answered:
        assert outcome.talk_s is not None and 0.9 < outcome.talk_s < 1.2  # carrier BYE after ~1 s
    else:
        assert outcome.talk_s == 0.0
    if version == "1.11.1":
        assert outcome.reason == case.reason
    else:
        assert outcome.reason is None  # 1.10.x does not put the Reason header into ESL
    expected_url = case.redress_url if version == "1.11.1" else None
    assert (outcome.redress.url if outcome.redress else None) == expected_url
    if expected_url:
        assert outcome.redress is not None
        assert outcome.redress.source == "reason" and outcome.redress.location == "TN"
        assert outcome.redress.conformant


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset()


@pytest.mark.parametrize(("version", "pass_name", "case", "path"), FIXTURE_FILES, ids=FIXTURE_IDS)
def test_every_fixture_gives_one_outcome_per_outbound_leg(version, pass_name, case, path, ruleset) -> None:
    replay = read_esl_recording(path.read_bytes(), connector="lab")
    assert len(replay.outcomes) == 1, "exactly one outcome (bridged: the gateway leg only)"
    outcome = replay.outcomes[0]
    assert outcome.connector == "lab"
    check_outcome(outcome, case, version)
    assert ruleset.classify(outcome).category == case.category
    stats = replay.stats
    assert stats.wire.truncated == 0 and stats.protocol_error is None
    assert stats.formats == (["text/event-json"] if pass_name == "json" else ["text/event-plain"])
    if pass_name == "bridged":
        assert stats.normalizer.legs_ignored == 2  # loopback-a and loopback-b
    if pass_name == "enriched":
        assert stats.log_frames > 0  # siptrace log/data frames are recognised and skipped


def test_the_atis_603plus_capture_gives_analytics_block_with_redress(ruleset) -> None:
    """What `blockradar replay .../15-603plus-atis-analytics1.esl --json` must print."""
    replay = read_esl_recording((FIXTURES / "15-603plus-atis-analytics1.esl").read_bytes())
    (outcome,) = replay.outcomes
    classification = ruleset.classify(outcome)
    assert classification.category == "analytics_block"
    assert classification.rule.name == "atis-603plus"
    data = outcome.to_dict()
    assert data["redress"]["url"] == "https://analytics.example.net/redress"
    assert data["connector"] == "replay" and data["pbx"] == "freeswitch"
    assert data["ended_at"].startswith("2026-11-23T")


def test_1_10_network_blocked_still_classifies_by_code_and_phrase(ruleset) -> None:
    (outcome,) = read_esl_recording((VERSIONS["1.10.12"] / "15-603plus-atis-analytics1.esl").read_bytes()).outcomes
    assert outcome.reason is None and outcome.redress is None
    classification = ruleset.classify(outcome)
    assert (classification.category, classification.rule.name) == (
        "analytics_block",
        "network-blocked-phrase-without-avp",
    )


def _hangup_bodies() -> list[tuple[str, bytes, str]]:
    bodies = []
    for path in sorted(FIXTURES.rglob("*.esl")) + sorted(LIFECYCLE.glob("*.esl")):
        for frame in iter_frames(path.read_bytes()):
            if event_name(frame) == "CHANNEL_HANGUP_COMPLETE":
                bodies.append((str(path.relative_to(FIXTURES.parent)), frame.body, frame.content_type))
    return bodies


def test_lazy_fast_path_equals_full_parses_on_every_fixture() -> None:
    """Every CHANNEL_HANGUP_COMPLETE (every leg, every file): lazy == decode-all == greenswitch."""
    checked = 0
    for where, body, ctype in _hangup_bodies():
        if ctype == EVENT_PLAIN:
            lazy = outcome_from_hangup(PlainEvent(body), "x")
            full = outcome_from_hangup(DictEvent(parse_plain_full(body)), "x")
            stock = outcome_from_hangup(DictEvent(ESLEvent(body.decode()).headers), "x")
            assert lazy == full == stock, where
        else:
            values = parse_json_event(body)
            assert values is not None, where
            assert outcome_from_hangup(DictEvent(values), "x") is not None or values["Call-Direction"] != "outbound"
        checked += 1
    assert checked > 150


@pytest.mark.parametrize("case", CASES, ids=[c.nn for c in CASES])
def test_plain_and_json_recordings_of_a_scenario_agree(case: Case) -> None:
    plain = read_esl_recording((FIXTURES / f"{case.nn}-{case.slug}.esl").read_bytes()).outcomes[0]
    as_json = read_esl_recording((FIXTURES / f"{case.nn}-{case.slug}.json.esl").read_bytes()).outcomes[0]
    different_call = {"call_id", "sip_call_id", "started_at", "ended_at", "talk_s"}
    plain_view = {k: v for k, v in plain.to_dict().items() if k not in different_call}
    json_view = {k: v for k, v in as_json.to_dict().items() if k not in different_call}
    assert plain_view == json_view


def test_a_stream_seen_twice_yields_each_call_once() -> None:
    data = (FIXTURES / "07-486-busy-here.esl").read_bytes()
    replay = read_esl_recording(data + data)
    assert len(replay.outcomes) == 1
    assert replay.stats.normalizer.duplicates == 1


def test_dedup_set_is_bounded() -> None:
    body = next(
        f
        for f in iter_frames((FIXTURES / "07-486-busy-here.esl").read_bytes())
        if event_name(f) == "CHANNEL_HANGUP_COMPLETE"
    )
    normalizer = EslCallNormalizer("x", dedup_size=3)
    original = body.body.split(b"Unique-ID: ", 1)[1][:36]
    ids = [f"00000000-0000-4000-8000-00000000000{i}".encode() for i in range(5)]
    for uid in ids:
        body.body = body.body.replace(original, uid)
        original = uid
        assert normalizer.on_frame(body) is not None
    assert len(normalizer._seen) == 3
    body.body = body.body.replace(original, ids[0])  # forgotten: outside the bounded window
    assert normalizer.on_frame(body) is not None


def test_x_and_p_headers_become_outcome_headers() -> None:
    body = next(
        f
        for f in iter_frames((FIXTURES / "01-608-rejected-jwscard.esl").read_bytes())
        if event_name(f) == "CHANNEL_HANGUP_COMPLETE"
    ).body
    extra = b"variable_sip_rh_X-Block-Reason: analytics%3B%20provider%3DExampleAnalytics%3B%20score%3D97\n"
    body = body.replace(b"variable_sip_term_status:", extra + b"variable_sip_term_status:", 1)
    outcome = outcome_from_hangup(PlainEvent(body), "x")
    assert outcome is not None
    assert dict(outcome.headers) == {"X-Block-Reason": "analytics; provider=ExampleAnalytics; score=97"}


def test_lifecycle_recordings() -> None:
    shutdown = read_esl_recording((LIFECYCLE / "F3-fsctl-shutdown.esl").read_bytes())
    (outcome,) = shutdown.outcomes
    assert outcome.pbx_cause == "SYSTEM_SHUTDOWN" and outcome.answered
    assert shutdown.stats.disconnect_notices == 1
    assert shutdown.stats.wire.frames == 162  # every frame, the 6 after the notice included
    (minimal,) = read_esl_recording((LIFECYCLE / "F5-minimal-sub-608.esl").read_bytes()).outcomes
    assert minimal.sip_code == 608
    rude = read_esl_recording((LIFECYCLE / "F2-acl-rude-rejection.esl").read_bytes())
    assert rude.outcomes == [] and rude.stats.rude_rejections == 1


def test_garbage_never_raises() -> None:
    for data in (
        b"",
        b"\n\n\n",
        b"Content-Length: -1\n\nxx",
        b"\xff\xfe" * 100,
        b"Content-Type: text/event-json\nContent-Length: 3\n\n{}[",
    ):
        replay = read_esl_recording(data)
        assert replay.outcomes == []


def test_looks_like_esl() -> None:
    assert looks_like_esl((FIXTURES / "01-608-rejected-jwscard.esl").read_bytes()[:256])
    assert looks_like_esl((LIFECYCLE / "F2-acl-rude-rejection.esl").read_bytes()[:256])
    assert not looks_like_esl(b"Asterisk Call Manager/11.0.0\r\n")
    assert not looks_like_esl(b'{"pbx": "freeswitch"}')
    assert not looks_like_esl(b"Content-Type: auth/request\r\n\r\n")


def test_json_values_are_not_url_decoded_twice() -> None:
    """JSON bodies carry plain text: a literal "%41" in a phrase must stay "%41"."""
    data = (FIXTURES / "06-403-forbidden-spam.json.esl").read_bytes()
    hangup = next(f for f in iter_frames(data) if event_name(f) == "CHANNEL_HANGUP_COMPLETE")
    values = parse_json_event(hangup.body)
    assert values is not None
    values["variable_sip_invite_failure_phrase"] = "Spam 100%41"
    from_json = outcome_from_hangup(DictEvent(values), "x")
    assert from_json is not None and from_json.sip_phrase == "Spam 100%41"
    plain_body = b"".join(f"{key}: {quote(value, safe='')}\n".encode() for key, value in values.items())
    from_plain = outcome_from_hangup(PlainEvent(plain_body + b"\n"), "x")
    assert from_plain == from_json
