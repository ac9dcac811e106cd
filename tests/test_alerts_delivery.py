"""End to end from outcomes to the wire: pipeline -> outbox -> Slack (Block Kit checked) and email
(real SMTP with STARTTLS): an alert fires, groups, is silenced, repeats after repeat_interval, resolves."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy

import pytest
import trustme
from aiosmtpd.controller import Controller

from blockradar.alerting.lifecycle import AlertingConfig
from blockradar.alerting.notifiers import build_notifiers
from blockradar.alerting.outbox import Outbox, OutboxConfig
from blockradar.alerting.silences import Matcher, Silence
from blockradar.clock import ManualClock
from blockradar.detect.pipeline import Pipeline
from blockradar.detect.thresholds import ThresholdConfig
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset
from blockradar.store import Store
from tests.servers.http_sink import HttpSink
from tests.test_notifiers_email import Recorder, authenticator, free_port, server_context

T0 = 1_700_000_000.0
REASON = 'SIP;cause=603;text="v=analytics1;url=https://redress.example.com/r;tel=+18005550100"'


def blocked(t, number):
    return CallOutcome(pbx="ast", connector="pbx1", call_id=f"c-{number}-{t}", ended_at=t, caller_number=number,
                       callee_number="+12125550100", trunk="carrier-c", sip_code=603, sip_phrase="Network Blocked",
                       reason=REASON)


@pytest.fixture
def smtp(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=server_context(ca),
                            require_starttls=True, authenticator=authenticator, auth_required=True)
    controller.start()
    yield handler, port, str(ca_file)
    controller.stop()


async def until(predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_fire_group_silence_repeat_resolve_over_slack_and_email(tmp_path, smtp):
    mails, smtp_port, ca_file = smtp
    clock = ManualClock(T0)
    store = Store(tmp_path / "state.db")
    threshold = ThresholdConfig.model_validate({
        "name": "number-strong-block", "scope": ["caller_number"], "categories": ["analytics_block"],
        "confidence": ["high"], "window": "1h", "count": 1, "severity": "warning"})
    async with HttpSink(slack=True) as slack:
        notifiers = build_notifiers([
            {"type": "slack", "webhook_url": slack.url, "rate_per_s": 100},
            {"type": "email", "host": "127.0.0.1", "port": smtp_port, "username": "blockradar",
             "password": "pa55word", "from": "blockradar@example.com", "to": ["noc@example.com"],
             "ca_file": ca_file, "rate_per_s": 100},
        ])
        outbox = Outbox(store, notifiers, OutboxConfig(poll_interval=0.02), clock=clock)
        pipeline = Pipeline(load_ruleset(), [threshold],
                            AlertingConfig(group_wait="30s", group_interval="5m", repeat_interval="4h"),
                            emit=outbox.enqueue, store=store)
        pipeline.lifecycle.add_silence(
            Silence((Matcher.parse("caller_number=+15550000003"),), T0, T0 + 86400, "test number", "ops", T0))
        await outbox.start()
        try:
            numbers = ["+15550000001", "+15550000002", "+15550000003"]
            for i, number in enumerate(numbers):
                pipeline.process(blocked(T0 + i, number))

            def step(seconds, feed=False):
                clock.advance(seconds)
                if feed:
                    for number in numbers:
                        pipeline.process(blocked(clock.now() - 1, number))
                return pipeline.tick(clock.now())

            assert step(29) == []
            assert len(step(1)) == 1  # group_wait over: one message for the burst
            await slack.wait_for(1)
            await until(lambda: len(mails.messages) == 1)
            for k in range(1, 48):  # blocks keep coming every 30 min; the group is looked at every 5 min
                assert step(300, feed=k % 6 == 0) == []
            assert len(step(300)) == 1  # 4 h after the first message: the repeat
            await slack.wait_for(2)
            sent = []
            for _ in range(14):  # no more blocks: the hour runs out
                sent += step(300)
            assert [n.status for n in sent] == ["resolved"]
            await slack.wait_for(3)
            await until(lambda: len(mails.messages) == 3)
            await until(lambda: store.outbox_depth() == 0)
        finally:
            await outbox.stop()
    assert slack.problems == []
    titles = [r.json["blocks"][0]["text"]["text"] for r in slack.requests]
    assert titles == ["WARNING analytics blocks on 2 numbers via carrier-c",
                      "WARNING analytics blocks on 2 numbers via carrier-c (still firing)",
                      "RESOLVED analytics blocks on 2 numbers via carrier-c"]
    assert "+15550000003" not in str(slack.requests[0].json)  # silenced
    subjects = [message_from_bytes(m[2], policy=policy.default)["Subject"] for m in mails.messages]
    assert subjects == ["[blockradar] WARNING analytics blocks on 2 numbers via carrier-c",
                        "[blockradar] WARNING analytics blocks on 2 numbers via carrier-c (still firing)",
                        "[blockradar] RESOLVED analytics blocks on 2 numbers via carrier-c"]
    assert store.outbox_depth() == 0
    assert len(store.outbox_rows(status="sent")) == 6
