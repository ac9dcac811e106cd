"""Byte bounds on what a PBX sends: every text kept is bounded, dedup keys have a fixed size, so memory
follows the number of calls, not what a hostile PBX puts in them (the audit: 2,000 open AMI legs with
250 KB channel names took 493 MB; 300 ESL hangups with 1 MB Unique-IDs, 782 MB in the dedup set)."""

from __future__ import annotations

from blockradar.connectors.ami_calls import AmiCallTracker
from blockradar.connectors.ami_wire import MAX_VALUE, parse_frame
from blockradar.connectors.esl_calls import EslCallNormalizer
from blockradar.outcome import MAX_ID, MAX_TEXT, CallOutcome, bounded, bounded_id
from tests.test_ami_calls import dial_begin, hangup
from tests.test_legs import esl_hangup

HUGE = "x" * 250_000


def test_ami_values_are_bounded_at_the_parse() -> None:
    frame = b"Event: DialBegin\r\nDestChannel: PJSIP/" + HUGE.encode() + b"-00000001\r\n" + HUGE.encode() + b": v"
    event = parse_frame(frame)
    assert event is not None and len(event["DestChannel"]) == MAX_VALUE
    assert max(len(k) for k in event) <= 128


def test_open_ami_legs_hold_bounded_text() -> None:
    tracker = AmiCallTracker()
    for i in range(200):
        uid = f"1795458900.{i}"
        event = dial_begin(uid=uid) | {"DestConnectedLineName": HUGE, "DialString": HUGE + "@carrier"}
        tracker.feed(parse_frame(_frame(event)) or {}, 1.0)
    assert tracker.open_legs == 200
    held = sum(len(str(v)) for leg in tracker._legs.values() for v in (leg.caller_name, leg.callee_number,
                                                                    leg.channel) if v)
    assert held <= 200 * 3 * MAX_VALUE  # not 200 x 500 KB
    outcome = tracker.feed(parse_frame(_frame(hangup(uid="1795458900.7", ConnectedLineName=HUGE))) or {}, 2.0)
    assert outcome is not None and len(outcome.caller_name or "") <= MAX_TEXT


def test_esl_dedup_keys_and_texts_are_bounded() -> None:
    normalizer = EslCallNormalizer("fs1")
    uid = "u" * 1_000_000
    first = normalizer.on_event(esl_hangup(**{"Unique-ID": uid, "Caller-Orig-Caller-ID-Name": HUGE,
                                              "variable_sip_invite_failure_phrase": HUGE}))
    assert first is not None and len(first.call_id) == MAX_ID and first.call_id == bounded_id(uid)
    assert all(len(key) <= MAX_ID for key in normalizer._seen)
    again = normalizer.on_event(esl_hangup(**{"Unique-ID": uid}))
    assert again is None and normalizer.stats.duplicates == 1  # the digest still tells it is the same call
    other = normalizer.on_event(esl_hangup(**{"Unique-ID": uid[:-1] + "v"}))
    assert other is not None and other.call_id != first.call_id  # a different call with the same prefix


def test_bounded_keeps_short_outcomes_as_they_are() -> None:
    outcome = CallOutcome(pbx="asterisk", connector="pbx1", call_id="c1", caller_name="Acme")
    assert bounded(outcome) is outcome
    big = outcome.replace(headers={f"X-{i}": HUGE for i in range(100)})
    assert len(bounded(big).headers) == 16 and all(len(v) <= MAX_TEXT for v in bounded(big).headers.values())


def _frame(event: dict[str, str]) -> bytes:
    return "\r\n".join(f"{k}: {v}" for k, v in event.items()).encode()


def test_a_flood_of_spoofed_numbers_is_bounded_and_its_evictions_are_on_metrics() -> None:
    """The audit: 200,000 spoofed caller IDs hit the key cap, and the evictions were exposed nowhere."""
    from prometheus_client import CollectorRegistry, generate_latest

    from blockradar.detect.pipeline import Pipeline
    from blockradar.metrics import WindowCollector
    from blockradar.ruleset import load_ruleset

    pipeline = Pipeline(load_ruleset(), max_keys=100)
    for i in range(1000):
        pipeline.process(CallOutcome("asterisk", "pbx1", f"c{i}", ended_at=1_800_000_000.0 + i * 0.01,
                                     caller_number=f"+1555{i:07d}", trunk="carrier-a", sip_code=200, answered=True))
    registry = CollectorRegistry()
    registry.register(WindowCollector(lambda: pipeline.groups))
    text = generate_latest(registry).decode()
    assert 'blockradar_window_keys{scope="caller_number"} 100.0' in text
    assert 'blockradar_window_keys_evicted_total{reason="lru",scope="caller_number"} 900.0' in text
