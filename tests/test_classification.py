"""The default rule pack over every code and phrase the standards name (table-driven)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset

ATIS = 'SIP;cause=603;text="v=analytics1;url=https://redress.example.net/r;id=NB-1";location=LN'
ATIS_Q850 = 'Q.850;cause=21;text="v=analytics1;url=https://example.com/redress";location=LN'
JWSCARD = "<https://redress.example.net/v1/jcard/x.jws>;purpose=jwscard"


@pytest.fixture(scope="module")
def default_rules():
    return load_ruleset()


@pytest.fixture(scope="module")
def twilio_rules():
    return load_ruleset(["default", "carriers/twilio"])


def outcome(**fields) -> CallOutcome:
    return CallOutcome(pbx=fields.pop("pbx", "asterisk"), connector="t", call_id="c", **fields)


CASES = [
    # (id, outcome fields, category, confidence, rule)
    ("603plus conformant", dict(sip_code=603, sip_phrase="Network Blocked", reason=ATIS),
     "analytics_block", "high", "atis-603plus"),
    ("603plus Q.850 form", dict(sip_code=603, sip_phrase="Network Blocked", reason=ATIS_Q850),
     "analytics_block", "high", "atis-603plus"),
    ("603plus phrase odd case", dict(sip_code=603, sip_phrase=" network  BLOCKED ", reason=ATIS),
     "analytics_block", "high", "atis-603plus"),
    ("Network Blocked without AVP", dict(sip_code=603, sip_phrase="Network Blocked",
                                         reason='SIP;cause=603;text="Network Blocked"'),
     "analytics_block", "medium", "network-blocked-phrase-without-avp"),
    ("Network Blocked, no Reason", dict(sip_code=603, sip_phrase="Network Blocked"),
     "analytics_block", "medium", "network-blocked-phrase-without-avp"),
    ("AVP under Decline", dict(sip_code=603, sip_phrase="Decline", reason=ATIS),
     "analytics_block", "medium", "analytics-avp-under-other-phrase"),
    ("608", dict(sip_code=608, sip_phrase="Rejected"), "analytics_block", "high", "sip-608-rejected"),
    ("608 with jwscard", dict(sip_code=608, sip_phrase="Rejected", call_info=JWSCARD),
     "analytics_block", "high", "sip-608-rejected"),
    ("608 no phrase", dict(sip_code=608), "analytics_block", "high", "sip-608-rejected"),
    ("607", dict(sip_code=607, sip_phrase="Unwanted"), "unwanted", "high", "sip-607-unwanted"),
    ("BYE Reason 607", dict(answered=True, reason="SIP;cause=607"), "unwanted", "medium", "reason-sip-607"),
    ("603 Decline", dict(sip_code=603, sip_phrase="Decline"), "declined", "low", "sip-603-decline"),
    ("603 no phrase", dict(sip_code=603), "declined", "low", "sip-603-decline"),
    ("603 Decline Q.850 21", dict(sip_code=603, sip_phrase="Decline", reason="Q.850;cause=21"),
     "declined", "low", "sip-603-decline"),
    ("403 suspected spam", dict(sip_code=403, sip_phrase="Forbidden - Suspected Spam"),
     "analytics_block", "medium", "sip-403-blocking-text"),
    ("403 robocall", dict(sip_code=403, sip_phrase="Robocall rejected"),
     "analytics_block", "medium", "sip-403-blocking-text"),
    ("403 fraud", dict(sip_code=403, sip_phrase="Fraud"), "analytics_block", "medium", "sip-403-blocking-text"),
    ("403 analytics", dict(sip_code=403, sip_phrase="Call blocked by analytics"),
     "analytics_block", "medium", "sip-403-blocking-text"),
    ("403 blocked", dict(sip_code=403, sip_phrase="Blocked"), "analytics_block", "medium", "sip-403-blocking-text"),
    ("403 Forbidden", dict(sip_code=403, sip_phrase="Forbidden"), "forbidden", "medium", "sip-403-forbidden"),
    ("403 Stale Date", dict(sip_code=403, sip_phrase="Stale Date"), "identity_failure", "high", "sip-403-stale-date"),
    ("428", dict(sip_code=428), "identity_failure", "high", "stir-shaken-identity"),
    ("436", dict(sip_code=436), "identity_failure", "high", "stir-shaken-identity"),
    ("437", dict(sip_code=437), "identity_failure", "high", "stir-shaken-identity"),
    ("438", dict(sip_code=438, sip_phrase="Invalid Identity Header"),
     "identity_failure", "high", "stir-shaken-identity"),
    ("486", dict(sip_code=486), "busy", "high", "sip-busy"),
    ("600", dict(sip_code=600), "busy", "high", "sip-busy"),
    ("480", dict(sip_code=480), "no_answer", "high", "sip-no-answer"),
    ("408", dict(sip_code=408), "no_answer", "high", "sip-no-answer"),
    ("487", dict(sip_code=487), "no_answer", "high", "sip-no-answer"),
    ("no final response", dict(q850_cause=0), "no_answer", "medium", "no-final-response"),
    ("nothing known at all", dict(), "no_answer", "medium", "no-final-response"),
    ("404", dict(sip_code=404), "invalid_number", "high", "sip-invalid-number"),
    ("484", dict(sip_code=484), "invalid_number", "high", "sip-invalid-number"),
    ("604", dict(sip_code=604), "invalid_number", "high", "sip-invalid-number"),
    ("500", dict(sip_code=500), "network_failure", "high", "sip-server-failure"),
    ("503", dict(sip_code=503), "network_failure", "high", "sip-server-failure"),
    ("504", dict(sip_code=504), "network_failure", "high", "sip-server-failure"),
    ("200", dict(sip_code=200, answered=True), "answered", "high", "sip-answered"),
    ("answered, no code", dict(answered=True, q850_cause=16), "answered", "high", "answered-call"),
    ("Q.850 21 only", dict(q850_cause=21, pbx_cause="Call Rejected"), "rejected_unknown", "medium",
     "q850-21-call-rejected"),
    ("Q.850 17 only", dict(q850_cause=17), "busy", "medium", "q850-17-user-busy"),
    ("Q.850 1 only", dict(q850_cause=1), "invalid_number", "medium", "q850-1-unallocated"),
    ("Q.850 34 only", dict(q850_cause=34), "network_failure", "medium", "q850-network-failure"),
    ("Q.850 38 only", dict(q850_cause=38), "network_failure", "medium", "q850-network-failure"),
    ("Q.850 41 only", dict(q850_cause=41), "network_failure", "medium", "q850-network-failure"),
    ("Q.850 42 only", dict(q850_cause=42), "network_failure", "medium", "q850-network-failure"),
    ("Q.850 16 not answered", dict(q850_cause=16), "no_answer", "medium", "no-final-response"),
    ("glue said 100 Trying", dict(sip_code=100), "no_answer", "medium", "sip-provisional-only"),
    ("606", dict(sip_code=606), "other", "low", "sip-6xx-other"),
    ("302", dict(sip_code=302), "other", "low", "catch-all"),
    ("488", dict(sip_code=488), "other", "low", "catch-all"),
    ("603 + X-Twilio-Error without the Twilio pack", dict(sip_code=603, headers={"X-Twilio-Error": "32203"}),
     "declined", "low", "sip-603-decline"),
]


@pytest.mark.parametrize(("fields", "category", "confidence", "rule"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_default_pack(default_rules, fields, category, confidence, rule):
    result = default_rules.classify(outcome(**fields))
    assert (result.category, result.confidence, result.rule.name) == (category, confidence, rule)
    assert result.analytics_block == (category == "analytics_block")


TWILIO_CASES = [
    ("inactive account", dict(sip_code=603, sip_phrase="Decline", headers={"X-Twilio-Error": "10001"}),
     "provider_block", "twilio-account-block"),
    ("fraud block, FreeSWITCH header name", dict(sip_code=603, headers={"sip_rh_X-Twilio-Error": "32203"}),
     "provider_block", "twilio-account-block"),
    ("header name case-insensitive", dict(sip_code=603, headers={"x-twilio-error": "32203"}),
     "provider_block", "twilio-account-block"),
    ("carrier 603+ through Twilio", dict(sip_code=603, sip_phrase="Network Blocked", reason=ATIS),
     "analytics_block", "atis-603plus"),
    ("plain 603 through Twilio", dict(sip_code=603, sip_phrase="Decline"), "declined", "sip-603-decline"),
    ("Twilio header on a 486", dict(sip_code=486, headers={"X-Twilio-Error": "1"}), "busy", "sip-busy"),
]


@pytest.mark.parametrize(("fields", "category", "rule"), [c[1:] for c in TWILIO_CASES],
                         ids=[c[0] for c in TWILIO_CASES])
def test_twilio_override(twilio_rules, fields, category, rule):
    result = twilio_rules.classify(outcome(**fields))
    assert (result.category, result.rule.name) == (category, rule)


def test_contract_categories_exist(default_rules):
    expected = {"analytics_block", "unwanted", "declined", "forbidden", "identity_failure", "provider_block",
                "busy", "no_answer", "invalid_number", "network_failure", "answered", "rejected_unknown", "other"}
    assert set(default_rules.categories) == expected
    assert default_rules.analytics_categories() == {"analytics_block"}
    for category in default_rules.categories.values():
        assert category.description and category.what_to_do


def test_every_rule_cites_a_source(default_rules):
    for rule in default_rules.rules:
        assert rule.ref.source and rule.ref.file == "default pack" and rule.ref.line > 0


def test_default_pack_has_no_warnings(default_rules):
    assert default_rules.warnings == ()


def test_index_agrees_with_linear_scan(default_rules):
    """The per-code candidate index must pick exactly what a plain first-match scan picks."""
    for code in [None, 99, 100, 183, 200, 302, 403, 486, 603, 607, 608, 699, 700, 999]:
        for phrase in [None, "Network Blocked", "Forbidden - Suspected Spam", "Decline"]:
            for reason in [None, ATIS, "Q.850;cause=21", "SIP;cause=607"]:
                o = outcome(sip_code=code, sip_phrase=phrase, reason=reason, q850_cause=21)
                linear = next((r.result for r in default_rules.rules if r.matches(o)), default_rules.fallback)
                assert default_rules.classify(o) == linear


@settings(max_examples=400, deadline=None)
@given(code=st.integers(100, 699), phrase=st.one_of(st.none(), st.text(max_size=80)),
       reason=st.one_of(st.none(), st.text(max_size=120)), q850=st.one_of(st.none(), st.integers(0, 127)),
       answered=st.booleans())
def test_any_code_any_phrase_classifies(default_rules, code, phrase, reason, q850, answered):
    result = default_rules.classify(outcome(sip_code=code, sip_phrase=phrase, reason=reason, q850_cause=q850,
                                            answered=answered))
    assert result.category in default_rules.categories
    assert result.confidence in ("high", "medium", "low")


def test_memo_covers_every_match_key():
    from blockradar.conditions import MATCH_KEYS
    from blockradar.ruleset import MEMO_COVERS

    assert set(MATCH_KEYS) == MEMO_COVERS


def test_memo_agrees_with_the_uncached_path_on_every_fixture(default_rules, twilio_rules):
    from pathlib import Path

    from blockradar.recordings import read_recording

    fixtures = Path(__file__).parent / "fixtures"
    outcomes = [o for path in sorted(fixtures.glob("*/*.ami")) + sorted(fixtures.glob("freeswitch/*.esl"))
                for o in read_recording(path).outcomes]
    assert len(outcomes) >= 85  # every single-call fixture, AMI plain + enriched and every ESL pass
    for ruleset in (default_rules, twilio_rules):
        for outcome in outcomes:
            for variant in (outcome, outcome.replace(trunk="other"), outcome.replace(headers={"X-Twilio-Error": "1"})):
                assert ruleset.classify(variant) == ruleset._classify(variant)
                assert ruleset.classify(variant) == ruleset._classify(variant)  # second time: from the memo


@settings(max_examples=300, deadline=None)
@given(code=st.one_of(st.none(), st.integers(100, 699)),
       phrase=st.sampled_from([None, "Network Blocked", "Decline", "Forbidden - Suspected Spam", "Stale Date"]),
       reason=st.sampled_from([None, ATIS, "Q.850;cause=21", "SIP;cause=607", 'SIP;cause=603;text="x"']),
       call_info=st.sampled_from([None, JWSCARD]), answered=st.booleans(),
       header=st.sampled_from([None, {"X-Twilio-Error": "32203"}]), trunk=st.sampled_from([None, "a", "b"]))
def test_memo_agrees_with_the_uncached_path(twilio_rules, code, phrase, reason, call_info, answered, header, trunk):
    o = outcome(sip_code=code, sip_phrase=phrase, reason=reason, call_info=call_info, answered=answered,
                headers=header or {}, trunk=trunk)
    assert twilio_rules.classify(o) == twilio_rules._classify(o)
