"""The daemon through PBX faults, over loopback: the project's AMI and ESL protocol servers play a
clean restart (``Shutdown``), a crash, a hang (no Pong, no probe answer) and a wrong secret fixed
later, while a webhook receiver records what the operator is told. What must hold: no message that
only repeats announced alerts, no resolve while a link is unhealthy (no false resolve at all here:
every window is an hour), no resolved before its firing, each group in order, caller alerts naming
only the trunks their matching calls took, one page per cause, and the link back within a second
or so of the PBX listening again (not the 30 s it took before).
"""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest

from blockradar.config import load_config
from blockradar.connectors.base import LinkState
from blockradar.daemon import Daemon
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.testing.ami import AmiServer, AmiSession
from blockradar.testing.esl import EslServer, EslSession
from tests.ledger import Ledger
from tests.servers.http_sink import HttpSink

pytestmark = pytest.mark.timeout(90)

NUMBER_A, NUMBER_B, NUMBER_C = "+15557650101", "+15557650102", "+15557650103"


async def until(predicate, timeout: float = 15.0, what: str = "condition") -> float:
    """Wait for ``predicate``; returns when (monotonic) it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def write_config(tmp_path: Path, connector: str, sink_url: str) -> Path:
    path = tmp_path / "blockradar.yaml"
    path.write_text(textwrap.dedent(f"""\
        connectors:
          - {connector}
        rules: [default]
        thresholds:
          - {{name: strong, scope: [caller_number], categories: [analytics_block], confidence: [high],
              window: 1h, count: 1, severity: warning}}
        alerting: {{group_wait: 0s, group_interval: 1s, repeat_interval: 4h}}
        notifiers:
          - {{type: webhook, url: "{sink_url}"}}
        store: {tmp_path / "state.db"}
        http: null
        self_health: {{link_down_after: 60s, auth_failing_after: 0s}}
        """))
    return path


def ami_calls(builder: TrafficBuilder, *calls: tuple[str, str, str]) -> bytes:
    now = time.time()
    return b"".join(b"".join(builder.ami_frames(CallSpec(scenario, caller, "+12125550100", trunk, now)))
                    for scenario, caller, trunk in calls)


def state_of(daemon: Daemon) -> LinkState:
    return daemon.healths()[0].state


async def test_asterisk_restart_crash_hang_and_wrong_secret(tmp_path: Path):
    builder = TrafficBuilder()
    sessions = [
        AmiSession(stream=ami_calls(builder, ("608", NUMBER_A, "carrier-a"), ("608", NUMBER_B, "carrier-b"),
                                 ("200", NUMBER_A, "carrier-b")),
                shutdown=False),  # then "core stop now" / systemctl restart: Shutdown, Restart: False
        AmiSession(stream=ami_calls(builder, ("608", NUMBER_C, "carrier-a"))),
        AmiSession(stream=ami_calls(builder, ("608", NUMBER_A, "carrier-a"))),
        AmiSession(),
    ]
    async with AmiServer(username="br", secret="pw", sessions=sessions, auth_fail_delay=0.2) as ami, \
            HttpSink() as sink:
        connector = (f"{{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw, "
                     f"ping_interval: 1s, ping_timeout: 1s}}")
        daemon = Daemon(load_config(write_config(tmp_path, connector, sink.url)))
        await daemon.start()
        try:
            # 1. calls, then a clean shutdown; Asterisk is away 1.5 s, then listens again
            await until(lambda: ami.connections >= 1 and state_of(daemon) != LinkState.CONNECTED
                        and daemon.healths()[0].outcomes >= 3, what="Shutdown seen")
            await ami.stop_listening()
            await asyncio.sleep(1.5)
            listening = time.monotonic()
            await ami.listen_again()
            back = await until(lambda: state_of(daemon) == LinkState.CONNECTED, what="logged in again")
            assert back - listening < 2.5  # the schedule retries at least every second (30 s before)

            # 2. a crash: the connection dies, nothing listens for 2 s (> group_interval), then it is back
            await until(lambda: daemon.healths()[0].outcomes >= 4, what="the call after the restart")
            await ami.stop_listening()
            ami.drop_all()
            await asyncio.sleep(2.0)
            await ami.listen_again()
            await until(lambda: state_of(daemon) == LinkState.CONNECTED and ami.connections >= 3, what="crash over")

            # 3. a hang: no Pong, no event; found by the Ping deadline, then it thaws
            await until(lambda: daemon.healths()[0].outcomes >= 5, what="the call after the crash")
            ami.freeze()
            await until(lambda: state_of(daemon) == LinkState.UNRESPONSIVE, timeout=6, what="hang detected")
            sessions_before = ami.connections
            await asyncio.sleep(1.5)  # group_interval passes while it is blind
            ami.thaw()
            await until(lambda: state_of(daemon) == LinkState.CONNECTED, what="back after the hang")
            assert ami.connections == sessions_before  # the session was kept: what it queued was not lost

            # 4. the secret is changed on the PBX: one page (auth), no link-down page; fixed, then SIGHUP
            ami.secret = "changed-on-the-pbx"
            ami.drop_all()
            await until(lambda: state_of(daemon) == LinkState.AUTH_FAILED, what="auth failure")
            await until(lambda: any("pbx-auth-failing" in str(r.json) for r in sink.requests), what="auth page")
            await asyncio.sleep(1.5)
            ami.secret = "pw"
            fixed = time.monotonic()
            daemon.reload()  # SIGHUP: retry now, not in auth_backoff (30 s)
            back = await until(lambda: state_of(daemon) == LinkState.CONNECTED, what="login after the fix")
            assert back - fixed < 5
            await until(lambda: any("resolved" in str(r.json) and "pbx-auth-failing" in str(r.json)
                                    for r in sink.requests), what="auth resolved")
            await asyncio.sleep(1.5)
            _, report = daemon.health_report()
        finally:
            await daemon.stop(flush_s=5)

    ledger = Ledger(r.json for r in sink.requests)
    assert ledger.problems == []
    numbers = {a["scope"]["caller_number"]: a for a in ledger.alerts("strong|")}
    assert set(numbers) == {NUMBER_A, NUMBER_B, NUMBER_C}
    assert all(n == 1 for n in ledger.new.values())  # each alert announced once, through every fault
    assert not any(fp.startswith("strong|") for fp in ledger.resolved)  # no false resolve
    # labels from evidence: A's answered call went via carrier-b, its blocks via carrier-a only
    assert numbers[NUMBER_A]["labels"]["trunk"] == "carrier-a"
    assert numbers[NUMBER_B]["labels"]["trunk"] == "carrier-b"
    self_alerts = [a for a in ledger.alerts("self/")]
    assert [(a["labels"]["alertname"], a["state"]) for a in self_alerts] == [
        ("pbx-auth-failing", "firing"), ("pbx-auth-failing", "resolved")]  # one page per cause
    link = report["connectors"][0]
    assert link["last_error"] is None and link["last_error_at"] is not None and link["up"]


def esl_frames(builder: TrafficBuilder, *calls: tuple[str, str, str]) -> list[bytes]:
    now = time.time()
    frames = []
    for scenario, caller, gateway in calls:
        frames += [builder.esl_frame(b) for b in builder.esl_bodies(CallSpec(scenario, caller, "+12125550100",
                                                                             gateway, now))]
    return frames


async def test_freeswitch_crash_hang_and_wrong_password(tmp_path: Path):
    builder = TrafficBuilder()
    frames = esl_frames(builder, ("608", NUMBER_A, "carrier-a"), ("603plus", NUMBER_B, "carrier-b"),
                        ("200", NUMBER_A, "carrier-b"))
    with EslServer(password="ClueCon-lab", plain=frames, default=EslSession(heartbeat_every=0.5)) as esl:
        async with HttpSink() as sink:
            connector = (f"{{name: fs1, type: freeswitch, port: {esl.port}, password: ClueCon-lab, "
                         f"probe_interval: 0.5s, probe_timeout: 1s}}")
            daemon = Daemon(load_config(write_config(tmp_path, connector, sink.url)))
            await daemon.start()
            try:
                await until(lambda: daemon.healths()[0].outcomes >= 3, what="calls")
                await until(lambda: len(sink.requests) >= 2, what="two alerts")

                # 1. kill -9: the port closes, the connection dies; back 2 s later (> group_interval)
                esl.pause()
                await until(lambda: state_of(daemon) != LinkState.CONNECTED, what="crash seen")
                await asyncio.sleep(2.0)
                listening = time.monotonic()
                esl.resume()
                back = await until(lambda: state_of(daemon) == LinkState.CONNECTED, what="reconnected")
                assert back - listening < 2.5

                # 2. a hang (SIGSTOP): the status probe gets no answer within its deadline
                esl.freeze()
                await until(lambda: state_of(daemon) == LinkState.UNRESPONSIVE, timeout=6, what="hang detected")
                sessions_before = esl.connections
                await asyncio.sleep(1.5)
                esl.thaw()
                await until(lambda: state_of(daemon) == LinkState.CONNECTED, what="back after the hang")
                assert daemon.healths()[0].extra["probe_timeouts"] == 1
                assert esl.connections == sessions_before  # the same session, kept through the hang

                # 3. the ESL password is changed on the PBX, then fixed; SIGHUP retries at once
                esl.password = "changed-on-the-pbx"
                esl.drop_clients()
                await until(lambda: state_of(daemon) == LinkState.AUTH_FAILED, what="auth failure")
                await until(lambda: any("pbx-auth-failing" in str(r.json) for r in sink.requests), what="page")
                esl.password = "ClueCon-lab"
                fixed = time.monotonic()
                daemon.reload()
                back = await until(lambda: state_of(daemon) == LinkState.CONNECTED, what="login after the fix")
                assert back - fixed < 5
                await asyncio.sleep(1.5)
            finally:
                await daemon.stop(flush_s=5)

    ledger = Ledger(r.json for r in sink.requests)
    assert ledger.problems == []
    numbers = {a["scope"]["caller_number"]: a for a in ledger.alerts("strong|")}
    assert set(numbers) == {NUMBER_A, NUMBER_B}
    assert all(n == 1 for n in ledger.new.values())
    assert not any(fp.startswith("strong|") for fp in ledger.resolved)
    assert numbers[NUMBER_A]["labels"]["trunk"] == "carrier-a"
    assert [(a["labels"]["alertname"], a["state"]) for a in ledger.alerts("self/")] == [
        ("pbx-auth-failing", "firing"), ("pbx-auth-failing", "resolved")]


async def test_a_secret_fixed_in_the_config_takes_effect_on_reload(tmp_path: Path):
    async with AmiServer(username="br", secret="right", auth_fail_delay=0.1) as ami, HttpSink() as sink:
        connector = f"{{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: wrong}}"
        path = write_config(tmp_path, connector, sink.url)
        daemon = Daemon(load_config(path))
        await daemon.start()
        try:
            await until(lambda: len(sink.requests) == 1, what="the auth page")
            path.write_text(path.read_text().replace("secret: wrong", "secret: right"))
            assert daemon.reload()
            await until(lambda: state_of(daemon) == LinkState.CONNECTED, what="connected with the new secret")
            await until(lambda: len(sink.requests) >= 2, what="the auth page and its resolve")
        finally:
            await daemon.stop(flush_s=5)
    assert [(a["labels"]["alertname"], a["state"]) for a in Ledger(r.json for r in sink.requests).alerts("self/")] == [
        ("pbx-auth-failing", "firing"), ("pbx-auth-failing", "resolved")]
    assert [r.username for r in ami.logins] == ["br"] * len(ami.logins) and ami.logins[-1].accepted
