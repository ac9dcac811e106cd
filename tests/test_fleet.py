"""A fleet (issue 16): several `blockradar run` daemons, each beside its own PBX (the project's AMI server),
sharing one real Redis (Debian's redis-server on a free port), all notifying one webhook receiver.

What must hold, whatever fails: a threshold crossed only by the fleet's calls together fires, once; a call
two daemons report counts once; exactly one notification per alert transition reaches the receiver, when
the notifying daemon is killed (-9) mid-send, when Redis stops and comes back, and when one daemon alone
loses Redis (a partition); alone, a daemon still alerts on its own calls and says so (self-alert,
/healthz)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from blockradar.config import FleetConfig
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.fleet.node import SHARED, FleetNode
from blockradar.outcome import CallOutcome
from blockradar.testing.ami import AmiServer, AmiSession, event_stream
from blockradar.testing.esl import EslServer, EslSession, load_event_frames
from blockradar.testing.ports import free_port
from blockradar.testing.redis_server import RedisServer
from tests.daemons import start_daemon
from tests.polling import until
from tests.servers.debian_tools import require_tool
from tests.servers.http_sink import HttpSink, Reply
from tests.servers.tcp_proxy import TcpProxy
from tests.test_fleet_parts import CLS, outcome

# CI (.ci/run) runs these on its first Python only (BLOCKRADAR_CI_SECONDARY on the others): they are minutes of
# daemons, failovers and outages, and CI has 15 minutes for three Pythons; tests/test_fleet_parts.py runs the
# fleet's logic against a real Redis on every Python
pytestmark = [pytest.mark.timeout(150),
              pytest.mark.skipif(bool(os.environ.get("BLOCKRADAR_CI_SECONDARY")),
                                 reason="run once per CI, on its first Python")]

LEASE_S = 3.0


@pytest.fixture
def redis_server(tmp_path: Path):
    binary = require_tool("redis-server", "redis-server")
    with RedisServer(binary, tmp_path / "redis", persist=True) as server:
        yield server


class Pbx:
    """One PBX: an AMI server whose calls a test places when it wants (``place``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ami = AmiServer(username="br", secret="pw", sessions=[AmiSession() for _ in range(10)])
        self.traffic = TrafficBuilder()

    async def place(self, caller: str, count: int, scenario: str = "608", watchers: int = 1) -> None:
        now = time.time()
        frames: list[bytes] = []
        for i in range(count):
            frames += self.traffic.ami_frames(CallSpec(scenario, caller, "+12125550100", f"carrier-{self.name}",
                                                       now + i * 0.01))
        await until(lambda: self.ami.accepted_logins >= watchers, what=f"the daemons logged in to {self.name}")
        await self.ami.push(b"".join(frames))


class Daemon:
    """``blockradar run`` in a subprocess, with its /healthz."""

    def __init__(self, tmp_path: Path, name: str, pbx: Pbx | None, redis_url: str, sink_url: str, *,
                 connector: str | None = None, window: str = "1h", connector_line: str | None = None) -> None:
        self.name = name
        self.dir = tmp_path / name
        self.dir.mkdir(exist_ok=True)
        self.http_port = free_port()
        self.config = self.dir / "blockradar.yaml"
        self.log = self.dir / "daemon.log"
        self.config.write_text(textwrap.dedent(f"""\
            connectors:
              - {connector_line or self._ami_line(pbx, connector)}
            thresholds:
              - {{name: fleet-blocks, scope: [caller_number], categories: [analytics_block], window: {window},
                  count: 3}}
            alerting: {{group_wait: 0s, group_interval: 1s, repeat_interval: 4h, group_by: [threshold, caller_number]}}
            self_health: {{link_down_after: 1h}}
            notifiers:
              - {{type: webhook, url: "{sink_url}"}}
            store: {self.dir / "state.db"}
            http: {{listen: "127.0.0.1:{self.http_port}"}}
            fleet: {{redis: "{redis_url}", name: {name}, lease: {LEASE_S}s, timeout: 0.5s, retry: 0.5s}}
            """))
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _ami_line(pbx: Pbx | None, connector: str | None) -> str:
        assert pbx is not None
        return f"{{name: {connector or pbx.name}, type: asterisk, port: {pbx.ami.port}, username: br, secret: pw}}"

    def start(self) -> Daemon:
        self.proc = start_daemon(self.config, stderr=self.log)
        return self

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as answer:
                return json.loads(answer.read())
        except OSError as exc:
            body = getattr(exc, "read", None)
            if body is not None:  # 503 still carries the report
                return json.loads(body())
            return {}

    def fleet(self) -> dict[str, Any]:
        return self.health().get("fleet") or {}

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def fleet_of(stack: AsyncExitStack, tmp_path: Path, redis_url: str, sink: HttpSink,
                   names: list[str], window: str = "1h") -> tuple[list[Pbx], list[Daemon]]:
    pbxes, daemons = [], []
    for name in names:
        pbx = Pbx(f"pbx-{name}")
        await stack.enter_async_context(pbx.ami)
        pbxes.append(pbx)
    for name, pbx in zip(names, pbxes, strict=True):
        daemons.append(Daemon(tmp_path, name, pbx, redis_url, sink.url, window=window))
    stack.callback(lambda: [d.stop() for d in daemons])
    return pbxes, daemons


async def shared(daemon: Daemon) -> None:
    await until(lambda: daemon.fleet().get("mode") == "shared", timeout=20, what=f"{daemon.name} shares")


GROUP_INTERVAL_S = 1.0  # the configs' group_interval: a group that would be told again is told within it


def told(*daemons: Daemon) -> int:
    """Outbox rows the daemons finished unsent: a daemon of the fleet told them."""
    return sum(d.fleet().get("gate", {}).get("told", 0) for d in daemons)


def delivered(sink: HttpSink, caller: str) -> Counter[str]:
    """What the receiver took (2xx) about ``caller``'s alert, by change: new / firing / resolved."""
    out: Counter[str] = Counter()
    for record in sink.requests:
        if record.status >= 300 or not isinstance(record.json, dict):
            continue
        for alert in record.json.get("alerts", []):
            if (alert.get("scope") or {}).get("caller_number") == caller:
                out[alert.get("change", "?")] += 1
    return out


def self_alerts(sink: HttpSink, kind: str) -> list[tuple[str, str]]:
    return [(a["scope"].get("fleet", ""), a["state"]) for r in sink.requests if r.status < 300 and r.json
            for a in r.json.get("alerts", []) if a.get("labels", {}).get("alertname") == kind]


async def test_a_threshold_only_the_fleet_crosses_fires_once_and_a_call_two_daemons_see_counts_once(
        tmp_path: Path, redis_server: RedisServer):
    caller = "+15557700001"
    async with AsyncExitStack() as stack, HttpSink() as sink:
        (pa, pb), (a, b) = await fleet_of(stack, tmp_path, redis_server.url, sink, ["a", "b"])
        c = Daemon(tmp_path, "c", pa, redis_server.url, sink.url)  # a second daemon watching PBX a (HA pair)
        stack.callback(c.stop)
        for d in (a, b, c):
            d.start()
        for d in (a, b, c):
            await shared(d)
        await pa.place(caller, 1, watchers=2)  # PBX a: 1 block, seen by daemons a and c
        await pb.place(caller, 1)  # PBX b: 1 block; 2 in the fleet (3 if a's call counted twice)
        await until(lambda: all(d.fleet().get("read", 0) >= 2 for d in (a, b, c)), what="every daemon read both")
        await asyncio.sleep(0.5)
        assert delivered(sink, caller) == Counter()
        await pb.place(caller, 1)  # the third block of the fleet: fires
        await until(lambda: delivered(sink, caller)["new"] >= 1, what="the fleet's alert")
        await until(lambda: told(a, b, c) == 2, what="the standbys' rows finished as told")
        await asyncio.sleep(GROUP_INTERVAL_S)  # and nothing is told again
        assert delivered(sink, caller) == Counter({"new": 1})
        alert = next(al for r in sink.requests if r.json for al in r.json["alerts"])
        assert alert["count"] == 3  # a's call counted once although two daemons report it
        assert sorted(alert["connectors"]) == ["pbx-a", "pbx-b"]
        reports = [d.fleet() for d in (a, b, c)]
        assert sum(r["notifies"] for r in reports) == 1
        assert {r["members"] for r in reports} == {3}
        assert sum(r["duplicates"] for r in reports) == 1  # c's (or a's) copy of a's call
        assert sum(r["gate"].get("told", 0) for r in reports) == 2  # the two standbys' rows, finished unsent


async def test_a_resolve_is_told_once_although_the_daemons_judge_it_on_their_own_clocks(
        tmp_path: Path, redis_server: RedisServer):
    """Each daemon resolves on its own clock and its own PBX links (a daemon waits a window after its link came
    up): the two resolve the episode seconds apart, the receiver hears it resolved once."""
    caller = "+15557700010"
    async with AsyncExitStack() as stack, HttpSink() as sink:
        (pa, pb), (a, b) = await fleet_of(stack, tmp_path, redis_server.url, sink, ["a", "b"], window="6s")
        a.start()
        await shared(a)
        b.start()
        await shared(b)
        await pa.place(caller, 2)
        await pb.place(caller, 1)
        await until(lambda: delivered(sink, caller)["new"] == 1, what="the alert")
        await until(lambda: delivered(sink, caller)["resolved"] == 1, timeout=40, what="its resolve")
        await until(lambda: told(a, b) == 2, what="the standby's firing and resolve rows, finished unsent")
        await asyncio.sleep(GROUP_INTERVAL_S)  # and nothing is told again
        assert delivered(sink, caller) == Counter({"new": 1, "resolved": 1})


async def test_kill_9_of_the_notifying_daemon_mid_send_hands_over_without_loss_or_repeat(
        tmp_path: Path, redis_server: RedisServer):
    caller = "+15557700002"
    async with AsyncExitStack() as stack, HttpSink() as sink:
        (pa, _pb), (a, b) = await fleet_of(stack, tmp_path, redis_server.url, sink, ["a", "b"])
        a.start()
        await shared(a)
        await until(lambda: a.fleet().get("notifies"), what="a holds the lease")
        b.start()
        await shared(b)
        sink.default = Reply(status=503)  # the receiver is down: a's send fails and is retried
        await pa.place(caller, 3)
        await until(lambda: any(r.status == 503 for r in sink.requests), what="a's first try")
        a.kill()  # mid-send: its row is queued in its outbox, untold
        sink.default = Reply(status=200)
        started = time.monotonic()
        await until(lambda: delivered(sink, caller)["new"] == 1, timeout=30, what="b sends what a could not")
        handover_s = time.monotonic() - started
        assert handover_s < LEASE_S + 8  # the lease moves within its time, then b's waiting row goes
        assert b.fleet()["notifies"]
        a.start()  # a comes back: its queued row is told already, so it is never sent
        await shared(a)
        await until(lambda: told(a) >= 1, what="a's queued row finished as told")
        await asyncio.sleep(GROUP_INTERVAL_S)  # and nothing is told again
        assert delivered(sink, caller) == Counter({"new": 1})
        print(f"handover after kill -9: {handover_s:.1f} s")


async def test_redis_stopped_and_restarted_mid_run(tmp_path: Path, redis_server: RedisServer):
    alone, together = "+15557700003", "+15557700004"
    async with AsyncExitStack() as stack, HttpSink() as sink:
        (pa, pb), (a, b) = await fleet_of(stack, tmp_path, redis_server.url, sink, ["a", "b"])
        for d in (a, b):
            d.start()
        for d in (a, b):
            await shared(d)
        redis_server.stop()
        await until(lambda: a.fleet().get("mode") == "local" and b.fleet().get("mode") == "local",
                    what="both daemons alone")
        report = a.fleet()  # alone, but not for a lease yet: its rows wait (they may be the holder's)
        if time.time() - report["since"] < LEASE_S - 0.5:  # (a slow machine may be past it already)
            assert report["notifies"] is False and report["notifier"] is None
        assert report["members"] is None
        await pa.place(alone, 3)  # PBX a alone crosses the threshold: a alerts on its own calls
        await until(lambda: delivered(sink, alone)["new"] == 1, what="a's alert while alone")
        report = a.fleet()  # alone for a lease: it tells what it sees
        assert report["notifies"] is True and report["notifier"] == "a" and report["members"] is None
        await pa.place(together, 2)  # 2 + 2: only the fleet together crosses 3
        await pb.place(together, 2)
        await until(lambda: len(self_alerts(sink, "fleet-alone")) == 2, what="both say they are alone")
        assert sorted(self_alerts(sink, "fleet-alone")) == [("a", "firing"), ("b", "firing")]
        assert delivered(sink, together) == Counter()
        redis_server.start()
        for d in (a, b):
            await shared(d)
        await until(lambda: delivered(sink, together)["new"] == 1, what="the fleet's alert once Redis is back")
        await until(lambda: len(self_alerts(sink, "fleet-alone")) == 4, what="the self-alerts resolve")
        await asyncio.sleep(3.0)
        assert delivered(sink, alone) == Counter({"new": 1})  # not announced again by b, once it saw a's calls
        assert delivered(sink, together) == Counter({"new": 1})
        for d in (a, b):
            report = d.fleet()
            assert report["backlog"] == 0 and report["outages"] == 1
        assert a.fleet()["counted_alone"] == 5


async def test_a_partition_of_one_daemon(tmp_path: Path, redis_server: RedisServer):
    """Daemon a reaches Redis through a relay that is cut: a goes on alone, b takes the lease; both tell what
    they see meanwhile, and once a is back neither tells again what the other told."""
    on_a, on_b = "+15557700005", "+15557700006"
    async with AsyncExitStack() as stack, HttpSink() as sink:
        proxy = await TcpProxy(redis_server.port).start()
        stack.push_async_callback(proxy.stop)
        (pa, pb), (a, b) = await fleet_of(stack, tmp_path, redis_server.url, sink, ["a", "b"])
        a.config.write_text(a.config.read_text().replace(f":{redis_server.port}/", f":{proxy.port}/"))
        a.start()
        await shared(a)
        await until(lambda: a.fleet().get("notifies"), what="a holds the lease")
        b.start()
        await shared(b)
        await proxy.cut()
        await until(lambda: a.fleet().get("mode") == "local", what="a alone")
        await until(lambda: b.fleet().get("notifies"), timeout=20, what="b takes the lease")
        assert b.fleet()["mode"] == "shared"
        await pa.place(on_a, 3)
        await pb.place(on_b, 3)
        await until(lambda: delivered(sink, on_a)["new"] == 1 and delivered(sink, on_b)["new"] == 1,
                    what="each side tells its own alert")
        await proxy.mend()
        await shared(a)
        # a reads b's calls, b reads a's backlog: both alerts now fire on both daemons, told already
        await until(lambda: told(a) >= 1 and told(b) >= 1, what="each side's copy of the other's alert told")
        await asyncio.sleep(GROUP_INTERVAL_S)  # and nothing is told again
        assert delivered(sink, on_a) == Counter({"new": 1})
        assert delivered(sink, on_b) == Counter({"new": 1})
        assert a.fleet()["notifies"] is False and b.fleet()["notifies"] is True


def silences_of(daemon: Daemon) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "blockradar", "silence", "list", "--json", "--config",
                          str(daemon.config)], capture_output=True, timeout=30, check=True)
    return [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]


