"""Smoke test of bench/ (issue 7): every measurement runs on tiny sizes and returns sane numbers.

No timing is asserted (performance belongs to ``python -m bench``); what is checked is that the
streams are what they claim (every call yields exactly one outcome through the real readers, the
subscription filters hold), that each measurement completes end to end over loopback, and that
``python -m bench`` prints the table and, last, a JSON line with every key and a PASS/FAIL per target.
"""

from __future__ import annotations

import json
import math

import pytest

import bench.__main__ as bench_main
from bench.report import TARGETS, json_line, judge
from bench.streams import ami_stream, esl_stream, esl_subscribed_events
from blockradar.connectors.ami_calls import AmiCallTracker, AmiEventPipeline, RecordingEventTime
from blockradar.connectors.esl_calls import EslCallNormalizer
from blockradar.connectors.esl_wire import EslFramer, event_name

REQUIRED_KEYS = {
    "ami_events_per_s", "ami_vs_panoramisk", "esl_events_per_s", "esl_vs_greenswitch", "engine_outcomes_per_s",
    "rss_growth_100k_to_1m", "bytes_per_key", "alert_latency_p99_ms", "python", "cpu", "commit", "targets",
    "loop_lag_p99_ms", "flood_dropped", "tick_ms_10k_alerts", "fleet_skipped",
}
TINY = bench_main.Sizes(repeats=1, ami_calls=30, esl_calls=20, engine_steady=3000, memory_total=6000,
                        memory_numbers=1500, latency_s=0.5, burst_events=300, flood_numbers=500, tick_alerts=200,
                        tick_seconds=5, fleet_calls=400, fleet_memory_numbers=1000)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_ami_stream_yields_one_outcome_per_call_through_the_real_pipeline() -> None:
    stream = ami_stream(40)
    frames = [f for f in stream.data.split(b"\r\n\r\n") if f]
    assert len(frames) == stream.events
    assert all(f.startswith(b"Event: ") for f in frames)
    assert not any(f.startswith((b"Event: CEL\r\n", b"Event: Cdr\r\n")) for f in frames)  # not in the mask
    outcomes = AmiEventPipeline(AmiCallTracker(), RecordingEventTime()).feed(stream.data)
    assert len(outcomes) == stream.outcomes == 40
    assert len({o.call_id for o in outcomes}) == 40  # fresh unique ids


def test_esl_stream_holds_the_subscribed_events_and_one_outcome_per_call() -> None:
    stream = esl_stream(25)
    frames = EslFramer().feed(stream.data)
    assert len(frames) == stream.events
    names = {event_name(f) for f in frames}
    assert names <= esl_subscribed_events()
    normalizer = EslCallNormalizer("bench")
    outcomes = [o for o in (normalizer.on_frame(f) for f in frames) if o is not None]
    assert len(outcomes) == stream.outcomes == 25


@pytest.fixture(scope="module")
def tiny_result() -> dict[str, object]:
    return bench_main.run(TINY, quick=True)


def test_every_figure_is_measured_and_sane(tiny_result: dict[str, object]) -> None:
    for key in ("ami_events_per_s", "panoramisk_events_per_s", "ami_vs_panoramisk", "esl_events_per_s",
                "greenswitch_events_per_s", "esl_vs_greenswitch", "engine_outcomes_per_s",
                "engine_cold_outcomes_per_s", "rss_growth_100k_to_1m", "bytes_per_key", "alert_latency_p99_ms",
                "tick_ms_10k_alerts", "loop_lag_p99_ms", "flood_loop_lag_p99_ms"):
        assert _positive(tiny_result[key]), (key, tiny_result[key])
    assert tiny_result["flood_dropped"] == 0 and tiny_result["burst_lost"] == 0  # every outcome got through
    assert tiny_result["tick_alerts_live"] >= 200
    assert tiny_result["alert_latency_samples"] == tiny_result["alert_latency_expected"] == 10
    assert tiny_result["alert_latency_p50_ms"] <= tiny_result["alert_latency_p99_ms"]  # type: ignore[operator]
    assert tiny_result["memory_outcomes"] == 6000 and tiny_result["memory_numbers"] == 1500
    if tiny_result["fleet_skipped"] is None:  # Debian's redis-server is there (CI installs it)
        for key in ("fleet_outcomes_per_s", "fleet_alone_outcomes_per_s", "fleet_cost_vs_alone",
                    "fleet_bytes_per_number"):
            assert _positive(tiny_result[key]), (key, tiny_result[key])
    assert set(tiny_result["targets"]) == {t.key for t in TARGETS}  # type: ignore[arg-type]
    assert set(tiny_result["targets"].values()) <= {"PASS", "FAIL"}  # type: ignore[attr-defined]


def test_main_prints_the_table_then_the_json_line_last(
    tiny_result: dict[str, object], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_main, "run", lambda sizes, quick: tiny_result)
    status = bench_main.main(["--quick"])
    out = capsys.readouterr().out.rstrip("\n").splitlines()
    assert "| figure" in out[0]
    data = json.loads(out[-1])
    assert set(data) >= REQUIRED_KEYS
    assert status == (0 if data["all_pass"] else 1)
    assert bench_main.main(["--quick", "--json-only"]) == status
    only = capsys.readouterr().out.strip().splitlines()
    assert len(only) == 1 and json.loads(only[0]) == data


def test_targets_are_judged_on_their_bounds() -> None:
    good = {"ami_vs_panoramisk": 1.5, "esl_vs_greenswitch": 2.0, "engine_outcomes_per_s": 200_000.0,
            "rss_growth_100k_to_1m": 1.1, "alert_latency_p99_ms": 100.0, "loop_lag_p99_ms": 10.0,
            "flood_loop_lag_p99_ms": 9.0, "flood_dropped": 0, "tick_ms_10k_alerts": 20.0}
    assert set(judge(good).values()) == {"PASS"}
    bad = {"ami_vs_panoramisk": 1.49, "esl_vs_greenswitch": float("nan"), "engine_outcomes_per_s": 199_999.0,
           "rss_growth_100k_to_1m": 1.11, "loop_lag_p99_ms": 10.1, "flood_loop_lag_p99_ms": 11.0, "flood_dropped": 1,
           "tick_ms_10k_alerts": 20.5}
    assert set(judge(bad).values()) == {"FAIL"}  # a missing or NaN figure fails too
    assert json.loads(json_line({"x": float("nan")})) == {"x": None}
