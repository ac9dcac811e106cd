"""kill -9 of the daemon in the middle of a stream of blocked calls, then a restart on the same store.

`blockradar run` is a subprocess; the project's AMI server streams 20 blocked calls a second from 60
numbers (each new number fires an alert, notified at once: group_wait 0). The daemon is killed with
SIGKILL mid-stream and started again. What must hold: on disk, every alert state has the outcome it
rests on (outcomes and the transitions they cause are committed together); after the restart nothing
is announced again and nothing is resolved (the calls lost with the process are no evidence of
recovery); what the receiver saw (repeats of the same message id, which its Idempotency-Key drops,
set aside) breaks none of the ledger's rules."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
import time
from pathlib import Path

import pytest

from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.store import Store
from blockradar.testing.ami import AmiServer, AmiSession
from tests.daemons import start_daemon
from tests.ledger import Ledger
from tests.polling import until
from tests.servers.http_sink import HttpSink

pytestmark = pytest.mark.timeout(120)

NUMBERS = [f"+1555766{i:04d}" for i in range(60)]


def stream_of_blocks(calls: int) -> bytes:
    builder = TrafficBuilder()
    now = time.time()
    frames = []
    for i in range(calls):
        spec = CallSpec("608", NUMBERS[i % len(NUMBERS)], "+12125550100", f"carrier-{'abc'[i % 3]}", now + i * 0.05)
        frames += builder.ami_frames(spec)
    return b"".join(frames)



async def test_kill_9_mid_stream_loses_no_truth(tmp_path: Path):
    calls = 120
    stream = stream_of_blocks(calls)
    frames_per_call = stream.count(b"\r\n\r\n") // calls
    store = tmp_path / "state.db"
    async with AmiServer(username="br", secret="pw",
                         sessions=[AmiSession(stream=stream, frame_gap=0.05 / frames_per_call), AmiSession()]) as ami, \
            HttpSink() as sink:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw}}
            thresholds:
              - {{name: strong, scope: [caller_number], categories: [analytics_block], confidence: [high],
                  window: 1h, count: 1}}
            alerting: {{group_wait: 0s, group_interval: 1s, repeat_interval: 4h, group_by: [threshold, caller_number]}}
            notifiers:
              - {{type: webhook, url: "{sink.url}"}}
            store: {store}
            http: null
            """))
        proc = start_daemon(config)
        try:
            await until(lambda: len(sink.requests) >= 25, what="alerts of the first calls")
            proc.send_signal(signal.SIGKILL)  # mid-stream: calls in the socket and in memory are lost
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        before_restart = len(sink.requests)

        with Store(store) as db:  # one truth on disk: no alert without the outcome it rests on
            stored = {row["caller_number"] for row in db.outcome_rows(0)}
            firing = [r for r in db.load_alert_states() if r["state"] == "firing"]
            assert firing, "the killed daemon had committed alerts"
            assert all(r["labels"]["caller_number"] in stored for r in firing)
            pending_or_sent = {json.loads(r.payload)["alerts"][0]["scope"]["caller_number"]
                               for r in db.outbox_rows()}
            assert pending_or_sent <= stored  # nor a notification

        proc = start_daemon(config)
        try:
            await until(lambda: ami.connections >= 2, what="the restarted daemon's login")
            await asyncio.sleep(4)  # > group_interval, several ticks: anything wrong would be sent by now
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0

    seen: set[str] = set()
    received = []
    for record in sink.requests:  # a resend after kill -9 carries the same id: the receiver drops it
        if record.json["id"] not in seen:
            seen.add(record.json["id"])
            received.append(record.json)
    ledger = Ledger(received)
    assert ledger.problems == []
    assert ledger.resolved == {}  # no false RESOLVED: every number is still blocked within its hour
    after_restart = received[len({r.json["id"] for r in sink.requests[:before_restart]}):]
    repeated = [a for m in after_restart for a in m["alerts"] if a["change"] != "new"]
    assert repeated == []  # the restart announced nothing already announced


async def test_kill_9_half_a_second_after_the_last_call_keeps_every_call(tmp_path: Path):
    """Live lab (FreeSWITCH, kill -9 of the daemon): two calls that had ended 0.3 s and 0.44 s before the
    kill were lost with the 1 s batch they waited in. Outcomes now reach the disk within 50 ms."""
    calls = 12
    stream = stream_of_blocks(calls)
    store = tmp_path / "state.db"
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw}}
            store: {store}
            http: null
            """))
        proc = start_daemon(config)
        try:
            await until(lambda: any(login.accepted for login in ami.logins), what="the daemon's login")
            await asyncio.sleep(0.3)  # FullyBooted handled: the session is the daemon's
            await ami.push(stream)
            await asyncio.sleep(0.5)  # half a tick: with 1 s batches, these calls were still in memory
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with Store(store) as db:
        assert len(db.outcome_rows(0)) == calls