async def test_a_silence_added_on_one_daemon_mutes_the_fleet_and_a_reload_keeps_the_fleets_windows(
        tmp_path: Path, redis_server: RedisServer):
    muted, counted = "+15557700007", "+15557700008"
    async with AsyncExitStack() as stack, HttpSink() as sink:
        (pa, pb), (a, b) = await fleet_of(stack, tmp_path, redis_server.url, sink, ["a", "b"])
        b.start()  # b sends: its windows decide what the receiver gets
        await shared(b)
        await until(lambda: b.fleet().get("notifies"), what="b holds the lease")
        a.start()
        await shared(a)
        subprocess.run([sys.executable, "-m", "blockradar", "silence", "add", f"caller_number={muted}", "--for", "1h",
                        "--comment", "known campaign", "--config", str(a.config)], check=True, timeout=30,
                       capture_output=True)
        await until(lambda: [s["comment"] for s in silences_of(b)] == ["known campaign"], timeout=20,
                    what="a's silence in b's store")
        await pb.place(muted, 3)
        await pa.place(counted, 2)  # 2 of a's calls in the fleet's windows ...
        await asyncio.sleep(2.0)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGHUP)  # ... which b's reload must rebuild from the shared stream
        await until(lambda: "reloaded:" in b.log.read_text(), what="b reloaded")
        await pb.place(counted, 1)  # the third: fires only if b's new windows kept a's two
        await until(lambda: delivered(sink, counted)["new"] == 1, what="the alert after the reload")
        alert = next(al for r in sink.requests if r.json for al in r.json["alerts"]
                     if al["scope"].get("caller_number") == counted)
        assert alert["count"] == 3
        await asyncio.sleep(2.0)
        assert delivered(sink, muted) == Counter()  # silenced on a, muted on b, which sends
        assert delivered(sink, counted) == Counter({"new": 1})


