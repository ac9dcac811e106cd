"""``blockradar replay FILE ...``: run recorded AMI/ESL streams through the normalizer and classifier.

Prints a table for a person, or with ``--json`` one JSON object per line: ``{"kind": "outcome", ...}``
for every call. Outcomes of several files are merged in event-time order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from blockradar.actions.planner import ActionPlanner
from blockradar.classification import Classification
from blockradar.cli.common import print_json, table
from blockradar.clock import TICK_S
from blockradar.config import ConfigError, DaemonConfig, load_config
from blockradar.connectors.legs import LegVerdict
from blockradar.numbers import DEFAULT_REGION, NumberPlan
from blockradar.outcome import CallOutcome, iso
from blockradar.recordings import ReadSettings, RecordingError, read_recording
from blockradar.ruleset import RuleSet, build_ruleset


def outcome_record(outcome: CallOutcome, result: Classification) -> dict[str, Any]:
    return {
        "kind": "outcome",
        "pbx": outcome.pbx,
        "connector": outcome.connector,
        "call_id": outcome.call_id,
        "sip_call_id": outcome.sip_call_id,
        "caller_number": outcome.caller_number,
        "caller_name": outcome.caller_name,
        "callee_number": outcome.callee_number,
        "caller_number_raw": outcome.caller_number_raw,
        "callee_number_raw": outcome.callee_number_raw,
        "trunk": outcome.trunk,
        "sip_code": outcome.sip_code,
        "sip_phrase": outcome.sip_phrase,
        "reason": outcome.reason,
        "call_info": outcome.call_info,
        "headers": dict(outcome.headers),
        "q850_cause": outcome.q850_cause,
        "pbx_cause": outcome.pbx_cause,
        "answered": outcome.answered,
        "talk_s": outcome.talk_s,
        "ended_at": iso(outcome.ended_at),
        "category": result.category,
        "confidence": result.confidence,
        "rule": result.rule.name,
        "redress": outcome.redress.to_dict() if outcome.redress else None,
    }


def replay_records(outcomes: list[CallOutcome], ruleset: RuleSet, config: DaemonConfig | None,
                   with_alerts: bool) -> list[dict[str, Any]]:
    """Outcome and alert records in event-time order, the pipeline driven by the recording's clock."""
    from blockradar.alerting.lifecycle import AlertingConfig, alert_event
    from blockradar.detect.pipeline import Pipeline

    records: list[dict[str, Any]] = []
    if not with_alerts:
        return [outcome_record(o, ruleset.classify(o)) for o in outcomes]
    thresholds = config.effective_thresholds() if config else None
    alerting = config.alerting if config else AlertingConfig()
    # the config's actions, backtested: one record per decision (apply, restore, held), on the recording's clock
    planner = ActionPlanner(config.actions) if config and config.actions else None

    def transition(snap: Any) -> None:
        records.append(alert_event(snap))
        if planner is not None:
            records.extend(d.to_dict() for d in planner.on_transition(dict(snap)))

    pipeline = Pipeline(ruleset, thresholds, alerting, emit=lambda n: None, on_transition=lambda alert, snap:
                        transition(snap))

    def tick(now: float) -> None:
        pipeline.tick(now)
        if planner is not None:
            records.extend(d.to_dict() for d in planner.tick(now))

    clock: list[float] = []  # the last tick

    def advance(to: float) -> None:
        """Tick once a second of the recording's time up to ``to``, as the daemon's ticker does: alerts
        resolve and restores fall due in the gaps between calls, not at the next call."""
        t = clock[0] + TICK_S if clock else to
        while t < to:
            tick(t)
            t += TICK_S
        tick(to)
        clock[:] = [to]

    for outcome in outcomes:
        if outcome.ended_at is not None:
            advance(outcome.ended_at)
        slot = len(records)
        records.append({})  # the outcome's line goes before the alerts it triggers
        records[slot] = outcome_record(outcome, pipeline.process(outcome))
    if clock:
        end = clock[0]
        records.append({"kind": "recording-end", "at": iso(end)})
        # then the clock runs on with no more calls, until the alerts have resolved and the actions restored
        # (what would have followed had the traffic stopped there), at most until everything could have
        horizon = end + settle_s(pipeline, alerting, planner)
        while clock[0] < horizon and not settled(pipeline, planner):
            advance(min(clock[0] + TICK_S, horizon))
    return records


