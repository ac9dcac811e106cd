"""Durations, the threshold config model, judging with hysteresis, and the shipped defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blockradar.detect.pipeline import Pipeline
from blockradar.detect.thresholds import CLEAR, DEFAULT_THRESHOLDS, FIRE, HOLD, Threshold, ThresholdConfig
from blockradar.durations import format_duration, parse_duration
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset

T0 = 1_700_000_000.0
REASON_603PLUS = 'SIP;cause=603;text="v=analytics1;url=https://redress.example.com/r;tel=+18005550100"'


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("2h30m", 9000), ("1d", 86400), ("0s", 0), ("500ms", 0.5),
     ("1w", 604800), (45, 45), ("1.5h", 5400), ("90", 90)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "10x", "h", "-5s", "1h-", "5 m m", True, "nan"])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("seconds", "text"), [(9000, "2h30m"), (0, "0s"), (0.25, "250ms"), (90061, "1d1h1m1s")])
def test_format_duration_round_trips(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == seconds


def _cfg(**kw):
    base = {"name": "t", "scope": ["caller_number"], "categories": ["analytics_block"], "window": "10m"}
    return ThresholdConfig.model_validate({**base, **kw})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of count or rate"),
        ({"count": 3, "rate": 0.5}, "exactly one of count or rate"),
        ({"count": 3, "scope": ["callerid"]}, "unknown scope field"),
        ({"count": 3, "resolve": 3}, "below the firing bound"),
        ({"rate": 1.5}, "less than or equal to 1"),
        ({"count": 3, "window": "10 minutes"}, "not a duration"),
        ({"count": 3, "bucket": "1h"}, "bucket must be"),
        ({"count": 3, "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors_say_what_is_wrong(fields, message):
    with pytest.raises(ValidationError, match=message):
        _cfg(**fields)


def test_config_reads_yaml_style_fields():
    cfg = _cfg(rate=0.3, min_attempts=10, **{"for": "2m"})
    assert (cfg.window, cfg.for_, cfg.resolve_bound, cfg.bucket_s) == (600.0, 120.0, 0.15, 50.0)
    assert "30%" in cfg.describe()


def _judge(cfg, matching, attempts):
    return Threshold(0, cfg, 0, (1,), ("analytics_block",)).judge(matching, attempts)


@pytest.mark.parametrize(
    ("fields", "matching", "attempts", "verdict"),
    [
        ({"count": 3}, 3, 3, FIRE),
        ({"count": 3}, 2, 10, HOLD),  # between the bounds: hysteresis holds
        ({"count": 3}, 1, 10, CLEAR),  # below half
        ({"count": 1}, 0, 5, CLEAR),
        ({"count": 4, "resolve": 1}, 1, 5, HOLD),
        ({"rate": 0.3, "min_attempts": 10}, 3, 10, FIRE),
        ({"rate": 0.3, "min_attempts": 10}, 5, 9, HOLD),  # too few attempts to fire, too many blocks to clear
        ({"rate": 0.3, "min_attempts": 10}, 2, 10, HOLD),  # 20 % >= 15 %
        ({"rate": 0.3, "min_attempts": 10}, 1, 10, CLEAR),
        ({"rate": 0.3, "min_attempts": 10}, 1, 2, CLEAR),  # a quiet window clears: 1 / max(2, 10)
        ({"rate": 0.3, "min_attempts": 10}, 0, 0, CLEAR),
    ],
)
def test_judge_with_hysteresis(fields, matching, attempts, verdict):
    assert _judge(_cfg(**fields), matching, attempts) == verdict


def test_defaults_are_valid_documented_and_unique():
    names = [t.name for t in DEFAULT_THRESHOLDS]
    assert len(set(names)) == len(names) == 5
    assert all(len(t.description) > 80 for t in DEFAULT_THRESHOLDS)
    scopes = {t.name: t.scope for t in DEFAULT_THRESHOLDS}
    assert scopes["trunk-block-rate"] == ["trunk"]
    assert any(t.categories == ["unwanted"] for t in DEFAULT_THRESHOLDS)


def _outcome(i, **kw):
    base = {"pbx": "p", "connector": "c", "call_id": f"call-{i}", "ended_at": T0 + i, "caller_number": "+15557650003",
            "callee_number": "+12125550100", "trunk": "carrier-c"}
    return CallOutcome(**{**base, **kw})


@pytest.mark.parametrize(
    ("fields", "strong"),
    [
        ({"sip_code": 603, "sip_phrase": "Network Blocked", "reason": REASON_603PLUS}, True),
        ({"sip_code": 608, "sip_phrase": "Rejected"}, True),
        ({"sip_code": 603, "sip_phrase": "Network Blocked"}, False),  # no ATIS AVP: medium confidence
        ({"sip_code": 603, "sip_phrase": "Decline"}, False),
        ({"sip_code": 607, "sip_phrase": "Unwanted"}, False),
    ],
)
def test_default_strong_signal_fires_on_conformant_603plus_and_608_only(fields, strong):
    pipeline = Pipeline(load_ruleset(), alerting=None)
    pipeline.process(_outcome(1, **fields))
    live = {th.name for g in pipeline.groups for th in g.thresholds if th.active}
    assert ("number-strong-block" in live) is strong


def test_default_repeated_blocks_fire_at_three():
    pipeline = Pipeline(load_ruleset())
    repeated = next(th for g in pipeline.groups for th in g.thresholds if th.name == "number-analytics-blocks")
    for i in range(2):
        pipeline.process(_outcome(i, sip_code=603, sip_phrase="Network Blocked"))
    assert not repeated.active
    pipeline.process(_outcome(3, sip_code=603, sip_phrase="Network Blocked"))
    assert list(repeated.active) == ["+15557650003"]


def test_default_trunk_rate_needs_volume():
    pipeline = Pipeline(load_ruleset())
    trunk = next(th for g in pipeline.groups for th in g.thresholds if th.name == "trunk-block-rate")
    for i in range(10):  # 10 blocks on 10 numbers: 100 % but only 10 attempts
        pipeline.process(_outcome(i, caller_number=f"+1555000{i:04d}", sip_code=608, sip_phrase="Rejected"))
    assert not trunk.active
    for i in range(10, 60):
        pipeline.process(_outcome(i, caller_number=f"+1555000{i:04d}", sip_code=200, sip_phrase="OK", answered=True))
    assert list(trunk.active) == ["carrier-c"]
