"""What an alert says, through the real pipeline and rule pack: labels from the calls that matched,
figures over the whole window (not the last ten calls), and messages that say what happened."""

from __future__ import annotations

import pytest

from blockradar.alerting.lifecycle import AlertingConfig
from blockradar.alerting.notifiers.base import Notification
from blockradar.alerting.notifiers.email import render_text
from blockradar.alerting.notifiers.slack import build_payload
from blockradar.detect.evidence import MAX_DETAILS, OTHER, KeyEvidence, summarize
from blockradar.detect.pipeline import Pipeline
from blockradar.detect.thresholds import DEFAULT_THRESHOLDS, ThresholdConfig
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset

T0 = 1_700_000_000.0
REASON = 'SIP;cause=603;text="v=analytics1;url=https://redress.example.com/r;tel=+18005550100;id=BLK-7"'


@pytest.fixture(scope="module")
def rules():
    return load_ruleset()


def call(t, code, trunk, number="+15557650004", **kw):
    phrase = {603: "Network Blocked", 607: "Unwanted", 608: "Rejected", 200: "OK"}[code]
    return CallOutcome(pbx="asterisk", connector="pbx1", call_id=f"{trunk}-{t}", ended_at=t, caller_number=number,
                       callee_number="+12125550100", trunk=trunk, sip_code=code, sip_phrase=phrase,
                       answered=code == 200, **kw)


def test_caller_alert_names_the_trunks_of_its_matching_calls_not_the_call_that_crossed(rules):
    """Live: all four 607s of +15557650004 came from carrier-a, the alert said "via carrier-b" because the
    20th attempt, which reached min_attempts, went through carrier-b."""
    unwanted = [t for t in DEFAULT_THRESHOLDS if t.name == "number-unwanted-rate"]
    p = Pipeline(rules, unwanted, AlertingConfig(group_wait=0))
    t = T0
    for i in range(19):
        t += 1
        p.process(call(t, 607 if i < 4 else 200, "carrier-a" if i < 10 else "carrier-b"))
    assert not p.lifecycle.active_alerts()
    p.process(call(t + 1, 200, "carrier-b"))  # the 20th attempt: the rate condition now has its volume
    (note,) = p.flush_due(t + 1)
    (alert,) = note.alerts
    assert alert["labels"]["trunk"] == "carrier-a"
    assert alert["trunks"] == {"carrier-a": 4}
    assert note.title() == "WARNING unwanted-call marks (607) on +15557650004 via carrier-a"


def test_every_trunk_of_the_matching_calls_is_named_in_a_stable_order(rules):
    p = Pipeline(rules, [t for t in DEFAULT_THRESHOLDS if t.name == "number-analytics-blocks"],
                 AlertingConfig(group_wait=0))
    for i, trunk in enumerate(["carrier-c", "carrier-a", "carrier-c"]):
        p.process(call(T0 + i, 608, trunk))
    (note,) = p.flush_due(T0 + 3)
    assert note.alerts[0]["labels"]["trunk"] == "carrier-a,carrier-c"
    assert note.title() == "CRITICAL analytics blocks on +15557650004 via carrier-a, carrier-c"


def test_figures_cover_the_whole_window_not_the_last_ten_calls(rules):
    """Live: "31 / 50 (62%)" beside "603: 5, 608: 5" and a first-seen 30 s late."""
    rate = [t for t in DEFAULT_THRESHOLDS if t.name == "number-block-rate"]
    p = Pipeline(rules, rate, AlertingConfig(group_wait=0))
    t = T0
    for i in range(50):
        t += 2
        code = (603 if i % 2 else 608) if i < 31 else 200
        p.process(call(t, code, "carrier-c", reason=REASON if code == 603 else None))
    (alert,) = p.lifecycle.active_alerts()
    snap = p.lifecycle.snapshot(alert)
    assert (snap["count"], snap["attempts"]) == (31, 50)
    assert snap["sip_codes"] == {"608": 16, "603": 15}
    assert sum(snap["sip_codes"].values()) == snap["count"]
    assert sum(snap["categories"].values()) == snap["count"]
    assert snap["first_seen"] == "2023-11-14T22:13:22.000Z"  # the first blocked call, not the 21st
    assert snap["last_seen"] == "2023-11-14T22:14:22.000Z"
    assert len(snap["samples"]) == 5  # samples stay a bounded list
    assert snap["redress"][0]["id"] == "BLK-7"


