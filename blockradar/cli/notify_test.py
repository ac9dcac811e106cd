"""``blockradar notify-test --config FILE``: send a clearly marked test alert through every notifier.

Reports per notifier ``OK`` or the error (secrets masked) and exits 1 when any failed.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import click

from blockradar.alerting.notifiers import build_notifiers
from blockradar.alerting.notifiers.base import AlertDict, Notification, Notifier, NotifyError
from blockradar.cli.common import print_json
from blockradar.config import ConfigError, load_config, read_env_file
from blockradar.outcome import iso


def load_notifier_entries(path: str) -> list[dict[str, Any]]:
    """The validated ``notifiers:`` list of a daemon config (``${VAR}`` and ``*_file`` resolved)."""
    try:
        entries = load_config(path).config.notifiers
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not entries:
        raise click.ClickException(f"{path}: no 'notifiers:' list")
    return entries


def sample_notification(now: float) -> Notification:
    alert = AlertDict(
        fingerprint="notify-test|caller_number=+15550000000",
        threshold="notify-test",
        description="TEST: a sample alert from blockradar notify-test; nothing is being blocked",
        severity="info",
        state="firing",
        labels={"threshold": "notify-test", "severity": "info", "caller_number": "+15550000000", "trunk": "test"},
        scope={"caller_number": "+15550000000"},
        count=1, attempts=1, rate=1.0, window_s=3600.0,
        categories={"analytics_block": 1}, sip_codes={"603": 1},
        first_seen=iso(now), last_seen=iso(now), started_at=iso(now), fired_at=iso(now), resolved_at=None,
        samples=[{"call_id": "notify-test", "callee": "+15550000001", "code": 603, "phrase": "Network Blocked",
                  "category": "analytics_block", "at": iso(now)}],
        redress=[], what_to_do={"analytics_block": "Nothing: this is a test."},
    )
    return Notification(group_key="notify-test", group_labels={"threshold": "notify-test"}, status="firing",
                        alerts=[alert], created_at=now, test=True)


async def send_all(notifiers: list[Notifier], timeout_s: float) -> list[tuple[Notifier, str | None]]:
    notification = sample_notification(time.time())

    async def one(n: Notifier) -> tuple[Notifier, str | None]:
        try:
            await asyncio.wait_for(n.send(notification), timeout=timeout_s)
            return n, None
        except NotifyError as exc:
            return n, str(exc)
        except TimeoutError:
            return n, f"no answer within {timeout_s:g}s"
        except Exception as exc:  # report, never crash the command
            return n, f"unexpected {type(exc).__name__}"
        finally:
            close = getattr(n, "aclose", None)
            if close is not None:
                await close()

    return list(await asyncio.gather(*(one(n) for n in notifiers)))


@click.command("notify-test")
@click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Config file with a 'notifiers:' list.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait per notifier.")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help="Read ${VAR}s from this KEY=VALUE file too (e.g. /etc/blockradar/blockradar.env).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one per notifier, then a summary.")
def notify_test(config: str, timeout: float, env_file: str | None, as_json: bool) -> None:
    """Send a clearly marked test alert through each configured notifier and report OK or the error."""
    if env_file is not None:
        try:
            os.environ.update(read_env_file(env_file))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        notifiers = build_notifiers(load_notifier_entries(config))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError; it never echoes secrets
        raise click.ClickException(f"{config}: {exc}") from None
    results = asyncio.run(send_all(notifiers, timeout))
    failed = 0
    for notifier, error in results:
        describe = getattr(notifier, "describe", lambda n=notifier: n.name)()
        failed += error is not None
        if as_json:
            print_json({"kind": "notify-test", "notifier": notifier.name, "ok": error is None, "target": describe,
                        "error": error})
        elif error is None:
            click.echo(f"OK    {describe}")
        else:
            click.echo(f"FAIL  {describe}: {error}")
    if as_json:
        print_json({"kind": "notify-test-summary", "notifiers": len(results), "failed": failed})
    if failed:
        raise SystemExit(1)
