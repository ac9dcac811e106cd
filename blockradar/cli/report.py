"""``blockradar report [--since 24h] [--json]``: per calling number and per trunk, worst first."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from blockradar.cli.common import print_json, table
from blockradar.config import ConfigError, load_config
from blockradar.durations import parse_duration
from blockradar.numbers import DEFAULT_REGION, NumberPlan
from blockradar.outcome import iso
from blockradar.report import build_report
from blockradar.ruleset import RuleSetError, load_ruleset
from blockradar.store import Store

DEFAULT_STORE = "/var/lib/blockradar/state.db"


@click.command()
@click.option("--since", default="24h", show_default=True, help="How far back, e.g. 1h, 24h, 7d.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Read the store path and rules from this daemon config.")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), help=f"SQLite store (default {DEFAULT_STORE}).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="Rows per table.")
@click.option("--number", "numbers", multiple=True, metavar="NUMBER",
              help="Only calls from this calling number, in any form (5557650003 is +15557650003); repeatable.")
@click.option("--trunk", "trunks", multiple=True, metavar="TRUNK", help="Only calls through this trunk; repeatable.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: one object per number, trunk and alert, then a summary.")
def report(since: str, config_path: str | None, store_path: str | None, limit: int, numbers: tuple[str, ...],
           trunks: tuple[str, ...], as_json: bool) -> None:
    """Attempts, answer rate, analytics blocks (603+/608/607/603), block rate, last redress and alerts
    per calling number and per trunk, from the daemon's store."""
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    rules = None
    region = DEFAULT_REGION
    if config_path:
        try:
            loaded = load_config(config_path)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
        store_path = store_path or loaded.config.store
        rules = loaded.config.rules
        region = loaded.config.numbers.default_region
    path = Path(store_path or DEFAULT_STORE)
    if not path.exists():
        click.echo(f"blockradar report: no store at {path} (give --store or --config)", err=True)
        sys.exit(2)
    try:
        ruleset = load_ruleset(rules)
    except RuleSetError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    since_ts = time.time() - window
    plan = NumberPlan(region)
    wanted_numbers = {plan.text(n) for n in numbers} - {None}
    wanted_trunks = set(trunks)
    with Store(path) as store:
        rows = (r for r in store.report_rows(since_ts)
                if (not wanted_numbers or r["caller_number"] in wanted_numbers)
                and (not wanted_trunks or r["trunk"] in wanted_trunks))
        history = store.alert_history(since_ts)
        decisions = [d for d in store.action_log(since_ts)
                     if (not wanted_numbers or d["caller_number"] in wanted_numbers)
                     and (not wanted_trunks or d["trunk"] in wanted_trunks)]
        reports = build_report(rows, history, ruleset.analytics_categories())
    numbers, trunk_rows = reports["caller_number"][:limit], reports["trunk"][:limit]
    if as_json:  # JSON lines: one per number, per trunk, per alert episode, then the summary
        for kind, items in (("number", numbers), ("trunk", trunk_rows)):
            for r in items:
                print_json({"kind": kind, **r.to_dict()})
        for episode in history:
            print_json({"kind": "alert", **episode,
                        "state": "firing" if episode["resolved_at"] is None else "resolved"})
        for decision in decisions:
            print_json({"kind": "action", **decision})
        print_json({"kind": "report-summary", "since": since, "numbers": len(numbers), "trunks": len(trunk_rows),
                    "alerts": len(history),
                    "alerts_resolved": sum(1 for e in history if e["resolved_at"] is not None),
                    "actions": len(decisions)})
        return
    headers = ["attempts", "answer rate", "blocks", "603+", "608", "607", "603", "block rate", "last redress",
               "alerts"]
    for scope, title in (("caller_number", "calling number"), ("trunk", "trunk")):
        cells: list[list[Any]] = [
            [r.value, r.attempts, f"{r.answer_rate:.0%}", r.analytics_blocks, r.sip_603plus, r.sip_608,
                 r.sip_607, r.sip_603, f"{r.block_rate:.1%}",
                 (r.last_redress or {}).get("url") or (r.last_redress or {}).get("tel") or "",
                 ", ".join(sorted(r.alerts))] for r in reports[scope][:limit]]
        click.echo(f"per {title}, last {since} (worst first):")
        click.echo(table([title, *headers], cells) if cells else "  (no calls)")
        click.echo("")
    if history:
        click.echo(f"alerts, last {since} (newest first; resolved ones too):")
        click.echo(table(["fired", "alert", "severity", "about", "resolved"],
                         [[iso(e["fired_at"]), e["threshold"], e["severity"] or "",
                           ", ".join(f"{k}={v}" for k, v in e["scope"].items()),
                           iso(e["resolved_at"]) if e["resolved_at"] else "(firing)"] for e in history]))
    if decisions:
        click.echo("")
        click.echo(f"actions, last {since}:")
        click.echo(table(["at", "action", "phase", "number", "status", "result", "why / what"],
                         [[iso(d["at"]), d["action"], d["phase"], d["caller_number"], d["status"], d["result"] or "-",
                           d["reason"] or " ".join(d["command"] or [])] for d in decisions]))
