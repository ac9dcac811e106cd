"""Engine throughput: classify + windows + alert evaluation over pre-built outcomes.

``Pipeline`` with the bundled rule pack, ``DEFAULT_THRESHOLDS`` and the default alerting config,
no store (the store and the outbox are in the latency figure). The outcomes come from
``outcomes.outcome_cycle``: 100k distinct calling numbers over 4 trunks, the realistic scenario
mix, 200 calls/s of event time. They are built (and ``gc.freeze()``-d, so the collector does not
walk the benchmark's own input) before any clock starts.

One repetition = a fresh Pipeline; the first 100k outcomes create every scope key (timed
separately: the *cold* rate), then ``steady`` more outcomes cycle over the same numbers (the
headline rate: a running daemon's state). The rate is ``Pipeline.process`` alone: classify, count
in the windows, judge the touched thresholds, open / fire / resolve alerts.

``Pipeline.tick`` is timed apart (``tick_ms``), once, at the end state: the daemon calls it once per
wall-clock second whatever the call rate (it re-judges every live alert and flushes due groups,
rendering their notifications), so it is a fixed cost per second, not per outcome. Ticking inside
the timed loop with event time would compress 300 s of group timers into ~1 s of benchmark and
charge the engine hundreds of times the flushes a live daemon does.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.outcomes import outcome_cycle, scenario_templates
from blockradar.alerting.lifecycle import AlertingConfig
from blockradar.detect.pipeline import Classifier, Pipeline
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset

NUMBERS = 100_000


def _run(pipeline: Pipeline, outcomes: Sequence[CallOutcome]) -> float:
    """Seconds to process ``outcomes``."""
    process = pipeline.process
    started = time.perf_counter()
    for outcome in outcomes:
        process(outcome)
    return time.perf_counter() - started


def run_once(outcomes: Sequence[CallOutcome], classifier: Classifier, numbers: int = NUMBERS) -> dict[str, Any]:
    pipeline = Pipeline(classifier, alerting=AlertingConfig())
    gc.collect()
    cold_s = _run(pipeline, outcomes[:numbers])
    steady = outcomes[numbers:]
    steady_s = _run(pipeline, steady)
    started = time.perf_counter()
    pipeline.tick(pipeline.watermark + 1.0)  # every group is due: the most expensive kind of tick
    tick_s = time.perf_counter() - started
    return {
        "tick_ms": tick_s * 1000.0,
        "cold_per_s": numbers / cold_s,
        "steady_per_s": len(steady) / steady_s if steady else 0.0,
        "alerts_live": pipeline.lifecycle.pending_or_firing,
        "keys": sum(len(g.windows) for g in pipeline.groups),
    }


def measure(steady: int, repeats: int, progress: Callable[[str], None] = lambda _: None,
            numbers: int = NUMBERS) -> dict[str, Any]:
    classifier = load_ruleset()
    outcomes = list(outcome_cycle(numbers + steady, numbers, templates=scenario_templates()))
    gc.freeze()  # the input is the benchmark's, not the engine's: keep it out of the collector's walks
    try:
        runs = []
        for i in range(repeats):
            runs.append(run_once(outcomes, classifier, numbers))
            progress(f"engine {i + 1}/{repeats}: {runs[-1]['steady_per_s']:,.0f} outcomes/s "
                     f"(cold {runs[-1]['cold_per_s']:,.0f}/s)")
    finally:
        gc.unfreeze()
    return {
        "steady": [r["steady_per_s"] for r in runs],
        "cold": [r["cold_per_s"] for r in runs],
        "tick_ms": [r["tick_ms"] for r in runs],
        "alerts_live": runs[-1]["alerts_live"],
        "keys": runs[-1]["keys"],
        "outcomes": numbers + steady,
    }
