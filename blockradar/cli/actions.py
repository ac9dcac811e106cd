"""``blockradar actions list|history|hold|release|undo``: what the configured actions decided and did (the
daemon's audit log in the store: each decision with its status, attempts and result), which numbers rest
now, an operator's hold on a number (no apply, no restore for it until it is released), and ``undo ID``:
put back now the number an apply rested. The daemon reads holds and undos every few seconds; with no
daemon running they wait for its next start."""

from __future__ import annotations

import getpass
import time

import click

from blockradar.actions.planner import why_or_what
from blockradar.cli.common import print_json, table
from blockradar.cli.silence import _open_store, _region_from_config, config_option, store_option
from blockradar.durations import parse_duration
from blockradar.numbers import DEFAULT_REGION, NumberPlan
from blockradar.outcome import iso
from blockradar.store import StoreLock


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
    click.echo(table(["number", "action", "since", "back at", "apply", "dry run", "status", "alert"],
                     [[r["caller_number"], r["action"], iso(r["resting_since"]), iso(r["restore_due"]) or "-",
                       f"#{r['id']}" if r["id"] else "-", "yes" if r["dry_run"] else "no", r["status"] or "-",
                       r["threshold"] or "-"] for r in resting]) if resting else "no number rests")
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
    click.echo(table(["id", "at", "action", "phase", "number", "status", "tries", "alert", "result", "why / what"],
                     [[f"#{r['id']}", iso(r["at"]), r["action"], r["phase"], r["caller_number"], r["status"],
                       str(r["attempts"]), r["threshold"], r["result"] or "-", why_or_what(r)] for r in rows],
                     max_width=60)
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


@actions.command("undo")
@click.argument("apply_id", metavar="ID")
@click.option("--comment", "-c", default="", help="Why (kept in the history).")
@click.option("--author", default=None, help="Who (default: the current user).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line: the queued request.")
@store_option
@config_option
def undo(apply_id: str, comment: str, author: str | None, as_json: bool, store: str | None,
         config: str | None) -> None:
    """Put back now the number that apply ID rested (ID from `actions history` or `actions list`). It may
    rest again on a new alert once its cooldown is over; to keep it in rotation, hold it."""
    try:
        log_id = int(apply_id.lstrip("#"))
    except ValueError:
        raise click.BadParameter(f"not an action id: {apply_id!r}", param_hint="ID") from None
    with _open_store(store, config) as s:
        row = s.action_row(log_id)
        if row is None or row["phase"] != "apply":
            raise click.ClickException(f"#{log_id} is not an apply (see blockradar actions history)")
        resting = [r for r in s.resting_numbers() if r["action"] == row["action"]
                   and r["caller_number"] == row["caller_number"]]
        if not resting:
            raise click.ClickException(f"{row['caller_number']} does not rest ({row['action']}): nothing to undo")
        if resting[0]["id"] is not None and resting[0]["id"] != log_id:
            raise click.ClickException(f"#{log_id} is an earlier apply; {row['caller_number']} rests now by "
                                       f"#{resting[0]['id']}: undo that one")
        request = s.action_request("undo", log_id, row["action"], row["caller_number"], author or getpass.getuser(),
                                   comment, time.time())
        running = StoreLock(s.path).held_by_another()
    if as_json:
        print_json({"kind": "action-undo", "request": request, "apply": log_id, "action": row["action"],
                    "caller_number": row["caller_number"], "daemon_running": running})
        return
    where = "within a few seconds" if running else "when it starts (no daemon holds this store now)"
    click.echo(f"undo #{log_id} queued (request {request}): the daemon puts {row['caller_number']} back {where}")
