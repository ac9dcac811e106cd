"""Memory: does RSS follow scope keys, not calls? Measured in a fresh process.

``python -m bench.memory TOTAL NUMBERS`` (run by ``measure``) builds a Pipeline (bundled rules,
default thresholds and alerting, no store; notifications are handed to a sink that drops them, as
the daemon hands them to the outbox), then feeds it outcomes generated one at a time
(``outcomes.outcome_cycle``: the scenario mix over ``NUMBERS`` calling numbers), so no input list
inflates the heap, and ticks it once per ``TICK_S`` of event time.

Event time runs at ``NUMBERS / (1.1 * longest window)`` calls per second (25/s for 100k numbers and
the 1 h default windows), so the first ``NUMBERS`` outcomes span more than the longest window: by
then every scope key exists *and* its windows, evidence and alerts have reached their steady
state. (At 200 calls/s, 100k outcomes are 8 minutes: the 1 h windows, and the alerts they hold,
keep filling until 720k outcomes, which measures window fill, not a leak.)

RSS is read from ``/proc/self/statm`` after a ``gc.collect()``, before the first outcome, after
``NUMBERS`` and after ``TOTAL`` outcomes:

* ``rss_growth``: RSS after ``TOTAL`` / RSS after ``NUMBERS`` (target <= 1.1 for 1M / 100k);
* ``bytes_per_key``: (RSS after ``NUMBERS`` - RSS before) / live scope keys (the numbers plus the
  trunks): everything a key costs (dict entry, counters, evidence, its share of alerts).

A fresh process keeps what earlier figures allocated (streams, other pipelines) out of the RSS.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.outcomes import outcome_cycle, scenario_templates

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK_S = 60.0  # event seconds between ticks (the daemon: 1 s of wall time; coarser here to stay fast)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def _child(total: int, numbers: int) -> dict[str, Any]:
    from blockradar.alerting.lifecycle import AlertingConfig
    from blockradar.detect.pipeline import Pipeline
    from blockradar.detect.thresholds import DEFAULT_THRESHOLDS
    from blockradar.ruleset import load_ruleset

    pipeline = Pipeline(load_ruleset(), alerting=AlertingConfig(), emit=lambda notification: None)
    longest = max(t.window for t in DEFAULT_THRESHOLDS)
    calls_per_s = numbers / (1.1 * longest)
    stream = outcome_cycle(total, numbers, templates=scenario_templates(), calls_per_s=calls_per_s)
    process = pipeline.process
    first = next(stream)  # builds the generator's own tables before the first reading
    gc.collect()
    before = rss_bytes()
    next_tick = (first.ended_at or 0.0) + TICK_S

    def feed(count: int) -> None:
        nonlocal next_tick
        for _ in range(count):
            outcome = next(stream)
            process(outcome)
            if outcome.ended_at is not None and outcome.ended_at >= next_tick:
                pipeline.tick(outcome.ended_at)
                next_tick += TICK_S

    process(first)
    feed(numbers - 1)
    gc.collect()
    at_numbers = rss_bytes()
    keys = sum(len(g.windows) for g in pipeline.groups)
    alerts_at_numbers = pipeline.lifecycle.pending_or_firing
    feed(total - numbers)
    gc.collect()
    at_total = rss_bytes()
    return {
        "rss_before": before,
        "rss_at_numbers": at_numbers,
        "rss_at_total": at_total,
        "rss_growth": at_total / at_numbers,
        "bytes_per_key": (at_numbers - before) / keys,
        "keys": keys,
        "keys_at_total": sum(len(g.windows) for g in pipeline.groups),
        "alerts_live_at_numbers": alerts_at_numbers,
        "alerts_live_at_total": pipeline.lifecycle.pending_or_firing,
        "outcomes": total,
        "numbers": numbers,
        "calls_per_s": calls_per_s,
    }


def measure(total: int = 1_000_000, numbers: int = 100_000) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.memory", str(total), str(numbers)],
                         cwd=Path(__file__).resolve().parent.parent,  # where ``-m bench.memory`` is importable
                         capture_output=True, text=True, check=True, timeout=900)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]), int(sys.argv[2]))))
