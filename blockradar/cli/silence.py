"""``blockradar silence``: add, list and expire silences in the store the daemon reads.

``blockradar silence add caller_number=+15557650003 --for 2h --comment "known campaign"`` mutes
every alert whose labels match all matchers for two hours; the running daemon picks it up within
seconds (it re-reads silences from the store).
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from blockradar.alerting.silences import Matcher, Silence
from blockradar.config import ConfigError, load_config
from blockradar.durations import format_duration, parse_duration
from blockradar.numbers import DEFAULT_REGION, NumberPlan
from blockradar.outcome import iso
from blockradar.store import Store

DEFAULT_STORE = "/var/lib/blockradar/state.db"


def store_path_from_config(path: str) -> str:
    """The ``store:`` of a daemon config."""
    try:
        return load_config(path).config.store
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _region_from_config(path: str) -> str:
    """The ``numbers.default_region`` of a daemon config."""
    try:
        return load_config(path).config.numbers.default_region
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _open_store(store: str | None, config: str | None) -> Store:
    path = store or (store_path_from_config(config) if config else None) or DEFAULT_STORE
    if path != ":memory:" and not Path(path).parent.exists():
        raise click.ClickException(f"no store at {path} (give --store PATH or --config FILE)")
    return Store(path)


store_option = click.option("--store", "store", envvar="BLOCKRADAR_STORE", default=None,
                            help=f"SQLite store of the daemon (default: the config's store, else {DEFAULT_STORE}).")
config_option = click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None,
                             help="Config file whose 'store:' to use.")


@click.group()
def silence() -> None:
    """Mute alerts for a while (Alertmanager-style silences)."""


@silence.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--for", "duration", default="2h", show_default=True, help="How long, e.g. 30m, 2h, 1d.")
@click.option("--comment", "-c", required=True, help="Why (shown in the list).")
@click.option("--author", default=None, help="Who (default: the current user).")
@store_option
@config_option
def add(matchers: tuple[str, ...], duration: str, comment: str, author: str | None, store: str | None,
        config: str | None) -> None:
    """Add a silence: MATCHERS are label=value (also !=, =~ regex, !~), e.g. caller_number=+15557650003.
    Numbers in = / != matchers are written in E.164 as the alerts carry them (5557650003 -> +15557650003,
    in the config's numbers.default_region, US without --config)."""
    plan = NumberPlan(_region_from_config(config) if config else DEFAULT_REGION)
    try:
        parsed = tuple(Matcher.parse(m).with_numbers(plan) for m in matchers)
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("--for must be > 0")
    now = time.time()
    item = Silence(parsed, now, now + seconds, comment, author or _user(), now)
    with _open_store(store, config) as st:
        st.add_silence(item)
    click.echo(f"silence {item.id} added: {' '.join(map(str, parsed))} until {iso(item.ends_at)}")


@silence.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
@store_option
@config_option
def list_(as_json: bool, include_expired: bool, store: str | None, config: str | None) -> None:
    """List active silences."""
    now = time.time()
    with _open_store(store, config) as st:
        items = st.list_silences(include_expired=include_expired, now=now)
    if as_json:
        for item in items:
            click.echo(json.dumps({**item.to_dict(), "starts_at": iso(item.starts_at), "ends_at": iso(item.ends_at),
                                   "created_at": iso(item.created_at), "active": item.active(now)}))
        return
    if not items:
        click.echo("no silences")
        return
    rows = [("ID", "MATCHERS", "ENDS", "LEFT", "AUTHOR", "COMMENT")]
    for item in items:
        left = format_duration(max(0, round(item.ends_at - now))) if item.ends_at > now else "expired"
        rows.append((item.id, " ".join(map(str, item.matchers)), iso(item.ends_at) or "", left, item.author,
                     item.comment))
    _table(rows)


@silence.command("expire")
@click.argument("silence_id")
@store_option
@config_option
def expire(silence_id: str, store: str | None, config: str | None) -> None:
    """End a silence now."""
    with _open_store(store, config) as st:
        if not st.expire_silence(silence_id, time.time()):
            raise click.ClickException(f"no active silence {silence_id}")
    click.echo(f"silence {silence_id} expired")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def _table(rows: list[tuple[Any, ...]]) -> None:
    cells = [[_printable(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.flush()


def _printable(value: Any) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in str(value))
