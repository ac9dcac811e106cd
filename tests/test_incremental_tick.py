"""Incremental ticks (issue 12): ``Pipeline.tick`` judges only the alerts that are due, yet every alert
fires, resolves and is notified exactly when a tick that re-judges every live alert would do it; a
budgeted tick stops within its budget and the next slices finish the work; a notification lists at most
``alerting.max_alerts_listed`` alerts and counts the rest."""

from __future__ import annotations

import time

import pytest

from bench.outcomes import ENGINE_START, outcome_cycle, scenario_templates
from blockradar.alerting.lifecycle import AlertingConfig
from blockradar.detect.pipeline import Pipeline
from blockradar.detect.thresholds import DEFAULT_THRESHOLDS, ThresholdConfig
from blockradar.ruleset import load_ruleset

pytestmark = pytest.mark.timeout(120)
TICK_S = 3.0  # event seconds between ticks (the daemon: 1 s; coarser keeps the full-sweep twin fast)

EXTRA = [
    ThresholdConfig.model_validate(dict(name="slow-fire", scope=["caller_number"], categories=["analytics_block"],
                                        window="10m", count=2, **{"for": "90s"}, keep_firing_for="150s")),
    ThresholdConfig.model_validate(dict(name="trunk-rate-2w", scope=["trunk"], categories=["analytics_block"],
                                        window="5m", rate=0.01, min_attempts=5, bucket="30s")),
    ThresholdConfig.model_validate(dict(name="multi-window", scope=["caller_number", "trunk"],
                                        categories=["analytics_block", "unwanted"], window="20m", count=1)),
    ThresholdConfig.model_validate(dict(name="multi-window-short", scope=["caller_number", "trunk"],
                                        categories=["unwanted"], window="7m", count=1, bucket="100s")),
]


@pytest.fixture(scope="module")
def traffic():
    templates = scenario_templates()
    # 300 numbers for 40 min of event time, then only 20 of them for 60 min: the rest age out and resolve
    first = list(outcome_cycle(12_000, 300, templates=templates, calls_per_s=5.0))
    later = list(outcome_cycle(1_800, 20, templates=templates, calls_per_s=0.5, start=ENGINE_START + 2400,
                               offset=12_000))
    return first + later


def run(outcomes, *, sweep_every_tick: bool, config: AlertingConfig):
    transitions: list[tuple] = []
    pipeline = Pipeline(load_ruleset(), [*DEFAULT_THRESHOLDS, *EXTRA], config,
                        on_transition=lambda alert, snap: transitions.append(
                            (snap["fingerprint"], snap["state"], snap.get("fired_at"), snap.get("resolved_at"))))
    sent = []
    next_tick = ENGINE_START + TICK_S
    for outcome in outcomes:
        while outcome.ended_at >= next_tick:
            if sweep_every_tick:
                pipeline.lifecycle.request_sweep()
            sent += pipeline.tick(next_tick)
            next_tick += TICK_S
        pipeline.process(outcome)
    for _ in range(int(5400 / TICK_S)):  # 90 quiet minutes: everything resolves
        if sweep_every_tick:
            pipeline.lifecycle.request_sweep()
        sent += pipeline.tick(next_tick)
        next_tick += TICK_S
    notes = [(n.group_key, n.status, n.created_at, sorted((a["fingerprint"], a["change"]) for a in n.alerts))
             for n in sent]
    return transitions, notes, pipeline


def test_incremental_ticks_equal_full_sweeps(traffic):
    config = AlertingConfig(group_wait=10, group_interval=60, repeat_interval=600)
    full = run(traffic, sweep_every_tick=True, config=config)
    incremental = run(traffic, sweep_every_tick=False, config=config)
    transitions, notes, pipeline = incremental
    states = {state for _, state, _, _ in transitions}
    assert states == {"firing", "resolved"}
    assert sum(1 for t in transitions if t[1] == "resolved") >= 50  # the ageing really resolved alerts
    assert sorted(transitions, key=repr) == sorted(full[0], key=repr)  # same tick, any order
    assert notes == full[1]
    assert pipeline.lifecycle.pending_or_firing == 0


def test_a_budgeted_tick_stops_and_the_next_slices_finish(traffic):
    config = AlertingConfig(group_wait=10, group_interval=60, repeat_interval=600)
    pipeline = Pipeline(load_ruleset(), [*DEFAULT_THRESHOLDS, *EXTRA], config)
    for outcome in traffic[:12_000]:
        pipeline.process(outcome)
    live = pipeline.lifecycle.pending_or_firing
    assert live >= 300
    now = ENGINE_START + 2400 + 3 * 3600  # every window aged out: every live alert is due
    pipeline.lifecycle.request_sweep()
    slices = 0
    pipeline.tick(now, budget_s=0.0)  # a zero budget: stops after the first 64 alerts
    slices += 1
    assert pipeline.behind
    assert pipeline.lifecycle.pending_or_firing > 0
    while pipeline.behind:
        pipeline.tick(now, budget_s=0.0)
        slices += 1
        assert slices < 10_000
    assert slices >= live // 64
    # alerts resolve one tick after they clear (clear timers); the resolved ones are announced
    for step in range(1, 400):
        pipeline.tick(now + step)
    assert pipeline.lifecycle.pending_or_firing == 0


def test_a_notification_lists_at_most_max_alerts_listed(traffic):
    config = AlertingConfig(group_wait=0, group_by=["threshold"], max_alerts_listed=7)
    pipeline = Pipeline(load_ruleset(), DEFAULT_THRESHOLDS, config)
    sent = []
    for outcome in traffic[:12_000]:
        pipeline.process(outcome)
    sent += pipeline.tick(traffic[11_999].ended_at + 1)
    strong = [n for n in sent if n.group_labels == {"threshold": "number-strong-block"}]
    assert len(strong) == 1
    note = strong[0]
    firing = pipeline.lifecycle.groups[note.group_key].alerts
    assert len(firing) > 7
    assert len(note.alerts) == 7
    assert note.unlisted == {"new": len(firing) - 7}
    counts = sorted((a["count"] for a in note.alerts), reverse=True)
    assert counts[-1] >= max(a.matching for a in firing.values() if a.fingerprint not in
                             {x["fingerprint"] for x in note.alerts})  # the busiest numbers are listed
    from blockradar.alerting.notifiers.email import render_text
    from blockradar.alerting.notifiers.slack import build_payload
    from blockradar.alerting.notifiers.wording import changes
    more = f"and {len(firing) - 7:,} more alerts in this group not listed here"
    assert more in render_text(note)
    assert more in str(build_payload(note))
    assert type(note).from_json(note.to_json()).unlisted == note.unlisted
    assert changes(note) == ""  # all new
    assert all(a.notified for a in firing.values())  # counted in the message: announced


def test_a_tick_with_nothing_due_does_not_look_at_live_alerts(traffic):
    pipeline = Pipeline(load_ruleset(), DEFAULT_THRESHOLDS, AlertingConfig(group_wait=0))
    for outcome in traffic[:12_000]:
        pipeline.process(outcome)
    t = traffic[11_999].ended_at
    pipeline.tick(t + 0.5)
    assert pipeline.lifecycle.pending_or_firing >= 300
    started = time.perf_counter()
    pipeline.tick(t + 0.6)
    elapsed = time.perf_counter() - started
    assert not pipeline.lifecycle.due_pending(t + 0.6)
    # not a timing assertion on the machine: it only says nothing per alert was done (see bench for figures)
    assert elapsed < 0.5
