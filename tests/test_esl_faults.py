"""The FreeSWITCH connector under faults: cut connections, bad credentials, silence, outages,
a slow consumer, and many start/stop cycles (greenswitch G1..G5, lifecycle fixtures F1..F3)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time

import gevent
import pytest

from blockradar.connectors.base import LinkState
from blockradar.connectors.esl_recording import read_esl_recording
from blockradar.connectors.freeswitch import FreeswitchConnector
from blockradar.outcome import CallOutcome
from blockradar.testing.esl import EslServer, EslSession, frame_event_name, load_event_frames
from tests.test_esl_connector import PASSWORD, fast_config, running, wait_until
from tests.test_esl_recording import FIXTURE_FILES, LIFECYCLE

PLAIN_FILES = [row[3] for row in FIXTURE_FILES if row[0] == "1.11.1" and row[1] in ("plain", "ignore-early-media")]
SUBSCRIBE = "event plain CHANNEL_HANGUP_COMPLETE HEARTBEAT"


@pytest.fixture(scope="module")
def stream() -> tuple[list[bytes], set[str]]:
    """The CHANNEL_HANGUP_COMPLETE frames of the 16 direct 1.11.1 calls, and their call ids."""
    frames = [f for f in load_event_frames(*PLAIN_FILES) if frame_event_name(f) == "CHANNEL_HANGUP_COMPLETE"]
    ids = {o.call_id for path in PLAIN_FILES for o in read_esl_recording(path.read_bytes()).outcomes}
    assert len(ids) == len(PLAIN_FILES) == 16
    return frames, ids


@pytest.mark.parametrize("fault", ["fin_mid_body", "rst_mid_body", "fin_at_boundary"])
async def test_cut_connection_reconnects_and_loses_and_duplicates_nothing(fault: str, stream) -> None:
    frames, ids = stream
    sessions = [EslSession(fault=fault, after_frames=5)]
    with EslServer(password=PASSWORD, plain=frames, sessions=sessions) as server:
        config = fast_config(server, filters=("Call-Direction outbound",))
        async with running(config) as (connector, received):
            await wait_until(lambda: len(received) == len(ids))
            await wait_until(lambda: connector.health().state == LinkState.CONNECTED)
            await asyncio.sleep(0.05)
            health = connector.health()
        assert server.connections == 2
        for connection in (0, 1):  # subscription and filters re-sent on every connect
            assert server.commands_of(connection)[1:4] == [
                SUBSCRIBE,
                "filter Call-Direction outbound",
                "filter Event-Name HEARTBEAT",
            ]
    assert {o.call_id for o in received} == ids and len(received) == len(ids)
    assert health.connects == 2 and health.reconnects == 1
    assert health.extra["duplicates"] == 5  # the 5 calls of the first connection came again
    assert health.extra["truncated_frames"] == (0 if fault == "fin_at_boundary" else 1)
    assert health.last_error is None and health.last_error_at is not None  # cleared on recovery; when, kept


async def test_wrong_password_is_auth_failed_with_long_backoff_and_no_secret(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with EslServer(password="ClueCon") as server:
        async with running(fast_config(server, auth_backoff_s=60.0)) as (connector, _received):
            await wait_until(lambda: connector.health().state == LinkState.AUTH_FAILED)
            await asyncio.sleep(0.3)  # a hot loop would reconnect dozens of times here
            health = connector.health()
            assert server.connections == 1
        # close() interrupted the 60 s backoff (running() asserts the thread is gone)
    assert "authentication failed (-ERR invalid)" in (health.last_error or "")
    assert health.state == LinkState.AUTH_FAILED
    for text in (caplog.text, str(health.to_dict()), repr(connector.config)):
        assert PASSWORD not in text
    assert "-ERR invalid" in caplog.text


async def test_auth_failure_retries_after_its_backoff_and_recovers(stream) -> None:
    frames, ids = stream
    with EslServer(password="not-yet", plain=frames) as server:
        async with running(fast_config(server, auth_backoff_s=0.1)) as (connector, received):
            await wait_until(lambda: connector.health().state == LinkState.AUTH_FAILED)
            server.password = PASSWORD  # the operator fixes the password
            await wait_until(lambda: len(received) == len(ids))
            health = connector.health()
    assert health.state == LinkState.CONNECTED and health.connects == 1
    assert server.connections >= 2


async def test_acl_rude_rejection_is_auth_failed(caplog) -> None:
    caplog.set_level(logging.INFO)
    sessions = [EslSession(rude=True)]
    with EslServer(password=PASSWORD, sessions=sessions) as server:
        async with running(fast_config(server)) as (connector, _received):
            await wait_until(lambda: connector.health().state == LinkState.AUTH_FAILED)
            await asyncio.sleep(0.2)
            health = connector.health()
            assert server.connections == 1
        assert server.commands_of(0) == []  # no auth/request came, so nothing was sent
    assert "rejected by the ESL ACL (text/rude-rejection)" in (health.last_error or "")
    assert "ACL" in caplog.text


async def test_heartbeat_silence_forces_a_reconnect(stream, caplog) -> None:
    frames, ids = stream
    sessions = [EslSession(fault="silence", after_frames=3)]
    default = EslSession(heartbeat_every=0.05)
    with EslServer(password=PASSWORD, plain=frames, sessions=sessions, default=default) as server:
        async with running(fast_config(server, heartbeat_liveness_s=0.3)) as (connector, received):
            await wait_until(lambda: connector.health().connects == 2)
            # FreeSWITCH greets a new connection: this session is stuck, not the PBX
            assert "while FreeSWITCH greets a new connection: session given up" in caplog.text
            await wait_until(lambda: len(received) == len(ids))
            await wait_until(lambda: connector.health().extra["heartbeats"] >= 10)  # > 0.3 s of heartbeats
            health = connector.health()
    assert health.connects == 2 and health.state == LinkState.CONNECTED  # heartbeats keep it alive


async def test_a_freeswitch_hung_past_the_liveness_limit_keeps_its_session(stream, caplog) -> None:
    """Live lab: a 90 s SIGSTOP outlasted the 60 s liveness limit; the session was given up and the calls
    FreeSWITCH ended the moment it resumed (before the new subscription) were lost. Now a second connection
    is asked first: while it gets no auth/request either, the whole FreeSWITCH is hung and the session kept."""
    frames, ids = stream
    session = EslSession(settle=0.5, heartbeat_every=0.05)
    with EslServer(password=PASSWORD, plain=frames, default=session) as server:
        config = fast_config(server, heartbeat_liveness_s=0.3, probe_interval_s=0.1, probe_timeout_s=0.1)
        async with running(config) as (connector, received):
            await wait_until(lambda: connector.health().state == LinkState.CONNECTED)
            server.freeze()  # before the calls are streamed: FreeSWITCH ends them while stopped
            await wait_until(lambda: connector.health().extra["whole_pbx_hung_checks"] >= 3)
            health = connector.health()
            assert health.state == LinkState.UNRESPONSIVE and "whole FreeSWITCH is hung" in str(health.last_error)
            assert received == []
            server.thaw()
            await wait_until(lambda: len(received) == len(ids) and connector.health().state == LinkState.CONNECTED)
            await asyncio.sleep(0.3)
            health = connector.health()
    assert health.connects == 1 and health.reconnects == 0  # the same session all along
    assert {o.call_id for o in received} == ids


async def test_server_down_then_up(stream) -> None:
    frames, ids = stream
    with EslServer(password=PASSWORD, plain=frames, start_paused=True) as server:
        async with running(fast_config(server)) as (connector, received):
            await wait_until(lambda: "connect failed" in (connector.health().last_error or ""))
            assert connector.health().state in (LinkState.BACKING_OFF, LinkState.CONNECTING)
            assert "ConnectionRefusedError" in (connector.health().last_error or "")
            server.resume()
            await wait_until(lambda: len(received) == len(ids))
            server.pause()  # down again while connected ...
            await wait_until(lambda: connector.health().state != LinkState.CONNECTED)
            server.resume()  # ... and up again
            await wait_until(lambda: connector.health().connects == 2)
            await asyncio.sleep(0.05)
    assert {o.call_id for o in received} == ids and len(received) == len(ids)


async def test_shutdown_stream_frames_after_the_notice_are_read() -> None:
    """F3: the disconnect-notice is followed by 6 more frames, then FIN (stock greenswitch died)."""
    path = LIFECYCLE / "F3-fsctl-shutdown.esl"
    frames = load_event_frames(path, types=("text/event-plain", "text/disconnect-notice"))
    sessions = [EslSession(fault="fin_at_boundary", after_frames=len(frames))]
    with EslServer(
        password=PASSWORD, plain=frames, sessions=sessions, default=EslSession(fault="silence")
    ) as server:
        async with running(fast_config(server, events=("ALL",))) as (connector, received):
            await wait_until(lambda: connector.health().connects == 2)
            health = connector.health()
        assert server.commands_of(0)[1] == "event plain ALL"
    (outcome,) = received
    assert outcome.pbx_cause == "SYSTEM_SHUTDOWN"
    assert health.events == len(frames) == 159  # 158 events + the notice, none lost
    assert health.parse_errors == 0


async def slow_consumer(stream, repeat: int, timeout: float, **overrides):
    """The recorded calls ``repeat`` times with fresh ids to a consumer that blocks the loop (500 outcomes/s
    at best), through a 20-outcome hand-off; returns the connector's health once all is handed over, and
    how many hangups were sent."""
    frames, ids = stream

    def slow_sink(outcome: CallOutcome) -> None:
        time.sleep(0.002)

    with EslServer(password=PASSWORD, plain=frames, sessions=[EslSession(repeat=repeat, fresh_uuids=True)]) as server:
        async with running(fast_config(server, max_pending=20, **overrides), sink=slow_sink) as (connector, _):
            await wait_until(lambda: connector.health().outcomes == repeat * len(ids), timeout=timeout)
            await wait_until(lambda: connector.health().extra["pending"] == 0, timeout=20)
            return connector.health(), repeat * len(ids)


async def test_a_slow_consumer_holds_the_reader_back_and_nothing_is_lost(stream) -> None:
    """Backpressure: a full hand-off makes the reader wait (FreeSWITCH queues meanwhile) instead of
    dropping; the waiting is our slowness, so the link is never judged hung."""
    health, hangups = await slow_consumer(stream, 60, 40, probe_timeout_s=0.3)
    assert health.dropped == 0
    assert health.extra["held_back"] > 0
    assert health.extra["delivered"] == hangups
    assert health.extra["pending_high_water"] <= 20
    assert health.connects == 1 and health.extra["probe_timeouts"] == 0  # never judged hung


async def test_slow_consumer_drops_are_counted_and_memory_is_bounded(stream) -> None:
    health, hangups = await slow_consumer(stream, 150, 20, handoff_wait_s=0.0)  # no holding back: drop at once
    assert health.dropped > 0
    assert health.extra["delivered"] + health.dropped == hangups
    assert health.extra["pending_high_water"] <= 20
    assert health.state == LinkState.CONNECTED and health.connects == 1  # the reader never stalled


def _live_greenlets() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet) and not obj.dead)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_thirty_start_stop_cycles_leak_nothing(stream) -> None:
    frames, _ids = stream
    with EslServer(password=PASSWORD, plain=frames[:2], default=EslSession(heartbeat_every=0.05)) as server:
        config = fast_config(server)

        async def cycle() -> None:
            connector = FreeswitchConnector(config, lambda outcome: None)
            await connector.start()
            await wait_until(lambda: connector.health().state == LinkState.CONNECTED)
            await connector.close()
            assert not connector.health().extra["thread_alive"]

        await cycle()  # warm-up: first imports, first hub
        server_threads = threading.active_count()
        await asyncio.sleep(0.1)
        gc.collect()
        threads, fds, greenlets = threading.active_count(), _fds(), _live_greenlets()
        for _ in range(30):
            await cycle()
        assert server.wait_for(lambda: threading.active_count() <= server_threads, timeout=3)
        await asyncio.sleep(0.1)  # the server's per-connection threads finish their close
        gc.collect()
        assert not [t for t in threading.enumerate() if t.name.startswith("esl-")]
        assert threading.active_count() <= threads
        assert _fds() <= fds
        assert _live_greenlets() == greenlets == 0
        assert server.connections == 31


async def test_no_auth_request_and_unanswered_commands_time_out_g5() -> None:
    sessions = [EslSession(mute=True), EslSession(unanswered=("event",))]
    with EslServer(password=PASSWORD, sessions=sessions, default=EslSession(heartbeat_every=0.05)) as server:
        config = fast_config(server, connect_timeout_s=0.2, command_timeout_s=0.2)
        async with running(config) as (connector, _received):
            await wait_until(lambda: "no auth/request" in (connector.health().last_error or ""))
            await wait_until(lambda: "no reply to 'event'" in (connector.health().last_error or ""))
            await wait_until(lambda: connector.health().state == LinkState.CONNECTED)
            health = connector.health()
        assert server.connections == 3
        assert server.commands_of(2)[1] == SUBSCRIBE
    assert health.connects == 1


async def test_close_interrupts_a_hanging_connect() -> None:
    with EslServer(password=PASSWORD, default=EslSession(mute=True)) as server:
        config = fast_config(server, connect_timeout_s=30.0, command_timeout_s=30.0, stop_timeout_s=3.0)
        async with running(config) as (connector, _received):
            await wait_until(lambda: server.connections == 1)
            assert connector.health().state == LinkState.CONNECTING
        # running() asserted the thread is gone: close() did not wait for the 60 s connect limit


async def test_garbage_frames_are_counted_and_the_stream_goes_on(stream) -> None:
    frames, ids = stream
    bad_json = b'{"Event-Name": "CHANNEL_HANGUP_COMPLETE", broken'
    garbage = [
        b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(bad_json) + bad_json,
        b"Content-Length: 5\nContent-Type: text/x-unknown\n\nhello",
    ]
    with EslServer(password=PASSWORD, plain=garbage + frames, default=EslSession()) as server:
        async with running(fast_config(server, events=("ALL",))) as (connector, received):
            await wait_until(lambda: len(received) == len(ids))
            health = connector.health()
    assert health.parse_errors == 1 and health.connects == 1


async def test_refused_connects_print_no_raw_tracebacks(capfd) -> None:
    """Live lab: every refused ESL connect printed a 14-line gevent traceback to stderr, outside the log
    format (once a second while FreeSWITCH was away)."""
    import socket as std_socket

    from blockradar.connectors.freeswitch import FreeswitchConfig, FreeswitchConnector
    from blockradar.secret import Secret

    with std_socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    connector = FreeswitchConnector(FreeswitchConfig(name="fs1", host="127.0.0.1", port=port,
                                                     password=Secret("p")), lambda o: None)
    await connector.start()
    try:
        await wait_until(lambda: connector.health().extra["redials"] >= 2)
    finally:
        await connector.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Greenlet" not in err, err
