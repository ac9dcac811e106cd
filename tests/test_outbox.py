"""Durable delivery against a real local HTTP receiver: 500, 429 + Retry-After, refused connections,
a slow notifier beside a fast one, permanent errors, expiry, and kill -9 of a delivering process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from blockradar.alerting.notifiers.base import Notification
from blockradar.alerting.notifiers.webhook import IDEMPOTENCY_HEADER, WebhookConfig, WebhookNotifier
from blockradar.alerting.outbox import Outbox, OutboxConfig
from blockradar.clock import ManualClock
from blockradar.store import Store
from tests.servers.http_sink import HttpSink, Reply

T0 = 1_700_000_000.0
REPO = Path(__file__).resolve().parent.parent
CHILD = REPO / "tests" / "servers" / "outbox_child.py"
QUICK = OutboxConfig(backoff_initial=1, backoff_max=10, poll_interval=0.02, send_timeout=5)


def note(i=0):
    return Notification(group_key=f"g{i}", group_labels={"trunk": "carrier-c"}, status="firing", alerts=[],
                        created_at=T0)


def webhook(url, name="webhook", timeout=5.0):
    return WebhookNotifier(WebhookConfig(name=name, url=url, timeout=timeout))


async def until(predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "outbox.db")
    yield s
    s.close()


async def test_500_is_retried_with_backoff_and_delivered_with_the_same_idempotency_key(store):
    clock = ManualClock(T0)
    async with HttpSink() as sink:
        sink.script = [Reply(500, "boom")]
        outbox = Outbox(store, [webhook(sink.url)], QUICK, clock=clock)
        await outbox.start()
        try:
            outbox.enqueue(note())
            await sink.wait_for(1)
            await until(lambda: store.outbox_rows()[0].attempts == 1)
            row = store.outbox_rows()[0]
            assert row.status == "pending" and "HTTP 500" in row.last_error
            assert T0 + 0.5 <= row.next_attempt_at <= T0 + 1  # backoff_initial with jitter
            clock.advance(1)
            outbox.wake()
            await sink.wait_for(2)
            await until(lambda: store.outbox_rows()[0].status == "sent")
        finally:
            await outbox.stop()
    keys = {r.headers[IDEMPOTENCY_HEADER] for r in sink.requests}
    assert len(keys) == 1 and len(sink.requests) == 2
    assert outbox.stats["webhook"] == {"sent": 1, "retried": 1, "failed": 0, "expired": 0, "dropped": 0,
                                       "superseded": 0, "told": 0}


async def test_429_retry_after_is_honoured(store):
    clock = ManualClock(T0)
    async with HttpSink() as sink:
        sink.script = [Reply(429, "slow down", {"Retry-After": "120"})]
        outbox = Outbox(store, [webhook(sink.url)], QUICK, clock=clock)
        await outbox.start()
        try:
            outbox.enqueue(note())
            await sink.wait_for(1)
            await until(lambda: store.outbox_rows()[0].attempts == 1)
            assert store.outbox_rows()[0].next_attempt_at == T0 + 120  # not our backoff: the peer's wish
            clock.advance(119)
            outbox.wake()
            await asyncio.sleep(0.2)  # several worker polls: still too early
            assert len(sink.requests) == 1
            clock.advance(1)
            outbox.wake()
            await sink.wait_for(2)
            await until(lambda: store.outbox_rows()[0].status == "sent")
        finally:
            await outbox.stop()


async def test_refused_connections_lose_nothing(store):
    clock = ManualClock(T0)
    sink = HttpSink()
    await sink.start()
    port = sink.port
    await sink.stop()  # nobody listens: connections are refused
    outbox = Outbox(store, [webhook(f"http://127.0.0.1:{port}/hook")], QUICK, clock=clock)
    await outbox.start()
    try:
        for i in range(3):
            outbox.enqueue(note(i))
        await until(lambda: store.outbox_rows()[0].attempts >= 1)
        first, *behind = store.outbox_rows()
        assert "connection refused" in (first.last_error or "")
        assert [r.attempts for r in behind] == [0, 0]  # the endpoint is paused: they wait in order behind it
        sink.port = port
        await sink.start()
        clock.advance(10)
        outbox.wake()
        await sink.wait_for(3)
        await until(lambda: store.outbox_depth() == 0)
    finally:
        await outbox.stop()
        await sink.stop()
    assert [r.json["group_key"] for r in sink.requests] == ["g0", "g1", "g2"]  # in order
    assert [r.status for r in store.outbox_rows()] == ["sent"] * 3


async def test_a_slow_notifier_does_not_hold_up_the_others(store):
    async with HttpSink() as slow, HttpSink() as fast:
        slow.default = Reply(200, delay_s=5)
        outbox = Outbox(store, [webhook(slow.url, "slow", timeout=10), webhook(fast.url, "fast")], QUICK)
        await outbox.start()
        try:
            outbox.enqueue(note(1))
            outbox.enqueue(note(2))
            await slow.wait_for(1)
            await fast.wait_for(2)
            await until(lambda: store.outbox_depth("fast") == 0)
            assert store.outbox_depth("slow") == 2  # still busy with its first send
        finally:
            await outbox.stop()


async def test_permanent_errors_are_not_retried_and_expired_rows_stop(store):
    clock = ManualClock(T0)
    async with HttpSink() as sink:
        sink.script = [Reply(404, "no_service")]
        config = OutboxConfig(expire_after=60, poll_interval=0.02, backoff_initial=1)
        outbox = Outbox(store, [webhook(sink.url)], config, clock=clock)
        await outbox.start()
        try:
            outbox.enqueue(note(1))
            await until(lambda: store.outbox_rows()[0].status == "failed")
            assert "HTTP 404" in store.outbox_rows()[0].last_error
            sink.default = Reply(503)
            outbox.enqueue(note(2))
            await until(lambda: store.outbox_rows()[1].attempts >= 1)
            clock.advance(61)
            outbox.wake()
            await until(lambda: store.outbox_rows()[1].status == "expired")
        finally:
            await outbox.stop()
    assert len(sink.requests) == 2


async def _child(db, url, *extra):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(sys.executable, str(CHILD), "--store", str(db), "--url", url, *extra,
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=str(REPO))


async def _line(proc, timeout=20.0):
    async with asyncio.timeout(timeout):
        return (await proc.stdout.readline()).decode().strip()


async def test_kill_9_between_enqueue_and_send_delivers_after_restart_exactly_once(tmp_path):
    db = tmp_path / "daemon.db"
    sink = HttpSink()
    await sink.start()
    port = sink.port
    await sink.stop()  # the receiver is down while the first process runs: nothing can be sent
    url = f"http://127.0.0.1:{port}/hook"
    proc = await _child(db, url, "--enqueue", "3")
    try:
        assert (await _line(proc)).startswith("ENQUEUED")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    sink.port = port
    await sink.start()
    try:
        proc = await _child(db, url)
        assert await _line(proc) == "DRAINED"
        await proc.wait()
    finally:
        await sink.stop()
    assert sorted(r.json["group_key"] for r in sink.requests) == ["g0", "g1", "g2"]  # each once


async def test_kill_9_during_a_send_repeats_it_with_the_same_idempotency_key(tmp_path):
    db = tmp_path / "daemon.db"
    async with HttpSink() as sink:
        sink.script = [Reply(200, delay_s=30)]  # the first send hangs until the process dies
        proc = await _child(db, sink.url, "--enqueue", "1")
        try:
            assert (await _line(proc)).startswith("ENQUEUED")
            await sink.wait_for(1, timeout=20)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        proc = await _child(db, sink.url)
        assert await _line(proc) == "DRAINED"
        await proc.wait()
    assert len(sink.requests) == 2  # at-least-once on the wire ...
    keys = {r.headers[IDEMPOTENCY_HEADER] for r in sink.requests}
    assert len(keys) == 1  # ... exactly once for a receiver that honours the key


async def test_the_queue_is_bounded_and_drops_are_counted(store):
    outbox = Outbox(store, [webhook("http://127.0.0.1:1/")], OutboxConfig(max_pending=3))  # never started
    for i in range(5):
        outbox.enqueue(note(i))
    assert store.outbox_depth() == 3
    assert outbox.stats["webhook"]["dropped"] == 2
    assert [r.status for r in store.outbox_rows()] == ["dropped"] * 2 + ["pending"] * 3
