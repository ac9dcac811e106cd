"""The daemon in-process: reload swaps rules atomically or keeps the old ones, and the self-alerts
(PBX link down, reload failed) fire and resolve through the notifiers."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

from blockradar.alerting.notifiers.base import Notification
from blockradar.config import load_config
from blockradar.daemon import Daemon
from blockradar.testing.ami import AmiServer


class Inbox:
    """A notifier that keeps what it is sent: the stand-in for Slack at the edge of the system."""

    name = "inbox"
    rate_per_s = None

    def __init__(self) -> None:
        self.received: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.received.append(notification)

    def describe(self) -> str:
        return "inbox"

    def titles(self) -> list[str]:
        return [f"{n.status}:{n.alerts[0].get('threshold')}" for n in self.received]


async def until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "blockradar.yaml"
    path.write_text(textwrap.dedent(body))
    return path


RULE = """\
version: 1
rules:
  - {name: acme-603-is-provider, source: ACME guide, match: {sip_code: 603, trunk: acme}, category: provider_block}
"""


@contextlib.asynccontextmanager
async def daemon_with_rule_file(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Path, Inbox]]:
    """A running daemon whose config layers ``acme.yaml`` (empty at first) on the default rules."""
    rules = tmp_path / "acme.yaml"
    rules.write_text("version: 1\n")
    path = config_file(tmp_path, f"""\
        rules: [default, {rules}]
        store: {tmp_path / "s.db"}
        http: null
        """)
    inbox = Inbox()
    daemon = Daemon(load_config(path), extra_notifiers=[inbox])
    await daemon.start()
    try:
        yield daemon, rules, inbox
    finally:
        await daemon.stop(flush_s=2)


async def test_reload_swaps_or_keeps_rules(tmp_path: Path):
    async with daemon_with_rule_file(tmp_path) as (daemon, rules, inbox):
        before = daemon.ruleset
        from blockradar.outcome import CallOutcome

        call = CallOutcome("asterisk", "x", "1", sip_code=603, trunk="acme", ended_at=time.time())
        assert before.classify(call).category == "declined"

        rules.write_text("version: 1\nrules:\n  - {name: broken, source: s, category: nope, match: {}}\n")
        assert daemon.reload() is False
        assert daemon.ruleset is before and daemon.last_reload["ok"] is False
        assert f"{rules}:3:" in daemon.last_reload["error"]
        await until(lambda: "firing:blockradar-config-reload-failed" in inbox.titles())

        rules.write_text(RULE)
        assert daemon.reload() is True
        assert daemon.ruleset is not before
        assert daemon.ruleset.classify(call).category == "provider_block"
        await until(lambda: "resolved:blockradar-config-reload-failed" in inbox.titles())
        assert inbox.titles().count("firing:blockradar-config-reload-failed") == 1


async def test_link_down_self_alert_fires_and_resolves(tmp_path: Path):
    async with AmiServer(username="br", secret="pw") as ami:
        await ami.stop_listening()  # the PBX is down: connects are refused
        path = config_file(tmp_path, f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw, backoff_initial: 0.1s,
                  backoff_max: 0.3s}}
            store: {tmp_path / "s.db"}
            http: null
            self_health: {{link_down_after: 1s}}
            """)
        inbox = Inbox()
        daemon = Daemon(load_config(path), extra_notifiers=[inbox])
        await daemon.start()
        try:
            await until(lambda: "firing:blockradar-pbx-link-down" in inbox.titles())
            ok, report = daemon.health_report()
            assert not ok and report["self_alerts"][0]["alert"] == "pbx-link-down"
            assert "pbx1" in inbox.received[0].alerts[0]["description"]
            assert "pw" not in inbox.received[0].alerts[0]["description"].split("pbx1", 1)[1]
            await ami.listen_again()
            await until(lambda: "resolved:blockradar-pbx-link-down" in inbox.titles())
            ok, report = daemon.health_report()
            assert ok and report["self_alerts"] == []
        finally:
            await daemon.stop(flush_s=2)


async def test_wrong_secret_pages_auth_failing(tmp_path: Path):
    async with AmiServer(username="br", secret="right", auth_fail_delay=0.05) as ami:
        path = config_file(tmp_path, f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: wrong-secret-value}}
            store: {tmp_path / "s.db"}
            http: null
            self_health: {{link_down_after: 1h, auth_failing_after: 0s}}
            """)
        inbox = Inbox()
        daemon = Daemon(load_config(path), extra_notifiers=[inbox])
        await daemon.start()
        try:
            await until(lambda: "firing:blockradar-pbx-auth-failing" in inbox.titles())
            alert = inbox.received[-1].alerts[0]
            assert alert["scope"] == {"connector": "pbx1"} and "auth_failed" in alert["description"]
            assert "wrong-secret-value" not in repr(inbox.received)
            assert daemon.health_report()[1]["connectors"][0]["state"] == "auth_failed"
        finally:
            await daemon.stop(flush_s=2)