def settle_s(pipeline: Any, alerting: Any, planner: ActionPlanner | None) -> float:
    """How long after the last call the alerts and actions can still change: the longest window with its
    clear timer, a group interval, the longest ``restore_after``."""
    windows = max((th.window + (th.keep_firing_for or th.window) for th in pipeline.thresholds), default=0.0)
    restore = max((a.restore_after or 0.0 for a in planner.actions), default=0.0) if planner else 0.0
    return windows + alerting.group_interval + restore + 2 * TICK_S


def settled(pipeline: Any, planner: ActionPlanner | None) -> bool:
    """No alert firing or pending, no restore due, no apply waiting for room."""
    if any(alert.state in ("firing", "pending") for group in pipeline.groups for th in group.thresholds
           for alert in th.active.values()):
        return False
    return planner is None or not any(g.restore_due or g.waiting for g in planner.guards.values())


def join_offline(outcomes: list[CallOutcome], responses: list[Any],
                 config: DaemonConfig | None) -> tuple[list[CallOutcome], dict[str, int]]:
    """The live daemon's join on the recordings' clock: responses and outcomes in event-time order, an
    outcome waiting ``hep.wait`` for a response that comes after it."""
    import dataclasses

    from blockradar.connectors.hep.join import HepJoin

    hep = config.hep if config is not None and config.hep is not None else None
    joined: list[CallOutcome] = []
    join = HepJoin(joined.append, wait_s=hep.wait if hep else 2.0, window_s=hep.window if hep else 10.0,
                   max_pending=hep.max_pending if hep else 10_000, trunks=hep.trunks if hep else None)
    events: list[tuple[float, int, Any]] = [(r.at, 0, r) for r in responses]
    events += [(o.ended_at if o.ended_at is not None else float("inf"), 1, o) for o in outcomes]
    events.sort(key=lambda e: (e[0], e[1]))
    for at, side, item in events:
        if at != float("inf"):
            join.tick(at)
        if side == 0:
            join.add_response(item, at)
        else:
            join.add_outcome(item, at if at != float("inf") else 0.0)
    join.flush()
    join.tick(float("inf"))  # the responses nobody claimed are orphans
    joined.sort(key=lambda o: o.ended_at if o.ended_at is not None else float("inf"))
    return joined, dataclasses.asdict(join.stats)


def read_settings(config: DaemonConfig | None, name: str | None, numbers: NumberPlan,
                  on_leg: Callable[[LegVerdict], None] | None) -> ReadSettings:
    """The connector settings of ``config`` (the named connector, else the first of each kind)."""
    if config is None:
        if name is not None:
            raise click.BadParameter("needs --config", param_hint="--connector")
        return ReadSettings(numbers=numbers, on_leg=on_leg)
    hep = config.hep
    specs = [c for c in config.connectors if name is None or c.name == name]
    if name is not None and not specs:
        raise click.BadParameter(f"no connector {name!r} in the config", param_hint="--connector")
    ami = next((c for c in specs if c.type == "asterisk"), None)
    esl = next((c for c in specs if c.type == "freeswitch"), None)
    return ReadSettings(numbers=numbers, on_leg=on_leg, trunks=ami.trunks if ami else None,
                        gateways_only=esl.gateways_only if esl else True, gateways=esl.gateways if esl else None,
                        gateway_names=esl.gateway_names if esl else None, hep=hep)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Take rules, thresholds and alerting from this daemon config (default: the shipped ones).")
@click.option("--rules", "rule_files", multiple=True, metavar="FILE",
              help="Rule files layered on top of the default pack (repeatable; with --config, on top of its rules).")
@click.option("--region", default=None, metavar="CC",
              help="Default region for national numbers (ISO 3166, e.g. US, GB); default: the config's "
                   "numbers.default_region, else US.")
@click.option("--connector", "connector_name", default=None, metavar="NAME",
              help="With --config: read as this connector does (trunks, gateways); default: the first of the "
                   "recording's kind.")
@click.option("--legs", "show_legs", is_flag=True,
              help="Also say, for every leg, whether it counted as an outbound carrier attempt and why not.")
