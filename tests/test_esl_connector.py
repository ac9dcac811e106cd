"""The live FreeSWITCH connector against a real-protocol ESL server replaying every fixture."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import gevent.monkey
import pytest

from blockradar.clock import ManualClock
from blockradar.connectors.base import Connector, LinkState
from blockradar.connectors.esl_recording import read_esl_recording
from blockradar.connectors.freeswitch import (
    EslAuthError,
    FreeswitchConfig,
    FreeswitchConnector,
    record_esl,
    record_esl_blocking,
)
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset
from blockradar.secret import Secret
from blockradar.testing.esl import EslServer, EslSession, load_event_frames
from tests.test_esl_recording import FIXTURE_FILES, FIXTURES, check_outcome

PASSWORD = "Cl0ud-S3cret-pw"


def fast_config(server: EslServer, **overrides: Any) -> FreeswitchConfig:
    settings: dict[str, Any] = {
        "name": "fs-test",
        "host": "127.0.0.1",
        "port": server.port,
        "password": Secret(PASSWORD),
        "backoff_min_s": 0.02,
        "backoff_max_s": 0.2,
        "auth_backoff_s": 60.0,
        "connect_timeout_s": 2.0,
        "command_timeout_s": 2.0,
        "heartbeat_liveness_s": 30.0,
        "stop_timeout_s": 5.0,
    }
    settings.update(overrides)
    return FreeswitchConfig(**settings)


@asynccontextmanager
async def running(
    config: FreeswitchConfig, sink: Callable[[CallOutcome], None] | None = None, **kwargs: Any
) -> AsyncIterator[tuple[FreeswitchConnector, list[CallOutcome]]]:
    received: list[CallOutcome] = []
    connector = FreeswitchConnector(config, sink or received.append, **kwargs)
    await connector.start()
    try:
        yield connector, received
    finally:
        await connector.close()
    assert connector.health().state == LinkState.STOPPED
    assert not connector.health().extra["thread_alive"]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def files_of(version: str, passes: set[str]) -> list[tuple[str, str, Any, Path]]:
    return [row for row in FIXTURE_FILES if row[0] == version and row[1] in passes]


@pytest.mark.parametrize("version", ["1.11.1", "1.10.12"])
@pytest.mark.parametrize("event_format", ["plain", "json"])
async def test_every_fixture_through_the_live_connector(version: str, event_format: str) -> None:
    passes = {"json"} if event_format == "json" else {"plain", "bridged", "enriched", "ignore-early-media"}
    rows = files_of(version, passes)
    expected = {}
    for row in rows:
        (outcome,) = read_esl_recording(row[3].read_bytes()).outcomes
        expected[outcome.call_id] = row
    frames = load_event_frames(*(row[3] for row in rows))
    ruleset = load_ruleset()
    with EslServer(password=PASSWORD, **{event_format: frames}) as server:
        config = fast_config(server, event_format=event_format)
        async with running(config) as (connector, received):
            await wait_until(lambda: len(received) >= len(rows))
            await asyncio.sleep(0.05)  # nothing more may come
            health = connector.health()
        assert server.commands_of(0)[1] == f"event {event_format} CHANNEL_HANGUP_COMPLETE HEARTBEAT"
    assert len(received) == len(rows) == len({o.call_id for o in received})
    for outcome in received:
        version_, _pass, case, path = expected[outcome.call_id]
        assert outcome.connector == "fs-test"
        check_outcome(outcome, case, version_)
        assert ruleset.classify(outcome).category == case.category, path.name
    assert health.state == LinkState.CONNECTED
    assert health.connects == 1 and health.reconnects == 0
    assert health.outcomes == len(rows) and health.dropped == 0 and health.parse_errors == 0
    assert health.clock_skewed > 0  # recorded in 2026 at 18:3x, replayed "now": receive time used
    assert health.extra["legs_ignored"] == 2 * sum(1 for row in rows if row[1] == "bridged")


async def test_the_atis_capture_live_keeps_redress_and_trusted_pbx_time() -> None:
    path = FIXTURES / "15-603plus-atis-analytics1.esl"
    (recorded,) = read_esl_recording(path.read_bytes()).outcomes
    assert recorded.ended_at is not None
    clock = ManualClock(start=recorded.ended_at + 0.5)  # our clock agrees with the PBX's
    with EslServer(password=PASSWORD, plain=load_event_frames(path)) as server:
        async with running(fast_config(server), clock=clock) as (connector, received):
            await wait_until(lambda: len(received) == 1)
            assert connector.health().clock_skewed == 0
    (outcome,) = received
    assert outcome.ended_at == recorded.ended_at and outcome.started_at == recorded.started_at
    assert outcome.redress is not None and outcome.redress.url == "https://analytics.example.net/redress"
    assert load_ruleset().classify(outcome).category == "analytics_block"


async def test_filters_are_sent_with_a_heartbeat_filter() -> None:
    frames = load_event_frames(FIXTURES / "01-608-rejected-jwscard.esl")
    with EslServer(password=PASSWORD, plain=frames) as server:
        config = fast_config(server, filters=("Call-Direction outbound",))
        async with running(config) as (_connector, received):
            await wait_until(lambda: len(received) == 1)
        assert server.commands_of(0)[1:4] == [
            "event plain CHANNEL_HANGUP_COMPLETE HEARTBEAT",
            "filter Call-Direction outbound",
            "filter Event-Name HEARTBEAT",
        ]
        assert server.commands_of(0)[-1] == "exit"  # a clean goodbye on close


async def test_a_raising_sink_never_stops_the_stream_nor_logs_pii(caplog: pytest.LogCaptureFixture) -> None:
    rows = files_of("1.11.1", {"plain"})
    frames = load_event_frames(*(row[3] for row in rows))
    calls: list[CallOutcome] = []

    def sink(outcome: CallOutcome) -> None:
        calls.append(outcome)
        if len(calls) == 1:
            raise RuntimeError(f"boom for {outcome.caller_number}")

    caplog.set_level(logging.DEBUG)
    with EslServer(password=PASSWORD, plain=frames) as server:
        async with running(fast_config(server), sink=sink) as (connector, _received):
            await wait_until(lambda: len(calls) == len(rows))
            health = connector.health()
    assert health.extra["sink_errors"] == 1 and health.extra["delivered"] == len(rows) - 1
    assert "RuntimeError" in caplog.text
    assert "+15557654321" not in caplog.text and "Acme" not in caplog.text
    assert PASSWORD not in caplog.text


async def test_connector_satisfies_the_protocol() -> None:
    with EslServer(password=PASSWORD) as server:
        connector: Connector = FreeswitchConnector(fast_config(server), lambda outcome: None)
        assert isinstance(connector, FreeswitchConnector)
        assert connector.pbx == "freeswitch" and connector.name == "fs-test"
        assert PASSWORD not in repr(connector.config)
        await connector.start()
        await wait_until(lambda: connector.health().state == LinkState.CONNECTED)
        await connector.close()
        assert connector.health().to_dict()["state"] == "stopped"
    assert not gevent.monkey.is_module_patched("socket")
    assert not gevent.monkey.is_module_patched("threading")


def test_config_rejects_line_breaks_and_bad_filters() -> None:
    with pytest.raises(ValueError):
        FreeswitchConfig(name="x", host="h", password=Secret("a\nb"))
    with pytest.raises(ValueError):
        FreeswitchConfig(name="x", host="h", password=Secret("p"), filters=("Call-Direction",))
    with pytest.raises(ValueError):
        FreeswitchConfig(name="x", host="h", password=Secret("p"), event_format="xml")
    config = FreeswitchConfig(name="x", host="h", password=Secret("p"), events=("ALL",))
    assert config.subscription() == "event plain ALL"


async def test_record_esl_writes_the_bytes_as_received() -> None:
    path = FIXTURES / "15-603plus-atis-analytics1.esl"
    with EslServer(password=PASSWORD, plain=load_event_frames(path)) as server:
        out = io.BytesIO()
        stop = asyncio.Event()
        task = asyncio.create_task(record_esl(fast_config(server), out, stop))
        await wait_until(lambda: b"CHANNEL_HANGUP_COMPLETE" in out.getvalue())
        stop.set()
        written = await task
        assert server.commands_of(0)[-1] == "exit"
    data = out.getvalue()
    assert data.startswith(b"Content-Type: auth/request\n\nContent-Type: command/reply\nReply-Text: +OK accepted\n\n")
    assert data.endswith(b"See you at ClueCon! http://www.cluecon.com/\n")  # recorded up to the goodbye
    assert written == len(data)
    (outcome,) = read_esl_recording(data).outcomes
    (expected,) = read_esl_recording(path.read_bytes()).outcomes
    assert outcome == expected.replace(connector="replay")


async def test_record_esl_blocking_limit_and_server_close() -> None:
    frames = load_event_frames(FIXTURES / "07-486-busy-here.esl")
    sessions = [EslSession(fault="fin_at_boundary", after_frames=len(frames))]
    with EslServer(password=PASSWORD, plain=frames, sessions=sessions) as server:
        config = fast_config(server, events=("ALL",))
        result = await asyncio.to_thread(record_esl_blocking, config, io.BytesIO(), threading.Event())
        assert result.ended_by == "closed by server" and result.events == len(frames)
        limited = await asyncio.to_thread(record_esl_blocking, config, io.BytesIO(), threading.Event(), max_bytes=10)
        assert limited.ended_by == "limit"


async def test_record_esl_wrong_password() -> None:
    with EslServer(password="other") as server, pytest.raises(EslAuthError) as caught:
        await record_esl(fast_config(server), io.BytesIO(), asyncio.Event())
    assert PASSWORD not in str(caught.value)
    assert "-ERR invalid" in str(caught.value)


async def test_record_esl_rude_rejection() -> None:
    server = EslServer(password=PASSWORD, sessions=[EslSession(rude=True)])
    with server, pytest.raises(EslAuthError, match="ACL"):
        await record_esl(fast_config(server), io.BytesIO(), asyncio.Event())
