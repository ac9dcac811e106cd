"""The package's protocol emulators (``blockradar.testing``): the faults that came with them (garbage bytes
between frames, a PBX dripping one byte a second), broadcasting with ``push``, against the real connectors
over loopback; and the package standing on its own (no pytest, no tests/ on the path, its data shipped)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from blockradar.connectors.base import LinkState
from blockradar.connectors.esl_recording import read_esl_recording
from blockradar.outcome import CallOutcome
from blockradar.testing import AmiServer, AmiSession, EslServer, EslSession, frame_event_name, load_event_frames
from blockradar.testing.ami import FULLY_BOOTED, GARBAGE_FRAME
from tests.test_ami_connector import SECRET, config, running, stream_of, until
from tests.test_ami_recording import CASES
from tests.test_esl_connector import PASSWORD, fast_config, wait_until
from tests.test_esl_connector import running as esl_running
from tests.test_esl_faults import PLAIN_FILES

pytestmark = pytest.mark.timeout(60)


def esl_calls(n: int) -> tuple[list[bytes], set[str]]:
    """The CHANNEL_HANGUP_COMPLETE frames of ``n`` recorded FreeSWITCH calls, and their call ids."""
    files = PLAIN_FILES[:n]
    frames = [f for f in load_event_frames(*files) if frame_event_name(f) == "CHANNEL_HANGUP_COMPLETE"]
    ids = {o.call_id for path in files for o in read_esl_recording(path.read_bytes()).outcomes}
    assert len(frames) == len(ids) == n
    return frames, ids


# -- garbage ---------------------------------------------------------------------------------------


async def test_ami_garbage_between_frames_is_one_malformed_frame_and_the_call_still_counts() -> None:
    stream = stream_of(CASES[0], True)
    at = stream.index(b"\r\n\r\n", len(stream) // 2) + 4  # between two frames, in the middle of the call
    got: list[CallOutcome] = []
    sessions = [AmiSession(stream=stream, garbage_at=at)]
    async with AmiServer(secret=SECRET, sessions=sessions) as server, running(config(server.port), got.append) as c:
        await until(lambda: len(got) == 1 and c.health().parse_errors == 1)
        await asyncio.sleep(0.3)  # a Ping or two after it: the link is not dropped for it
        health = c.health()
    assert got[0].sip_code == 608
    assert health.state == LinkState.CONNECTED and health.connects == 1 and health.parse_errors == 1


async def test_esl_garbage_between_frames_is_one_malformed_frame_and_the_stream_goes_on() -> None:
    frames, ids = esl_calls(4)
    sessions = [EslSession(fault="garbage", after_frames=2)]
    with EslServer(password=PASSWORD, plain=frames, sessions=sessions) as server:
        async with esl_running(fast_config(server)) as (connector, received):
            await wait_until(lambda: len(received) == len(ids))
            await asyncio.sleep(0.1)
            live = connector.health()
        closed = connector.health()
    assert {o.call_id for o in received} == ids
    assert live.state == LinkState.CONNECTED and live.connects == 1 and server.connections == 1
    assert live.parse_errors == 1  # counted while the connection lives, not only once it ends
    assert closed.parse_errors == 1  # and not twice once it has ended


# -- one byte a second -----------------------------------------------------------------------------


async def test_ami_drip_is_one_byte_a_second_and_a_pong_waits_for_the_frame_to_end() -> None:
    stream = stream_of(CASES[0], True)
    sessions = [AmiSession(stream=stream, chunk_sizes=(1,), interval=1.0)]
    async with AmiServer(secret=SECRET, sessions=sessions) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            await reader.readuntil(b"\r\n")  # the banner
            writer.write(f"Action: Login\r\nUsername: blockradar\r\nSecret: {SECRET}\r\n\r\n".encode())
            await reader.readuntil(b"Authentication accepted\r\n\r\n")
            assert await reader.readexactly(len(FULLY_BOOTED)) == FULLY_BOOTED
            writer.write(b"Action: Ping\r\nActionID: p1\r\n\r\n")
            arrivals: list[tuple[float, bytes]] = []
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(2.6):
                    while True:
                        data = await reader.read(4096)
                        arrivals.append((time.monotonic(), data))
        finally:
            writer.close()
    assert b"".join(data for _, data in arrivals) == stream[:3]  # the stream, one byte at a time; no Pong in it
    assert [len(data) for _, data in arrivals] == [1, 1, 1]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert all(0.8 < gap < 1.3 for gap in gaps), gaps
    assert server.pings == 1


async def test_ami_a_pbx_dripping_one_byte_a_second_is_alive_not_hung() -> None:
    stream = stream_of(CASES[0], True)
    sessions = [AmiSession(stream=stream, chunk_sizes=(1,), interval=1.0)]
    async with AmiServer(secret=SECRET, sessions=sessions) as server, \
            running(config(server.port, ping_interval=0.2, ping_timeout=1.5), lambda o: None) as c:
        await until(lambda: c.health().state == LinkState.CONNECTED and server.pings >= 1)
        await asyncio.sleep(3.5)  # its Pong is stuck behind the frame being dripped, but bytes keep coming
        health = c.health()
    assert health.state == LinkState.CONNECTED and health.connects == 1
    assert health.extra["pong_timeouts"] == 0


async def test_esl_a_freeswitch_dripping_one_byte_a_second_is_alive_not_hung() -> None:
    frames, _ids = esl_calls(1)
    session = EslSession(chunk_sizes=(1,), interval=1.0)
    with EslServer(password=PASSWORD, plain=frames, default=session) as server:
        cfg = fast_config(server, probe_interval_s=0.2, probe_timeout_s=1.5)
        async with esl_running(cfg) as (connector, _received):
            await wait_until(lambda: "api status" in server.commands_of(0))
            await asyncio.sleep(3.5)  # the probe's answer waits behind the frame being dripped
            health = connector.health()
    assert health.state == LinkState.CONNECTED and health.connects == 1
    assert health.extra["probe_timeouts"] == 0 and health.extra["probes"] == 1


async def test_esl_frames_written_a_byte_at_a_time_are_reassembled() -> None:
    frames, ids = esl_calls(2)
    with EslServer(password=PASSWORD, plain=frames, default=EslSession(chunk_sizes=(1,))) as server:
        async with esl_running(fast_config(server)) as (connector, received):
            await wait_until(lambda: len(received) == len(ids), timeout=15)
            health = connector.health()
    assert {o.call_id for o in received} == ids and health.connects == 1


# -- push: a PBX that broadcasts what it is given (the demo) ---------------------------------------


async def test_ami_push_goes_to_logged_in_sessions_only() -> None:
    stream = stream_of(CASES[0], True)
    got: list[CallOutcome] = []
    async with AmiServer(secret=SECRET) as server, running(config(server.port), got.append) as c:
        await until(lambda: c.health().state == LinkState.CONNECTED)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # connected, never logged in
        try:
            await reader.readuntil(b"\r\n")
            assert await server.push(stream) == 1
            await until(lambda: len(got) == 1)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await reader.read(1)
        finally:
            writer.close()
    assert got[0].sip_code == 608


async def test_esl_push_goes_to_subscribers_only_the_events_they_asked_for() -> None:
    frames, ids = esl_calls(3)
    other = [f for f in load_event_frames(*PLAIN_FILES[:1]) if frame_event_name(f) == "CHANNEL_CREATE"]
    assert other
    with EslServer(password=PASSWORD) as server:
        assert server.push(frames) == 0  # nobody subscribed yet
        async with esl_running(fast_config(server)) as (connector, received):
            await wait_until(lambda: connector.health().state == LinkState.CONNECTED)
            await asyncio.sleep(0.1)  # the subscription is sent right after auth
            assert server.push(other + frames) == 1
            await wait_until(lambda: len(received) == len(ids))
            await asyncio.sleep(0.1)
            health = connector.health()
    assert {o.call_id for o in received} == ids
    assert health.events == len(frames)  # CHANNEL_CREATE was not subscribed to: not sent


# -- the package on its own ------------------------------------------------------------------------


def test_the_status_answer_shipped_is_the_fixture() -> None:
    shipped = resources.files("blockradar.testing").joinpath("data", "F8-api-status.frame").read_bytes()
    fixture = Path(__file__).parent / "fixtures" / "lifecycle" / "freeswitch" / "F8-api-status.frame"
    assert shipped == fixture.read_bytes()


STANDALONE = """
import asyncio, socket, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("pytest", "_pytest", "tests", "hypothesis", "trustme", "aiosmtpd"):
            raise ImportError(f"{name} imported by blockradar.testing")

sys.meta_path.insert(0, Refuse())
from blockradar.testing import AmiServer, EslServer

with EslServer(password="x") as esl, socket.create_connection(("127.0.0.1", esl.port), timeout=5) as sock:
    assert sock.recv(100) == b"Content-Type: auth/request\\n\\n"

async def ami():
    async with AmiServer() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert (await reader.readline()).startswith(b"Asterisk Call Manager/")
        writer.close()

asyncio.run(ami())
import blockradar.demo.session
print("ok")
"""


def test_the_package_runs_without_pytest_or_the_tests(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-I", "-c", STANDALONE], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok"


def test_the_garbage_frame_is_one_frame_of_noise() -> None:
    assert GARBAGE_FRAME.count(b"\r\n\r\n") == 1 and GARBAGE_FRAME.endswith(b"\r\n\r\n")
    assert b"\n" not in GARBAGE_FRAME[:-4] and b": " not in GARBAGE_FRAME