@click.option("--no-alerts", is_flag=True, help="Only classify; do not run thresholds and alerts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (kind: outcome | alert).")
@click.option("--stats", is_flag=True, help="Also print what each reader counted (frames, parse errors, ...).")
def replay(files: tuple[str, ...], config_path: str | None, rule_files: tuple[str, ...], region: str | None,
           connector_name: str | None, show_legs: bool, no_alerts: bool, as_json: bool, stats: bool) -> None:
    """Replay recorded AMI or ESL streams (format detected from content) through the classifier and,
    unless --no-alerts, the thresholds and alert lifecycle, on the recording's own clock. HEP recordings
    among the files give the carrier's own responses, joined to the outcomes as the daemon joins them."""
    config: DaemonConfig | None = None
    base_rules = ["default"]
    if config_path:
        try:
            config = load_config(config_path).config
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
        base_rules = list(config.rules)
    ruleset, report = build_ruleset([*base_rules, *rule_files])
    if ruleset is None:
        for problem in report.errors:
            click.echo(str(problem), err=True)
        sys.exit(2)
    try:
        numbers = NumberPlan(region or (config.numbers.default_region if config else DEFAULT_REGION))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--region") from None
    legs: list[LegVerdict] = []
    settings = read_settings(config, connector_name, numbers, legs.append if show_legs else None)
    outcomes: list[CallOutcome] = []
    responses: list[Any] = []
    for path in files:
        try:
            recording = read_recording(path, settings=settings)
        except RecordingError as exc:
            click.echo(f"blockradar replay: {exc}", err=True)
            sys.exit(2)
        outcomes.extend(recording.outcomes)
        responses.extend(recording.responses)
        if stats:  # what the reader counted: a JSON line with --json, else words (on stderr beside the records)
            counted = {"kind": "reader-stats", "file": str(path), "format": recording.format,
                       "outcomes": len(recording.outcomes), **dict(recording.stats)}
            if as_json:
                print_json(counted)
            else:
                click.echo(f"{path}: {recording.format}, {len(recording.outcomes)} outcome(s); "
                           + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dict(recording.stats).items()),
                           err=True)
    outcomes.sort(key=lambda o: o.ended_at if o.ended_at is not None else float("inf"))
    if responses:
        outcomes, joined = join_offline(outcomes, responses, config)
        if stats and as_json:
            print_json({"kind": "hep-join", **joined})
        elif stats:
            click.echo("HEP join: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in joined.items()), err=True)
    records = replay_records(outcomes, ruleset, config, with_alerts=not no_alerts)
    if as_json:
        for verdict in legs:
            print_json({"kind": "leg", "trunk": verdict.trunk, "callee_number": verdict.callee,
                        "counted": verdict.counted, "reason": verdict.reason, "why": verdict.explain()})
        for record in records:
            print_json(record)
        return
    if show_legs:
        click.echo(table(["trunk", "dialled", "leg"], [[v.trunk, v.callee, v.explain()] for v in legs]))
        click.echo("")
    calls = [r for r in records if r["kind"] == "outcome"]
    alerts = [r for r in records if r["kind"] == "alert"]
    rows = [[r["ended_at"], r["caller_number"], r["callee_number"], r["trunk"], r["sip_code"], r["sip_phrase"],
             r["category"], r["confidence"], (r["redress"] or {}).get("url")] for r in calls]
    click.echo(table(["ended", "caller", "callee", "trunk", "code", "phrase", "category", "conf", "redress"], rows))
    if alerts:
        click.echo("")
        click.echo(table(["at", "alert", "state", "severity", "scope", "count", "attempts"],
                         [[a["at"], a["threshold"], a["state"], a["severity"],
                           ", ".join(f"{k}={v}" for k, v in a["scope"].items()), a["count"], a["attempts"]]
                          for a in alerts]))
    actions = [r for r in records if r["kind"] == "action"]
    if actions:
        click.echo("")
        click.echo(table(["at", "action", "phase", "number", "dry run", "why held / command"],
                         [[iso(a["at"]), a["action"], a["phase"], a["caller_number"], "yes" if a["dry_run"] else "no",
                           a.get("reason") or " ".join(a.get("command") or [])] for a in actions]))
    click.echo(f"\n{len(calls)} outcome(s), {len(alerts)} alert transition(s)"
               + (f", {len(actions)} action decision(s)" if actions else "") + f" from {len(files)} file(s)")
