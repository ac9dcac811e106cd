"""``blockradar actions list|history|hold|release``: what the configured actions decided (the daemon's
audit log in the store), which numbers rest now, and an operator's hold on a number (the daemon reads
holds every few seconds: no apply, no restore for a held number until it is released)."""

from __future__ import annotations

import getpass
import time

import click

from blockradar.cli.common import print_json, table
from blockradar.cli.silence import _open_store, _region_from_config, config_option, store_option
from blockradar.durations import parse_duration
from blockradar.numbers import DEFAULT_REGION, NumberPlan
from blockradar.outcome import iso


def _number(raw: str, config: str | None) -> str:
    text = NumberPlan(_region_from_config(config) if config else DEFAULT_REGION).text(raw)
    if not text:
        raise click.BadParameter(f"not a number: {raw!r}", param_hint="NUMBER")
    return text


@click.group()
def actions() -> None:
    """What the configured actions decided, and an operator's hold on a number."""


@actions.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one per resting number, then the holds.")
@store_option
@config_option
def list_(as_json: bool, store: str | None, config: str | None) -> None:
    """The numbers at rest now (applied, not yet restored), and the numbers an operator holds."""
    with _open_store(store, config) as s:
        resting, holds = s.resting_numbers(), s.held_numbers()
    if as_json:
        for row in resting:
            print_json({"kind": "resting", **row})
        for hold in holds:
            print_json({"kind": "hold", **hold})
        print_json({"kind": "actions-summary", "resting": len(resting), "held": len(holds)})
        return
    click.echo(table(["number", "action", "since", "dry run", "alert"],
                     [[r["caller_number"], r["action"], iso(r["at"]), "yes" if r["dry_run"] else "no", r["threshold"]]
                      for r in resting]) if resting else "no number rests")
    if holds:
        click.echo("")
        click.echo(table(["held number", "since", "by", "why"],
                         [[h["caller_number"], iso(h["created_at"]), h["author"], h["comment"]] for h in holds]))


@actions.command("history")
@click.option("--since", default="24h", show_default=True, help="How far back, e.g. 1h, 24h, 7d.")
@click.option("--number", "number", default=None, help="Only this calling number (any form).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one per decision, then a summary.")
@store_option
@config_option
def history(since: str, number: str | None, as_json: bool, store: str | None, config: str | None) -> None:
    """Every decision (apply, restore, held) with its alert, oldest first."""
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    wanted = _number(number, config) if number else None
    with _open_store(store, config) as s:
        rows = s.action_log(time.time() - window, wanted)
    if as_json:
        for row in rows:
            print_json({"kind": "action", **row})
        print_json({"kind": "actions-history-summary", "since": since, "decisions": len(rows)})
        return
    click.echo(table(["at", "action", "phase", "number", "dry run", "alert", "why held / command"],
                     [[iso(r["at"]), r["action"], r["phase"], r["caller_number"], "yes" if r["dry_run"] else "no",
                       r["threshold"], r["reason"] or " ".join(r["command"] or [])] for r in rows])
               if rows else f"no action decided in the last {since}")


@actions.command("hold")
@click.argument("number")
@click.option("--comment", "-c", required=True, help="Why (shown in the list).")
@click.option("--author", default=None, help="Who (default: the current user).")
@store_option
@config_option
def hold(number: str, comment: str, author: str | None, store: str | None, config: str | None) -> None:
    """Freeze NUMBER: no action applies to it or restores it until it is released."""
    wanted = _number(number, config)
    with _open_store(store, config) as s:
        s.hold_number(wanted, author or getpass.getuser(), comment, time.time())
    click.echo(f"held {wanted}: the daemon leaves it as it is (within a few seconds)")


@actions.command("release")
@click.argument("number")
@store_option
@config_option
def release(number: str, store: str | None, config: str | None) -> None:
    """Let the actions act on NUMBER again."""
    wanted = _number(number, config)
    with _open_store(store, config) as s:
        found = s.release_number(wanted)
    if not found:
        raise click.ClickException(f"{wanted} is not held")
    click.echo(f"released {wanted}")