def test_a_daemon_finds_redis_through_sentinel(tmp_path: Path, redis_server: RedisServer):
    """``fleet.sentinels``: the daemon asks a real Sentinel (redis-server --sentinel) for the master."""
    sentinel_port = free_port()
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    conf = workdir / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor fleet 127.0.0.1 {redis_server.port} 1\n")
    sentinel = subprocess.Popen([redis_server.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        asyncio.run(_sentinel_member(tmp_path, redis_server, sentinel_port))
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)


async def _sentinel_member(tmp_path: Path, redis_server: RedisServer, sentinel_port: int) -> None:
    async with AsyncExitStack() as stack, HttpSink() as sink:
        (pa,), (a,) = await fleet_of(stack, tmp_path, redis_server.url, sink, ["a"])
        a.config.write_text(a.config.read_text().replace(
            f'redis: "{redis_server.url}"', f'sentinels: ["127.0.0.1:{sentinel_port}"], service: fleet'))
        a.start()
        await shared(a)
        await pa.place("+15557700009", 3)
        await until(lambda: delivered(sink, "+15557700009")["new"] == 1, what="the alert through Sentinel")
        assert a.fleet()["redis"] == f"sentinel fleet@127.0.0.1:{sentinel_port}"
        assert redis_server.client().xlen("blockradar:outcomes") == 3


FLEET_FIXTURES = Path(__file__).parent / "fixtures" / "fleet"


async def test_real_asterisk_22_and_freeswitch_1_11_recordings_cross_a_threshold_only_together(
        tmp_path: Path, redis_server: RedisServer):
    """The live lab's streams (tests/fixtures/fleet/MANIFEST): Asterisk 22.10.1 gave one analytics block of
    +15557716001 (its 603 is a plain decline without HEP), FreeSWITCH 1.11.1 two. A daemon on each, served by
    the project's AMI and ESL servers replaying the recordings: one alert, count 3, both PBXes in it."""
    caller = "+15557716001"
    ami_stream = event_stream((FLEET_FIXTURES / "s1-ast22.ami").read_bytes())
    esl_frames = load_event_frames(FLEET_FIXTURES / "s1-fs1111.esl", types=("text/event-plain",))
    esl = EslServer(password="ClueCon", plain=esl_frames, default=EslSession(heartbeat_every=0.5)).start()
    try:
        async with AmiServer(username="br", secret="pw", sessions=[AmiSession(stream=ami_stream)]
                             + [AmiSession() for _ in range(5)]) as ami, HttpSink() as sink:
            ast = Daemon(tmp_path, "ast", None, redis_server.url, sink.url, connector_line=(
                f"{{name: pbx-ast, type: asterisk, port: {ami.port}, username: br, secret: pw}}"))
            fs = Daemon(tmp_path, "fs", None, redis_server.url, sink.url, connector_line=(
                f"{{name: pbx-fs, type: freeswitch, host: 127.0.0.1, port: {esl.port}, password: ClueCon}}"))
            try:
                for d in (ast, fs):
                    d.start()
                await until(lambda: delivered(sink, caller)["new"] == 1, what="the fleet's alert")
                await until(lambda: told(ast, fs) == 1, what="the standby's row told")
                assert delivered(sink, caller) == Counter({"new": 1})
                alert = next(a for r in sink.requests if r.json for a in r.json["alerts"])
                assert alert["count"] == 3 and alert["connectors"] == {"pbx-ast": 1, "pbx-fs": 2}
                assert alert["sip_codes"] == {"603": 1, "608": 2}
                reports = [d.fleet() for d in (ast, fs)]
                assert [r["members"] for r in reports] == [2, 2] and sum(r["notifies"] for r in reports) == 1
            finally:
                ast.stop()
                fs.stop()
    finally:
        esl.stop()


async def test_a_sentinel_failover_moves_the_node_to_the_new_master(tmp_path: Path):
    """A master, its replica and a real Sentinel (redis-server --sentinel): the master stops, Sentinel promotes
    the replica, and the node, lost for a moment, asks Sentinel again and shares through the new master,
    where the stream (replicated) still holds the call of before."""
    binary = require_tool("redis-server", "redis-server")
    master = RedisServer(binary, tmp_path / "master").start()
    replica = RedisServer(binary, tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(master.port))).start()
    sentinel_port = free_port()
    (tmp_path / "sentinel").mkdir()
    conf = tmp_path / "sentinel" / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path / 'sentinel'}\n"
                    f"sentinel monitor fleet 127.0.0.1 {master.port} 1\n"
                    "sentinel down-after-milliseconds fleet 1000\nsentinel failover-timeout fleet 5000\n")
    sentinel = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    judged: list[CallOutcome] = []
    cfg = FleetConfig.model_validate({"sentinels": [f"127.0.0.1:{sentinel_port}"], "service": "fleet",
                                      "lease": "2.5s", "timeout": "0.5s", "retry": "0.3s"})
    node = FleetNode(cfg, member="a", retention_s=3600.0, judge=lambda o, c: judged.append(o))
    try:
        await until(lambda: replica.info("replication").get("master_link_status") == "up", what="replica in sync")
        assert await node.join([])
        node.start()
        node.submit(outcome("before"), CLS)
        await until(lambda: len(judged) == 1, what="the call through the first master")
        await until(lambda: replica.client().xlen("blockradar:outcomes") == 1, what="the entry replicated")
        master.stop()
        await until(lambda: replica.info("replication").get("role") == "master", timeout=30, what="the failover")
        await until(lambda: node.mode == SHARED and node.stats["outages"] >= 1, timeout=30,
                    what="the node back, on the new master")
        node.submit(outcome("after"), CLS)
        await until(lambda: len(judged) == 2, what="the call through the new master")
        assert [o.call_id for o in judged] == ["before", "after"]
        assert replica.client().xlen("blockradar:outcomes") == 2
    finally:
        await node.stop()
        sentinel.terminate()
        sentinel.wait(timeout=10)
        replica.stop()
        master.stop()
