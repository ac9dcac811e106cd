"""Delivery through a notifier outage, on a manual clock: the receiver answers 500 for a while, then
429 with Retry-After, then 200, while the alert group changes underneath (alerts fire and resolve).
What must hold: every message in group order, no resolved before its firing, a 429 pauses the
endpoint (no other message is tried meanwhile), stale queued messages superseded by the newest
(which tells what they would have), and the receiver ends showing the true current state."""

from __future__ import annotations

import asyncio

import pytest

from blockradar.alerting.lifecycle import AlertingConfig
from blockradar.alerting.notifiers.base import Notification
from blockradar.alerting.notifiers.webhook import WebhookConfig, WebhookNotifier
from blockradar.alerting.outbox import Outbox, OutboxConfig, merge_into
from blockradar.clock import ManualClock
from blockradar.detect.pipeline import Pipeline
from blockradar.detect.thresholds import ThresholdConfig
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset
from blockradar.store import Store
from tests.ledger import Ledger
from tests.servers.http_sink import HttpSink, Reply

T0 = 1_700_000_000.0


def blocked(t: float, number: str) -> CallOutcome:
    return CallOutcome(pbx="asterisk", connector="pbx1", call_id=f"{number}-{t}", ended_at=t, caller_number=number,
                       callee_number="+12125550100", trunk="carrier-c", sip_code=608, sip_phrase="Rejected")


async def settle(outbox: Outbox, sink: HttpSink, rounds: int = 10) -> None:
    """Let the worker look at the table a few times (it runs on the manual clock)."""
    for _ in range(rounds):
        outbox.wake()
        await asyncio.sleep(0.02)


@pytest.mark.timeout(60)
async def test_outage_500_then_429_keeps_order_and_truth(tmp_path):
    clock = ManualClock(T0)
    store = Store(tmp_path / "s.db")
    threshold = ThresholdConfig.model_validate({
        "name": "strong", "scope": ["caller_number"], "categories": ["analytics_block"], "confidence": ["high"],
        "window": "2m", "count": 1, "keep_firing_for": "0s"})
    async with HttpSink() as sink:
        sink.default = Reply(500, "down")
        outbox = Outbox(store, [WebhookNotifier(WebhookConfig(url=sink.url, timeout=5))],
                        OutboxConfig(backoff_initial=2, backoff_max=4, poll_interval=0.01), clock=clock)
        pipeline = Pipeline(load_ruleset(), [threshold],
                            AlertingConfig(group_wait="0s", group_interval="10s", repeat_interval="4h"),
                            emit=outbox.enqueue, store=store)
        await outbox.start()
        try:
            def step(seconds: float, *numbers: str) -> None:
                clock.advance(seconds)
                for number in numbers:
                    pipeline.process(blocked(clock.now(), number))
                pipeline.tick(clock.now())

            step(0, "+15550000001")  # A fires: message 1 (500)
            await sink.wait_for(1)
            step(10, "+15550000002")  # B fires: message 2 queued behind message 1 (or folded into it)
            await settle(outbox, sink)
            step(10, "+15550000003")  # C fires
            await settle(outbox, sink)
            for _ in range(12):  # two minutes on: A's and B's windows empty, they resolve; 500 all along
                step(10)
                await settle(outbox, sink)
            failures_500 = len(sink.requests)
            assert failures_500 >= 2
            # now the receiver rate-limits: 429, Retry-After 20 s
            sink.default = Reply(429, "slow down", {"Retry-After": "20"})
            step(5)  # past any backoff: the endpoint's next try meets the 429
            await settle(outbox, sink)
            assert sink.requests[-1].status == 429
            paused = len(sink.requests)
            for _ in range(3):  # 15 s of the 20 s pause pass, with new alerts: nothing is tried
                step(5, "+15550000004")
                await settle(outbox, sink)
            assert len(sink.requests) == paused  # a 429 pauses the endpoint, not one message
            sink.default = Reply(200)
            step(6)
            await settle(outbox, sink, 40)
            await asyncio.wait_for(_drained(store), 10)
        finally:
            await outbox.stop()
    delivered = [r.json for r in sink.requests if r.status == 200]
    ledger = Ledger(delivered)
    assert ledger.problems == []
    truth = {a.fingerprint for a in pipeline.lifecycle.active_alerts()}
    assert ledger.firing() == truth  # the receiver ends showing the true state
    rows = store.outbox_rows()
    assert any(r.status == "superseded" for r in rows)  # stale queued messages were folded into newer ones
    assert len(delivered) < len(rows)
    store.close()


async def _drained(store: Store) -> None:
    while store.outbox_depth():
        await asyncio.sleep(0.02)


def _note(*alerts: dict, created: float = T0) -> Notification:
    return Notification("g", {}, "firing" if any(a["state"] == "firing" for a in alerts) else "resolved",
                        list(alerts), created)


def test_merge_keeps_what_the_older_message_would_have_told():
    a_new = {"fingerprint": "a", "state": "firing", "change": "new"}
    b_new = {"fingerprint": "b", "state": "firing", "change": "new"}
    c_resolved = {"fingerprint": "c", "state": "resolved", "change": "resolved"}
    older = _note(a_new, c_resolved)
    newer = _note({**a_new, "change": "firing"}, b_new, created=T0 + 10)
    merged = merge_into(newer, older)
    assert merged is not None and merged.id == newer.id
    assert [(a["fingerprint"], a["change"]) for a in merged.alerts] == [("a", "new"), ("b", "new"),
                                                                       ("c", "resolved")]
    # an older message announcing A firing is never replaced by one that resolves it: firing goes first
    assert merge_into(_note({"fingerprint": "a", "state": "resolved", "change": "resolved"}), older) is None
    assert merge_into(_note(b_new), older) is None  # nor by one that no longer lists it


@pytest.mark.timeout(30)
async def test_superseding_the_waiting_message_does_not_lift_the_endpoints_pause(tmp_path):
    """Live lab: Slack answered 429 Retry-After 20; the waiting row was superseded by a newer one of its group,
    and the newer one went out 2.4 s before the 20 s were over. The pause belongs to the endpoint."""
    clock = ManualClock(T0)
    store = Store(tmp_path / "s.db")
    async with HttpSink() as sink:
        sink.default = Reply(429, "slow down", {"Retry-After": "20"})
        outbox = Outbox(store, [WebhookNotifier(WebhookConfig(url=sink.url, timeout=5))],
                        OutboxConfig(poll_interval=0.01), clock=clock)
        await outbox.start()
        try:
            first = Notification("g", {}, "firing", [{"fingerprint": "a", "state": "firing", "change": "new"}], T0)
            outbox.enqueue(first)
            await sink.wait_for(1)
            await settle(outbox, sink)
            clock.advance(5)
            newer = Notification("g", {}, "firing", [{"fingerprint": "a", "state": "firing", "change": "firing"},
                                                     {"fingerprint": "b", "state": "firing", "change": "new"}],
                                 T0 + 5)
            outbox.enqueue(newer)  # folds the waiting one in
            assert [r.status for r in store.outbox_rows()] == ["superseded", "pending"]
            sink.default = Reply(200)
            for _ in range(3):  # 15 s more: still inside the peer's 20 s
                clock.advance(5 if _ < 2 else 4.9)
                await settle(outbox, sink)
            assert len(sink.requests) == 1
            clock.advance(0.2)
            await settle(outbox, sink)
            await sink.wait_for(2)
        finally:
            await outbox.stop()
    assert [a["change"] for a in sink.requests[-1].json["alerts"]] == ["new", "new"]  # a was never delivered
    store.close()
