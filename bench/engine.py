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


# -- ticks with 10,000 live alerts -------------------------------------------------------------------

TICK_ALERTS = 10_000
TICK_SECONDS = 660  # eleven minutes of daemon ticks: group_wait, two group_intervals, two bucket boundaries


def measure_ticks(progress: Callable[[str], None] = lambda _: None, alerts: int = TICK_ALERTS,
                  seconds: int = TICK_SECONDS) -> dict[str, Any]:
    """The daemon's ticks with ``alerts`` live alerts, on a real store: one tick per second of event time,
    each sliced as the daemon does (``TICK_SLICE_S`` per slice, more slices while ``behind``), with the
    realistic traffic going on between them (200 calls/s over 100k numbers). ``slice_max_ms``: the
    longest the event loop was held by a tick slice; ``tick_max_ms``: the most work one tick caused. A pause
    of Python's cyclic garbage collector that happens to fall in a slice is not the tick's cost: it is
    taken out of the slice and reported apart (``gc_pause_max_ms``), because it would stop the loop
    wherever it fell."""
    import tempfile
    from pathlib import Path

    from blockradar.daemon import TICK_SLICE_S
    from blockradar.store import Store

    classifier = load_ruleset()
    templates = scenario_templates()
    warm = list(outcome_cycle(NUMBERS, NUMBERS, templates=templates))
    start = (warm[-1].ended_at or 0.0) + 0.01
    block = templates["608"][0]
    blocks = [block.replace(call_id=f"tick-block-{i}", caller_number=f"+1557{i:07d}", trunk=f"carrier{1 + i % 4}",
                            started_at=start + i * 0.001 - 5, ended_at=start + i * 0.001) for i in range(alerts)]
    steady = list(outcome_cycle(200 * seconds, NUMBERS, templates=templates, start=start + alerts * 0.001,
                                offset=NUMBERS))
    with tempfile.TemporaryDirectory(prefix="bench-ticks-") as tmp:
        store = Store(Path(tmp) / "state.db")
        sent: list[Any] = []
        pipeline = Pipeline(classifier, alerting=AlertingConfig(), store=store, emit=sent.append)
        for outcome in warm:
            pipeline.process(outcome)
        for outcome in blocks:
            pipeline.process(outcome)
        live = pipeline.lifecycle.pending_or_firing
        progress(f"ticks: {live:,} live alerts, {seconds} ticks of the daemon")
        slices: list[float] = []
        ticks: list[float] = []
        gc_in_slice = [0.0]  # the collector's pauses inside the slice being timed (not the tick's own cost)
        gc_pauses: list[float] = []
        gc_started = [0.0]

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                pause = time.perf_counter() - gc_started[0]
                gc_pauses.append(pause)
                gc_in_slice[0] += pause

        gc.callbacks.append(on_gc)
        now = start + alerts * 0.001
        feed = iter(steady)
        pending = next(feed, None)
        for _ in range(seconds):
            now += 1.0
            while pending is not None and (pending.ended_at or 0.0) <= now:
                pipeline.process(pending)
                pending = next(feed, None)
            total = 0.0
            while True:
                gc_in_slice[0] = 0.0
                began = time.perf_counter()
                with store.batch():
                    pipeline.tick(now, TICK_SLICE_S)
                took = time.perf_counter() - began - gc_in_slice[0]
                slices.append(took)
                total += took
                if not pipeline.behind:
                    break
            ticks.append(total)
        gc.callbacks.remove(on_gc)
        store.close()
    slices.sort()
    return {
        "alerts_live": live,
        "slice_max_ms": slices[-1] * 1000.0,
        "slice_p99_ms": slices[int(0.99 * (len(slices) - 1))] * 1000.0,
        "tick_max_ms": max(ticks) * 1000.0,
        "slices": len(slices),
        "notifications": len(sent),
        "gc_pause_max_ms": max(gc_pauses, default=0.0) * 1000.0,
    }
