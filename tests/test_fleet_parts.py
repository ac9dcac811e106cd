"""The fleet's parts (issue 16): the shared entry on the wire (and hostile ones), the notification log's rules,
the ``fleet:`` config, and one node against a real Redis (Debian's redis-server): a call published twice
counts once, a stranger's garbage in the stream is counted and skipped, and a node that loses Redis counts
alone, then publishes its backlog without counting anything twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blockradar.alerting.notifiers.base import Notification
from blockradar.classification import Classification, RuleRef
from blockradar.config import ConfigError, FleetConfig, load_config
from blockradar.fleet.node import LOCAL, SHARED, FleetNode
from blockradar.fleet.told import NotificationGate, covers, transitions, without_told
from blockradar.fleet.wire import call_key, decode, encode
from blockradar.outcome import CallOutcome
from blockradar.redress import redress_from
from blockradar.testing.redis_server import RedisServer
from tests.polling import until
from tests.servers.debian_tools import require_tool
from tests.servers.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)

CLS = Classification("analytics_block", "high", RuleRef("608-rejected", "default.yaml", 12, "RFC 8688"), True)


def outcome(call_id: str = "1732900000.1", caller: str = "+15557650001", **more: object) -> CallOutcome:
    fields: dict[str, object] = dict(pbx="asterisk", connector="pbx-a", call_id=call_id, started_at=1_764_000_000.5,
                                     ended_at=1_764_000_001.25, caller_number=caller, callee_number="+12125550100",
                                     trunk="carrier-a", sip_code=608, sip_phrase="Rejected")
    fields.update(more)
    return CallOutcome(**fields)  # type: ignore[arg-type]


# -- the wire ------------------------------------------------------------------------------------------
def test_an_entry_carries_the_outcome_and_its_verdict_unchanged():
    reason = 'SIP;cause=603;text="v=analytics1;url=https://redress.example/r;id=AB12";location=LN'
    original = outcome(reason=reason, headers={"X-Carrier": "c"}, answered=False, q850_cause=21,
                       sip_call_id="abc@10.0.0.1")
    assert original.redress is not None
    back, cls = decode(encode(original, CLS))
    assert back == original
    assert (cls.category, cls.confidence, cls.rule.name, cls.analytics_block) == ("analytics_block", "high",
                                                                                  "608-rejected", True)
    explicit = outcome(redress=redress_from(None, "<https://cnam.example/jws>;purpose=jwscard"))
    assert decode(encode(explicit, CLS))[0].redress == explicit.redress


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[]", b'"text"', b"\xff\xfe", b"[" * 5000 + b"]" * 5000,  # nested past the recursion limit
    b'{"v":' * 3000 + b"1" + b"}" * 3000,
    b'{"pbx":"asterisk","connector":"x","call_id":"1"}',  # no verdict
    b'{"pbx":"asterisk","connector":"x","call_id":"1","v":["a","certain","r",true]}',  # not a confidence
    b'{"pbx":"asterisk","connector":"x","v":["a","high","r",true]}',  # no call id
    b'{"pbx":"asterisk","connector":"x","call_id":1,"v":["a","high","r",true]}',
    b'{"pbx":"asterisk","connector":"x","call_id":"1","sip_code":"608","v":["a","high","r",true]}',
    b'{"pbx":"asterisk","connector":"x","call_id":"1","ended_at":true,"v":["a","high","r",true]}',
    b'{"pbx":"asterisk","connector":"x","call_id":"1","headers":[1],"v":["a","high","r",true]}',
    b'{"pbx":"asterisk","connector":"x","call_id":"1","redress":"https://x","v":["a","high","r",true]}',
    b'{"pbx":"asterisk","connector":"x","call_id":"1","v":["a","high","r",true],"pad":"' + b"x" * 70_000 + b'"}',
])
def test_what_is_not_an_entry_is_refused(raw: bytes):
    with pytest.raises(ValueError):
        decode(raw)


def test_hostile_values_are_bounded_like_a_connector_bounds_them():
    entry = {"pbx": "asterisk", "connector": "x", "call_id": "c" * 10_000, "caller_number": "9" * 5_000,
             "sip_code": 7000, "ended_at": float("1e300"), "v": ["analytics_block", "high", "r" * 1000, True]}
    back, cls = decode(json.dumps(entry).encode())
    assert len(back.call_id) <= 128 and len(back.caller_number or "") <= 512
    assert back.sip_code is None and back.ended_at is None
    assert len(cls.rule.name) <= 120


# -- the notification log ----------------------------------------------------------------------------------
def note(*alerts: dict[str, object]) -> Notification:
    return Notification(group_key="{threshold='t'}", group_labels={}, status="firing",
                        alerts=[dict(a) for a in alerts], created_at=1000.0)  # type: ignore[misc]


NEW_A = {"fingerprint": "t|n=1", "state": "firing", "change": "new", "started_at": "1970-01-01T00:16:40.000Z"}
OLD_B = {"fingerprint": "t|n=2", "state": "firing", "change": "firing", "started_at": "1970-01-01T00:10:00.000Z"}
GONE_C = {"fingerprint": "t|n=3", "state": "resolved", "change": "resolved", "started_at": "1970-01-01T00:10:00.000Z",
          "resolved_at": "1970-01-01T00:16:30.000Z"}


@pytest.mark.parametrize("entry, transition, told", [
    (None, ("f", "firing", 1000.0, 1000.0), False),
    (("firing", 1000.0, "a"), ("f", "firing", 1000.0, 1000.0), True),
    (("firing", 997.0, "a"), ("f", "firing", 1000.0, 1000.0), True),  # a tick apart on two daemons
    (("firing", 900.0, "a"), ("f", "firing", 1000.0, 1000.0), False),  # an earlier episode
    (("resolved", 950.0, "a"), ("f", "firing", 1000.0, 1000.0), False),  # the earlier episode's resolve
    (("resolved", 1100.0, "a"), ("f", "firing", 1000.0, 1000.0), True),  # resolved since: stale news
    (("firing", 1000.0, "a"), ("f", "resolved", 1200.0, 1000.0), False),  # told firing, not yet resolved
    (("resolved", 1199.0, "a"), ("f", "resolved", 1200.0, 1000.0), True),
    (("resolved", 1050.0, "a"), ("f", "resolved", 1400.0, 1000.0), True),  # the episode's resolve, told earlier
    (("resolved", 900.0, "a"), ("f", "resolved", 1400.0, 1000.0), False),  # an earlier episode's resolve
    (("firing", 1500.0, "a"), ("f", "resolved", 1400.0, 1000.0), True),  # fired again since: the resolve is stale
])
def test_what_the_log_says_was_told(entry, transition, told):
    assert covers(entry, transition) is told


def test_a_notification_tells_its_new_alerts_and_its_resolves_only():
    found = transitions(note(NEW_A, OLD_B, GONE_C))
    assert found == [("t|n=1", "firing", 1000.0, 1000.0), ("t|n=3", "resolved", 990.0, 600.0)]
    rest = without_told(note(NEW_A, OLD_B, GONE_C), {"t|n=3"})
    assert rest is not None and [a["fingerprint"] for a in rest.alerts] == ["t|n=1", "t|n=2"]
    rest = without_told(note(NEW_A, OLD_B, GONE_C), {"t|n=1"})
    assert rest is not None and [a.get("change") for a in rest.alerts] == ["firing", "firing", "resolved"]
    assert without_told(note(NEW_A, OLD_B, GONE_C), {"t|n=1", "t|n=3"}) is None


class View:
    """A fleet as the gate sees it, with a log in a dict."""

    member = "b"

    def __init__(self, shared: bool, leader: bool, log: dict[str, str]) -> None:
        self.shared, self.leader, self.log = shared, leader, log
        self.alone = not shared

    def is_leader(self) -> bool:
        return self.leader

    async def told_entries(self, notifier: str, fingerprints: list[str]) -> list[bytes | None]:
        return [self.log[fp].encode() if fp in self.log else None for fp in fingerprints]

    async def record_told(self, notifier: str, entries: list[tuple[str, str]]) -> None:
        self.log.update(entries)


@pytest.mark.parametrize("shared, leader, log, verdict", [
    (False, False, {}, "send"),  # alone: tell what it sees
    (None, False, {}, "wait"),  # starting or stopped: neither alone nor shared
    (True, True, {}, "send"),
    (True, False, {}, "wait"),  # the holder is to tell it
    (True, False, {"t|n=1": "firing|1000.000|a", "t|n=3": "resolved|990.000|a"}, "told"),
    (True, True, {"t|n=1": "firing|1000.000|a", "t|n=3": "resolved|990.000|a"}, "told"),
    (True, True, {"t|n=1": "firing|1000.000|a"}, "send"),  # the resolve is news
])
async def test_the_gate(shared, leader, log, verdict):
    view = View(bool(shared), leader, dict(log))
    if shared is None:
        view.alone = False
    gate = NotificationGate(view)  # type: ignore[arg-type]
    got, sent = await gate.check("webhook", note(NEW_A, OLD_B, GONE_C))
    assert got == verdict
    if verdict == "send" and log:
        assert sent is not None and [a.get("change") for a in sent.alerts] == ["firing", "firing", "resolved"]


async def test_the_gate_lets_a_daemons_own_messages_through_and_logs_what_was_told():
    view = View(True, False, {})
    gate = NotificationGate(view)  # type: ignore[arg-type]
    self_alert = Notification(group_key="self/fleet-alone/a", group_labels={}, status="firing",
                              alerts=[dict(NEW_A)], created_at=1.0)  # type: ignore[list-item]
    assert (await gate.check("webhook", self_alert))[0] == "send"
    repeat = note(OLD_B)
    assert (await gate.check("webhook", repeat))[0] == "told"  # a standby never repeats
    await gate.delivered("webhook", note(NEW_A, GONE_C))
    assert view.log == {"t|n=1": "firing|1000.000|b", "t|n=3": "resolved|990.000|b"}


# -- the config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fleet, message", [
    ('{redis: "http://10.0.0.7:6379"}', "expected a redis:// or rediss:// URL"),
    ("{name: a}", "give exactly one of redis (a URL) or sentinels"),
    ('{redis: "redis://h:6379/0", sentinels: ["h:26379"]}', "give exactly one of redis"),
    ('{sentinels: ["h"]}', "expected host:port"),
    ('{redis: "redis://h:6379/0", lease: 4s, timeout: 1s}', "lease must be at least 5 times timeout"),
    ('{redis: "redis://h:6379/0", name: "a b"}', "fleet.name"),
])
def test_a_bad_fleet_section_stops_start_up_with_file_line_key(tmp_path: Path, fleet: str, message: str):
    config = tmp_path / "blockradar.yaml"
    config.write_text(textwrap.dedent(f"""\
        store: {tmp_path / "state.db"}
        fleet: {fleet}
        """))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    text = str(caught.value)
    assert f"{config}:2:" in text and "fleet" in text and message in text


def test_the_redis_password_never_shows(tmp_path: Path):
    from blockradar.cli.run import config_secrets
    from blockradar.fleet.client import where

    config = tmp_path / "blockradar.yaml"
    (tmp_path / "redis.pw").write_text("s3cr3t-pw\n")
    config.write_text(textwrap.dedent(f"""\
        store: {tmp_path / "state.db"}
        fleet: {{redis: "redis://:hunter2@10.0.0.7:6379/0", password_file: {tmp_path / "redis.pw"}}}
        """))
    cfg = load_config(config).config
    assert cfg.fleet is not None
    assert "hunter2" not in repr(cfg) and "s3cr3t-pw" not in repr(cfg)
    assert "hunter2" not in where(cfg.fleet)
    assert {"hunter2", "s3cr3t-pw"} <= set(config_secrets(cfg))
    (tmp_path / "sentinel.pw").write_text("s3nt1nel\n")
    config.write_text(textwrap.dedent(f"""\
        store: {tmp_path / "state.db"}
        fleet: {{sentinels: ["10.0.0.7:26379"], sentinel_password_file: {tmp_path / "sentinel.pw"}}}
        """))
    sentinel = load_config(config).config
    assert sentinel.fleet is not None and sentinel.fleet.sentinel_password is not None
    assert "s3nt1nel" in config_secrets(sentinel) and "s3nt1nel" not in repr(sentinel)


# -- one node against a real Redis ----------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path: Path):
    with RedisServer(require_tool("redis-server", "redis-server"), tmp_path / "redis") as server:
        yield server


def node_on(url: str, name: str, judged: list[CallOutcome], **more: object) -> FleetNode:
    cfg = FleetConfig.model_validate({"redis": url, "name": name, "lease": "1.5s", "timeout": "0.3s",
                                      "retry": "0.2s", **more})
    return FleetNode(cfg, member=name, retention_s=3600.0, judge=lambda o, c: judged.append(o))


async def test_a_call_two_daemons_report_counts_once_and_garbage_is_skipped(redis_server: RedisServer):
    seen_a: list[CallOutcome] = []
    seen_b: list[CallOutcome] = []
    a, b = node_on(redis_server.url, "a", seen_a), node_on(redis_server.url, "b", seen_b)
    assert await a.join([]) and await b.join([])
    assert [batch async for batch in a.history()] == [[]]
    a.start()
    b.start()
    try:
        same = outcome("1732900000.7")
        a.submit(same, CLS)
        b.submit(same, CLS)  # the HA twin watching the same PBX
        stranger = redis_server.client()
        stranger.xadd("blockradar:outcomes", {"o": b"{not json"})
        stranger.xadd("blockradar:outcomes", {"junk": b"1"})
        a.submit(outcome("1732900000.8"), CLS)
        await until(lambda: len(seen_a) == 2 and len(seen_b) == 2, timeout=10, what="both nodes judged 2 calls")
        await asyncio.sleep(0.3)
        assert [o.call_id for o in seen_a] == [o.call_id for o in seen_b] == ["1732900000.7", "1732900000.8"]
        assert a.stats["bad"] == b.stats["bad"] == 2
        assert a.stats["duplicates"] + b.stats["duplicates"] == 1
        assert stranger.pttl(f"blockradar:seen:{call_key(same)}") > 3_500_000  # the dedup key lives as long as
    finally:  # the window (an hour here), then goes
        await a.stop()
        await b.stop()


@contextlib.asynccontextmanager
async def two_nodes_a_behind_a_relay(server: RedisServer) -> AsyncIterator[tuple[FleetNode, list[CallOutcome],
                                                                                  FleetNode, list[CallOutcome],
                                                                                  TcpProxy]]:
    """Nodes a and b on one Redis, a through a relay the test cuts and mends; each with what it judged."""
    proxy = await TcpProxy(server.port).start()
    judged: list[CallOutcome] = []
    other: list[CallOutcome] = []
    a = node_on(f"redis://127.0.0.1:{proxy.port}/0", "a", judged)
    b = node_on(server.url, "b", other)
    try:
        await a.join([])
        await b.join([])
        a.start()
        b.start()
        yield a, judged, b, other, proxy
    finally:
        await a.stop()
        await b.stop()
        await proxy.stop()


async def test_a_node_that_loses_redis_counts_alone_then_shares_without_counting_twice(redis_server: RedisServer):
    async with two_nodes_a_behind_a_relay(redis_server) as (a, judged, b, other, proxy):
        modes: list[bool] = []
        a.on_mode = lambda shared, detail: modes.append(shared)
        a.submit(outcome("1"), CLS)
        await until(lambda: len(judged) == 1 and len(other) == 1, what="the first call shared")
        await proxy.cut()
        await until(lambda: a.mode == LOCAL, what="a alone")
        a.submit(outcome("2"), CLS)  # counted at once, alone
        b.submit(outcome("3", connector="pbx-b"), CLS)  # b's call while a cannot see it
        await until(lambda: len(judged) == 2 and len(other) == 2, what="each counts its own")
        assert a.backlog == 1
        await proxy.mend()
        await until(lambda: a.mode == SHARED, what="a shares again")
        await until(lambda: len(judged) == 3 and len(other) == 3, what="each gets the other's call of the outage")
        await asyncio.sleep(0.5)
        assert sorted(o.call_id for o in judged) == sorted(o.call_id for o in other) == ["1", "2", "3"]
        assert a.backlog == 0 and a.stats["skipped"] == 1 and modes == [False, True]


def test_the_readmes_fleet_section_is_a_config_this_version_reads(tmp_path: Path):
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("## Running a fleet")
    blocks = re.findall(r"```yaml\n(.*?)```", readme[start:readme.index("\n## ", start)], re.S)
    assert len(blocks) == 1
    (tmp_path / "redis.pw").write_text("s3cret\n")
    config = tmp_path / "blockradar.yaml"
    config.write_text(blocks[0].replace("/etc/blockradar/redis.pw", str(tmp_path / "redis.pw"))
                      + f"store: {tmp_path / 'state.db'}\n")
    fleet = load_config(config).config.fleet
    assert fleet is not None and fleet.name == "pbx-07" and fleet.lease == 15.0 and fleet.password is not None


async def test_tls_and_a_password_and_a_server_that_is_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """``rediss://`` with ``ca_file`` and ``password``: the node joins and shares; with a CA that did not sign
    the server's certificate it goes on alone, and neither the password nor the URL's is ever logged."""
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(files[0])
    cert.private_key_pem.write_to_path(files[1])
    ca.cert_pem.write_to_path(files[2])
    other.cert_pem.write_to_path(tmp_path / "other.pem")
    binary = require_tool("redis-server", "redis-server")
    with RedisServer(binary, tmp_path / "redis", tls=files, password="t0p-s3cret") as server:
        judged: list[CallOutcome] = []
        url = f"rediss://:url-s3cret@127.0.0.1:{server.port}/0"
        good = node_on(url, "a", judged, ca_file=str(files[2]), password="t0p-s3cret")
        assert await good.join([])
        good.start()
        good.submit(outcome("tls-1"), CLS)
        await until(lambda: len(judged) == 1, what="the call back through TLS")
        await good.stop()
        untrusted = node_on(url, "b", [], ca_file=str(tmp_path / "other.pem"), password="t0p-s3cret")
        assert not await untrusted.join([])
        assert untrusted.mode == LOCAL and "SSL" in (untrusted.error or "").upper()
        await untrusted.stop()
    text = caplog.text + repr(untrusted.report()) + repr(good.report())
    assert "t0p-s3cret" not in text and "url-s3cret" not in text


# -- the gate inside the outbox ----------------------------------------------------------------------------
async def test_a_row_waiting_for_the_notifier_holds_back_no_self_alert_and_is_let_go_after_an_hour(tmp_path: Path):
    from blockradar.alerting.notifiers.webhook import WebhookConfig, WebhookNotifier
    from blockradar.alerting.outbox import GATE_GIVE_UP_S, Outbox, OutboxConfig
    from blockradar.clock import ManualClock
    from blockradar.store import Store
    from tests.servers.http_sink import HttpSink

    clock = ManualClock(1_700_000_000.0)
    view = View(True, False, {})  # a standby: the holder tells the fleet's alerts
    async with HttpSink() as sink:
        store = Store(tmp_path / "state.db")
        outbox = Outbox(store, [WebhookNotifier(WebhookConfig(name="webhook", url=sink.url))],
                        OutboxConfig(poll_interval=0.02), clock=clock)
        outbox.gate = NotificationGate(view)  # type: ignore[arg-type]
        await outbox.start()
        try:
            outbox.enqueue(note(NEW_A))
            self_alert = Notification(group_key="self/pbx-link-down/pbx-a", group_labels={}, status="firing",
                                      alerts=[{"fingerprint": "self/pbx-link-down/pbx-a", "state": "firing",
                                               "change": "new"}], created_at=clock.now())  # type: ignore[list-item]
            outbox.enqueue(self_alert)
            await until(lambda: len(sink.requests) == 1, timeout=5, what="the self-alert past the waiting row")
            assert sink.requests[0].json["group_key"] == "self/pbx-link-down/pbx-a"
            assert [r.status for r in store.outbox_rows()] == ["pending", "sent"]
            clock.advance(GATE_GIVE_UP_S + 1)
            outbox.wake()
            await until(lambda: store.outbox_rows()[0].status == "told", timeout=5, what="the hour-old row let go")
            assert len(sink.requests) == 1 and "did not tell it in 1h" in (store.outbox_rows()[0].last_error or "")
        finally:
            await outbox.stop()
            store.close()


async def test_a_standby_that_loses_redis_for_a_moment_sends_nothing_the_holder_sends():
    from blockradar.fleet.told import NotificationGate as Gate

    node = node_on("redis://127.0.0.1:1/0", "b", [])  # nothing listens there
    assert not await node.join([])  # lost at once ...
    gate = Gate(node)
    assert (await gate.check("webhook", note(NEW_A)))[0] == "wait"  # ... but for less than the lease: the holder's
    node._local_since -= node.cfg.lease  # as if the lease had passed
    assert (await gate.check("webhook", note(NEW_A)))[0] == "send"  # alone: it tells what it sees
    from prometheus_client import CollectorRegistry, generate_latest

    from blockradar.metrics import FleetCollector

    registry = CollectorRegistry()
    registry.register(FleetCollector(node.report, gate.counts))
    exposed = generate_latest(registry).decode()  # /metrics while alone (it raised: members is unknown then)
    assert "blockradar_fleet_shared 0.0" in exposed and "blockradar_fleet_notifier 1.0" in exposed
    assert "blockradar_fleet_members" not in exposed and 'blockradar_fleet_gate_total{verdict="send"} 1.0' in exposed
    await node.stop()


async def test_redis_restarted_without_its_data_is_noticed_and_the_node_goes_on(tmp_path: Path,
                                                                                 caplog: pytest.LogCaptureFixture):
    binary = require_tool("redis-server", "redis-server")
    server = RedisServer(binary, tmp_path / "redis", persist=False).start()
    judged: list[CallOutcome] = []
    a = node_on(server.url, "a", judged)
    try:
        assert await a.join([])
        a.start()
        a.submit(outcome("before"), CLS)
        await until(lambda: len(judged) == 1, what="the first call")
        server.stop()
        await until(lambda: a.mode == LOCAL, what="a alone")
        server.start()  # empty: no persistence
        await until(lambda: a.mode == SHARED, what="a back")
        a.submit(outcome("after"), CLS)
        await until(lambda: len(judged) == 2, what="the next call, shared")
        assert a.stats["data_lost"] == 1 and "came back without the fleet's data" in caplog.text
    finally:
        await a.stop()
        server.stop()


async def test_calls_counted_alone_while_redis_comes_back_are_all_published(redis_server: RedisServer):
    """The backlog is published in batches, with awaits between them: calls that come meanwhile are published
    too, before the node shares again (else the other daemons would never count them)."""
    async with two_nodes_a_behind_a_relay(redis_server) as (a, judged, _b, other, proxy):
        await proxy.cut()
        await until(lambda: a.mode == LOCAL, what="a alone")
        for i in range(1200):  # three publish batches
            a.submit(outcome(f"alone-{i}"), CLS)
        await proxy.mend()
        i = 0
        while a.mode != SHARED:  # calls keep coming while the backlog is published
            a.submit(outcome(f"during-{i}"), CLS)
            i += 1
            await asyncio.sleep(0.001)
        await until(lambda: len(other) == len(judged), timeout=20, what="b counts every call a counted alone")
        assert a.backlog == 0 and len(judged) == 1200 + i and i > 0
        assert sorted(o.call_id for o in other) == sorted(o.call_id for o in judged)