@pytest.mark.parametrize("seed", range(5))
def test_sip_code_counts_add_up_to_the_matching_count_whatever_the_traffic(rules, seed):
    import random

    rng = random.Random(seed)
    p = Pipeline(rules, None, AlertingConfig(group_wait=0))  # the shipped defaults, several windows
    t = T0
    for _ in range(3000):
        t += rng.uniform(0, 4) if rng.random() < 0.95 else -rng.uniform(0, 30)  # some calls out of order
        code = rng.choice([603, 607, 608, 200, 200, 200])
        p.process(call(t, code, rng.choice(["carrier-a", "carrier-b"]), number=f"+1555765{rng.randrange(8):04d}",
                       reason=REASON if code == 603 and rng.random() < 0.5 else None))
        if rng.random() < 0.01:
            p.tick(t)
    alerts = p.lifecycle.active_alerts()
    assert alerts
    for alert in alerts:
        snap = p.lifecycle.snapshot(alert)
        assert sum(snap["sip_codes"].values()) == snap["count"], snap
        assert sum(snap["trunks"].values()) == snap["count"]


def test_evidence_is_bounded_per_bucket():
    evidence = KeyEvidence(sample_max=3)
    for i in range(MAX_DETAILS + 50):
        evidence.add((7, "analytics_block", "high", 608, f"trunk-{i}", "pbx1", "asterisk"), T0 + i, (T0 + i,), 0)
    assert len(evidence.cells) == MAX_DETAILS + 1  # the rest counted under (other)
    summary = summarize(evidence, 7, 12, ["analytics_block"], None, None)
    assert summary.count == MAX_DETAILS + 50 and summary.trunks[OTHER] == 50
    assert len(evidence.samples) == 3


def test_a_trunk_alert_names_only_categories_that_happened(rules):
    trunk = [t for t in DEFAULT_THRESHOLDS if t.name == "trunk-block-rate"]
    p = Pipeline(rules, trunk, AlertingConfig(group_wait=0))
    for i in range(60):
        p.process(call(T0 + i, 608 if i % 10 == 0 else 200, "carrier-c", number=f"+1555765{i:04d}"))
    (note,) = p.flush_due(T0 + 60)
    assert note.title() == "CRITICAL analytics blocks on trunk carrier-c"  # not "analytics block/identity failure"
    assert note.alerts[0]["kind"] == "trunk"


def test_grouped_messages_mark_new_and_resolved(rules):
    strong = [ThresholdConfig.model_validate({"name": "strong", "scope": ["caller_number"],
                                              "categories": ["analytics_block"], "window": "10m", "count": 1,
                                              "keep_firing_for": "0s"})]
    p = Pipeline(rules, strong, AlertingConfig(group_wait="0s", group_interval="5m"))
    p.process(call(T0, 608, "carrier-c", number="+15550000001"))
    p.process(call(T0, 608, "carrier-c", number="+15550000002"))
    assert len(p.flush_due(T0)) == 1
    p.process(call(T0 + 400, 608, "carrier-c", number="+15550000002"))
    p.process(call(T0 + 400, 608, "carrier-c", number="+15550000003"))
    (note,) = p.tick(T0 + 600)  # the group's next look; +15550000001's window has just emptied: resolved
    changes = {a["scope"]["caller_number"]: a["change"] for a in note.alerts}
    assert changes == {"+15550000001": "resolved", "+15550000002": "firing", "+15550000003": "new"}
    assert note.title() == "WARNING analytics blocks on 2 numbers via carrier-c (1 new, 1 still firing, 1 resolved)"
    text = render_text(note)
    assert "strong (warning): NEW" in text and "strong (warning): RESOLVED" in text
    resolved = next(a for a in note.alerts if a["change"] == "resolved")
    assert resolved["what_to_do"] == {} and resolved["samples"] == []
    assert "Cleared: at 2023-11-14T22:23:20.000Z: 0 / 0 in 10m now" in text
    assert "Last matching call: 2023-11-14T22:13:20.000Z" in text
    assert "Stop or slow dialing" in text  # said once, for the alerts still firing
    slack = str(build_payload(note))
    assert "RESOLVED" in slack and "NEW" in slack


def test_slack_and_email_carry_every_603plus_contact(rules):
    p = Pipeline(rules, None, AlertingConfig(group_wait=0))
    p.process(call(T0, 603, "carrier-c", reason=REASON + ";location=LN"))
    (note, *_) = p.flush_due(T0)
    text = render_text(note)
    assert "redress: https://redress.example.com/r | tel +18005550100 | id BLK-7" in text
    slack = str(build_payload(note))
    assert "<https://redress.example.com/r|redress request>" in slack and "id BLK-7" in slack
    assert "tel +18005550100" in slack


def test_notification_json_round_trips_the_new_fields():
    note = Notification("g", {}, "firing", [{"fingerprint": "a", "state": "firing", "change": "new", "held": True,
                                             "kind": "number"}], T0)
    again = Notification.from_json(note.to_json())
    assert again.alerts == note.alerts
