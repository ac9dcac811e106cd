"""The ``alertmanager`` notifier against a real Prometheus Alertmanager (Debian's
``prometheus-alertmanager``, started by the test) that routes to a local webhook receiver: the daemon's
alert shows in Alertmanager's API with its labels, annotations and link, Alertmanager notifies its own
receiver, and the resolve reaches both; firing alerts are posted again while they fire, so Alertmanager
never resolves one on its own, and does once blockradar stops posting."""

from __future__ import annotations

import asyncio
import inspect
import logging
import textwrap
import time
from pathlib import Path

import pytest

from blockradar.alerting.notifiers import build_notifier
from blockradar.alerting.notifiers.alertmanager import am_labels
from blockradar.alerting.notifiers.base import Notification
from blockradar.config import load_config
from blockradar.connectors.base import LinkState
from blockradar.daemon import Daemon
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.testing import AmiServer, AmiSession
from tests.servers.alertmanager import Alertmanager
from tests.servers.http_sink import HttpSink

pytestmark = pytest.mark.timeout(90)

NUMBER = "+15557690001"


async def until(predicate, what: str, timeout: float = 30.0):
    """``predicate()`` (a value, or an awaitable of one) until it is truthy; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def am_posts(sink: HttpSink, status: str) -> list[dict]:
    """What Alertmanager sent its webhook receiver with this status."""
    return [r.json for r in sink.requests if isinstance(r.json, dict) and r.json.get("status") == status]


async def test_alertmanager_receives_shows_and_resolves_the_daemons_alert(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="blockradar")
    async with HttpSink() as sink, Alertmanager(tmp_path, sink.url) as am, \
            AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw}}
            thresholds:
              - {{name: number-blocked, scope: [caller_number], categories: [analytics_block], window: 4s,
                  bucket: 1s, count: 1, keep_firing_for: 1s, severity: critical, labels: {{team: dialer}}}}
            alerting: {{group_wait: 0s, group_interval: 1s, repeat_interval: 4h, group_by: [threshold, caller_number]}}
            notifiers:
              - {{type: alertmanager, url: "{am.url}", status_url: "http://blockradar.example:9108/",
                  refresh: 1s, ends_after: 1m}}
            store: {tmp_path / "state.db"}
            http: null
            """))
        daemon = Daemon(load_config(config))
        await daemon.start()
        try:
            await until(lambda: all(h.state == LinkState.CONNECTED for h in daemon.healths()), "the AMI login")
            spec = CallSpec("608", NUMBER, "+12125550100", "carrier-a", time.time())
            await ami.push(b"".join(TrafficBuilder().ami_frames(spec)))

            async def shown():
                return [a for a in await am.alerts() if a["labels"].get("caller_number") == NUMBER]

            (alert,) = await until(shown, "the alert in Alertmanager")
            assert alert["labels"] == {"alertname": "number-blocked", "caller_number": NUMBER, "severity": "critical",
                                       "team": "dialer", "source": "blockradar"}
            assert alert["status"]["state"] == "active"
            assert NUMBER in alert["annotations"]["summary"] and "608" in alert["annotations"]["sip_codes"]
            assert "Stop or slow dialing" in alert["annotations"]["what_to_do"]
            assert alert["generatorURL"] == f"http://blockradar.example:9108/numbers/{NUMBER}"
            # Alertmanager routed it to its own receiver, as a team's route would
            await until(lambda: am_posts(sink, "firing"), "Alertmanager's firing notification")
            (firing,) = am_posts(sink, "firing")[:1]
            assert firing["alerts"][0]["labels"]["caller_number"] == NUMBER

            # no more blocked calls: the window empties, the alert resolves, Alertmanager hears it
            await until(lambda: am_posts(sink, "resolved"), "Alertmanager's resolved notification")
            (resolved,) = am_posts(sink, "resolved")[:1]
            assert resolved["alerts"][0]["labels"]["caller_number"] == NUMBER
            assert resolved["alerts"][0]["status"] == "resolved"
            assert not [a for a in await am.alerts() if a["labels"].get("caller_number") == NUMBER
                        and a["status"]["state"] == "active"]
            # the log says each transition and each delivery, once, with what it is about
            lines = [(r.getMessage(), getattr(r, "labels", {})) for r in caplog.records]
            fired = [labels for message, labels in lines
                     if message.startswith(f"alert firing: number-blocked on caller_number={NUMBER}")]
            assert fired == [{"caller_number": NUMBER, "threshold": "number-blocked",
                              "fingerprint": f"number-blocked|caller_number={NUMBER}"}]
            assert [m for m, _ in lines if m.startswith("alert resolved: number-blocked")]
            delivered = [labels for message, labels in lines if message.startswith("outbox: alertmanager: delivered")]
            assert len(delivered) >= 2 and delivered[0]["notifier"] == "alertmanager"
        finally:
            await daemon.stop(flush_s=2.0)


def firing_notification(number: str) -> Notification:
    alert = {"fingerprint": f"number-blocked|caller_number={number}", "threshold": "number-blocked", "kind": "number",
             "severity": "warning", "state": "firing", "change": "new", "scope": {"caller_number": number},
             "labels": {"threshold": "number-blocked", "severity": "warning", "caller_number": number,
                        "trunk": "carrier-a"},
             "count": 3, "attempts": 4, "rate": 0.75, "window_s": 3600.0, "categories": {"analytics_block": 3},
             "sip_codes": {"608": 3}, "trunks": {"carrier-a": 3}, "fired_at": "2026-11-30T01:00:00.000Z",
             "started_at": "2026-11-30T01:00:00.000Z", "samples": [], "redress": [], "what_to_do": {}}
    return Notification(group_key=number, group_labels={"caller_number": number}, status="firing",
                        alerts=[alert], created_at=time.time())  # type: ignore[list-item]


async def test_firing_alerts_are_posted_again_and_expire_once_blockradar_stops(tmp_path: Path):
    async with HttpSink() as sink, Alertmanager(tmp_path, sink.url) as am:
        notifier = build_notifier({"type": "alertmanager", "url": am.url, "refresh": "1s", "ends_after": "3s"})
        notification = firing_notification(NUMBER)
        assert am_labels(notification.alerts[0])["alertname"] == "number-blocked"
        await notifier.send(notification)
        await asyncio.sleep(5)  # longer than ends_after: only the refresh keeps it active
        assert notifier.refreshed >= 3
        (alert,) = [a for a in await am.alerts() if a["labels"].get("caller_number") == NUMBER]
        assert alert["status"]["state"] == "active"
        assert am_posts(sink, "resolved") == []
        await notifier.aclose()  # blockradar stops: no more posts, Alertmanager resolves it after endsAt
        await until(lambda: am_posts(sink, "resolved"), "the resolve by endsAt", timeout=20)
