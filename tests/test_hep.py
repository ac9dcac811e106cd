"""The HEP source end to end over loopback: a daemon with a ``hep:`` section, the project's AMI server playing
a *plain* Asterisk (no dialplan glue: no SIP Call-ID, no phrase, no Reason in AMI) and HEPv3 datagrams sent
over UDP as Asterisk's res_hep_pjsip sends them. The carrier's 603 "Network Blocked" with its ATIS Reason
reaches the outcome through the join, so a 603+ is told from a plain 603; the join's figures, the bad and
unauthorised datagrams and the orphans are counted in /healthz and /metrics; forwarding re-sends every
datagram unchanged; ``record --hep`` writes the records ``replay`` reads."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from blockradar.connectors.hep.join import CarrierResponse, HepJoin
from blockradar.connectors.hep.sip import parse_sip
from blockradar.connectors.hep.source import HepReader
from blockradar.connectors.hep.wire import build_hep, read_records, record
from blockradar.numbers import NumberPlan
from blockradar.outcome import CallOutcome
from blockradar.store import Store
from blockradar.testing.ami import AmiServer, AmiSession, event_stream
from blockradar.testing.ports import free_udp_port
from tests.polling import until

pytestmark = pytest.mark.timeout(60)

CALLER, PBX, CARRIER = "+15557654321", ("10.0.0.1", 5060), ("192.0.2.7", 5060)
ATIS = 'SIP;cause=603;text="v=analytics1;url=https://redress.example.com/r;id=12345";location=LN'


def invite(call_id: str, callee: str) -> bytes:
    return (f"INVITE sip:{callee}@carrier.example;user=phone SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{call_id}\r\n"
            f"From: \"Sales\" <sip:{CALLER}@pbx.example>;tag=a1\r\nTo: <sip:{callee}@carrier.example>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 102 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


def response(call_id: str, callee: str, status: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (f"SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{call_id}\r\n"
            f"From: \"Sales\" <sip:{CALLER}@pbx.example>;tag=a1\r\nTo: <sip:{callee}@carrier.example>;tag=c9\r\n"
            f"i: {call_id}\r\nCSeq: 102 INVITE\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def hep(payload: bytes, outbound: bool, at: float, key: str | None = "lab-key") -> bytes:
    src, dst = (PBX, CARRIER) if outbound else (CARRIER, PBX)
    return build_hep(payload, src=src, dst=dst, time=at, capture_id=1234, auth_key=key)


def test_the_reader_keeps_each_carrier_response_once_with_its_invite():
    reader = HepReader(NumberPlan(), auth_key="lab-key")
    now = 1.8e9
    seen = [reader.feed(hep(invite("c1", "+12025550123"), True, now)),
            reader.feed(hep(response("c1", "+12025550123", "100 Trying"), False, now + 0.01)),
            reader.feed(hep(response("c1", "+12025550123", "603 Network Blocked", f"Reason: {ATIS}",
                                     "Reason: Q.850;cause=21", "X-Carrier-Id: blk-7"), False, now + 0.4)),
            reader.feed(hep(response("c1", "+12025550123", "603 Network Blocked", f"Reason: {ATIS}"), False,
                            now + 0.9)),  # a retransmission
            reader.feed(hep(invite("c2", "+12025550124"), True, now, key="wrong")),
            reader.feed(b"HEP3\x00\x07!"),
            reader.feed(hep(b"not sip at all", False, now))]
    got = [r for r in seen if r is not None]
    assert len(got) == 1
    (carrier,) = got
    assert (carrier.call_id, carrier.status, carrier.phrase) == ("c1", 603, "Network Blocked")
    assert carrier.reason == f"{ATIS}, Q.850;cause=21" and carrier.headers == {"X-Carrier-Id": "blk-7"}
    assert (carrier.dialled, carrier.caller, carrier.at) == ("+12025550123", CALLER, now + 0.4)
    assert carrier.src == "192.0.2.7:5060" and carrier.dst == "10.0.0.1:5060"
    s = reader.stats
    assert (s.datagrams, s.invites, s.responses, s.retransmissions, s.unauthorized, s.bad, s.other) == (
        7, 1, 1, 1, 1, 1, 2)  # other: the 100 Trying and the payload that is no SIP message, never parsed


def outcome(callee: str, ended_at: float, **fields) -> CallOutcome:
    return CallOutcome(pbx="asterisk", connector="pbx1", call_id=fields.pop("call_id", f"u{ended_at}"),
                       ended_at=ended_at, caller_number=CALLER, callee_number=callee, trunk="carrier",
                       sip_code=fields.pop("sip_code", 603), **fields)


def carrier(call_id: str, callee: str, at: float, status: int = 603) -> CarrierResponse:
    return CarrierResponse.from_sip(parse_sip(response(call_id, callee, f"{status} Network Blocked",
                                                      f"Reason: {ATIS}")), at,
                                    parse_sip(invite(call_id, callee)), NumberPlan())


@pytest.mark.parametrize("case", ["call-id, response first", "call-id, outcome first", "number, response first",
                                  "number, outcome first", "no response", "too far apart", "answered"])
def test_the_join(case: str):
    out: list[CallOutcome] = []
    join = HepJoin(out.append, wait_s=2.0, window_s=10.0)
    t = 1000.0
    by_call_id = case.startswith("call-id")
    mine = outcome("+12025550123", t, sip_call_id="c1" if by_call_id else None,
                   **({"answered": True, "sip_code": None} if case == "answered" else {}))
    if case.endswith("response first"):
        join.add_response(carrier("c1", "+12025550123", t - 0.05), t - 0.05)
        join.add_outcome(mine, t)
    elif case.endswith("outcome first"):
        join.add_outcome(mine, t)
        assert out == []  # it waits for its twin
        join.add_response(carrier("c1", "+12025550123", t + 0.3), t + 0.3)
    elif case == "too far apart":
        join.add_response(carrier("c1", "+12025550123", t - 30), t - 30)
        join.add_outcome(mine, t)
    else:
        join.add_outcome(mine, t)
    join.tick(t + 2.5)
    join.tick(t + 60)
    assert len(out) == 1
    s = join.stats
    if case in ("no response", "too far apart"):
        assert out[0] is mine and s.outcomes_unjoined == 1
        assert s.orphan_responses == (1 if case == "too far apart" else 0)
    elif case == "answered":
        assert out[0] is mine and s.outcomes_without_response == 1
    else:
        merged = out[0]
        assert merged.sip_phrase == "Network Blocked" and merged.reason == ATIS
        assert merged.redress is not None and merged.redress.url == "https://redress.example.com/r"
        assert merged.sip_call_id == "c1"
        assert (s.joined_by_call_id, s.joined_by_number) == ((1, 0) if by_call_id else (0, 1))


def test_the_join_takes_each_response_once_and_the_earliest_first():
    """Two attempts to the same number a few seconds apart, plain Asterisk: each outcome gets its own
    response; the PBX's relay of the carrier's answer to a phone (later, same number) is not taken."""
    out: list[CallOutcome] = []
    join = HepJoin(out.append, wait_s=2.0, window_s=10.0)
    join.add_response(carrier("c1", "+12025550123", 100.0), 100.0)
    join.add_response(carrier("phone-leg", "+12025550123", 100.02), 100.02)
    join.add_outcome(outcome("+12025550123", 100.05), 100.05)
    join.add_response(carrier("c2", "+12025550123", 104.0, status=608), 104.0)
    join.add_outcome(outcome("+12025550123", 104.1, sip_code=608), 104.1)
    assert [o.sip_call_id for o in out] == ["c1", "c2"]
    join.tick(200.0)
    assert join.stats.orphan_responses == 1 and join.pending == 0


def test_the_join_is_bounded():
    out: list[CallOutcome] = []
    join = HepJoin(out.append, wait_s=2.0, window_s=10.0, max_pending=100)
    for i in range(1000):
        join.add_response(carrier(f"r{i}", f"+1202555{i:04d}", 5.0), 5.0)
        join.add_outcome(outcome(f"+1303555{i:04d}", 5.0, sip_call_id=f"o{i}"), 5.0)
    assert join.pending <= 200 and join.stats.dropped == 1800 and len(out) == 900


FIXTURES = Path(__file__).parent / "fixtures" / "asterisk"


def plain_call(name: str) -> bytes:
    """A recorded call of a plain Asterisk 22 (no glue): AMI has its 603 and Q.850 cause, nothing more. Its
    old PBX times are replaced by the receive time (clock skew), as a live daemon does."""
    return event_stream((FIXTURES / name).read_bytes())




async def test_a_plain_asterisk_outcome_gets_the_carriers_603_plus_from_hep(tmp_path: Path):
    from blockradar.config import load_config
    from blockradar.daemon import Daemon

    port, upstream_port = free_udp_port(), free_udp_port()
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # Homer, upstream: gets every datagram
    upstream.bind(("127.0.0.1", upstream_port))
    upstream.settimeout(5)
    store = tmp_path / "state.db"
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw}}
            hep: {{listen: "127.0.0.1:{port}", password: lab-key, wait: 1s, window: 3s,
                   forward: "127.0.0.1:{upstream_port}"}}
            store: {store}
            http: null
            """))
        daemon = Daemon(load_config(config))
        await daemon.start()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await until(lambda: any(login.accepted for login in ami.logins), what="the daemon's login")
            now = time.time()
            # the two recorded calls' dialled numbers; the orphan's leg is one the PBX never reports
            blocked, orphan = "+15551230002", "+12025550125"  # +15551230003 (the plain 603) has no HEP
            sent = [hep(invite("c-blocked", blocked), True, now), hep(response(
                        "c-blocked", blocked, "603 Network Blocked", f"Reason: {ATIS}"), False, now + 0.3),
                    hep(invite("c-orphan", orphan), True, now),
                    hep(response("c-orphan", orphan, "608 Rejected"), False, now + 0.2),
                    hep(invite("c-x", blocked), True, now, key="wrong"), b"HEP3 junk"]
            for datagram in sent:
                sender.sendto(datagram, ("127.0.0.1", port))
            await until(lambda: daemon.hep_reader.stats.datagrams == len(sent), what="the datagrams")
            # the PBX reports both legs, without any SIP detail: only its own 603 (Cause 21)
            for name in ("02-603plus-network-blocked.ami", "03-603-decline.ami"):
                await ami.push(plain_call(name))
            await until(lambda: len(db_rows(store)) == 2, timeout=15, what="both outcomes stored")
            await until(lambda: daemon.hep_join.stats.orphan_responses == 1, timeout=10, what="the orphan")
            health = daemon.health_report()[1]["hep"]
            from prometheus_client import generate_latest

            metrics = generate_latest(daemon.registry).decode()
        finally:
            sender.close()
            await daemon.stop(flush_s=2.0)
    forwarded = [upstream.recvfrom(70_000)[0] for _ in sent]
    upstream.close()
    assert forwarded == sent  # unchanged, the bad and unauthorised ones too (Homer judges them itself)
    with Store(store) as db:
        rows = {o.callee_number: o for o in db.iter_outcomes(0)}
    joined, alone = rows["+15551230002"], rows["+15551230003"]
    assert (joined.sip_code, joined.sip_phrase, joined.reason) == (603, "Network Blocked", ATIS)
    assert joined.redress is not None and joined.redress.url == "https://redress.example.com/r"
    assert joined.sip_call_id == "c-blocked"
    assert (alone.sip_code, alone.sip_phrase, alone.reason) == (603, None, None)
    assert sorted(r["category"] for r in db_rows(store)) == ["analytics_block", "declined"]
    assert health["joined_by_number"] == 1 and health["outcomes_unjoined"] == 1 and health["orphan_responses"] == 1
    assert health["unauthorized"] == 1 and health["bad"] == 1 and health["forwarded"] == len(sent)
    assert 'blockradar_hep_outcomes_total{join="number"} 1.0' in metrics
    assert 'blockradar_hep_datagrams_total{result="unauthorized"} 1.0' in metrics
    assert "blockradar_hep_orphan_responses_total 1.0" in metrics


def db_rows(store: Path) -> list[dict]:
    with Store(store) as db:
        return db.outcome_rows(0)


def test_record_hep_writes_the_records_replay_reads(tmp_path: Path):
    port = free_udp_port()
    out = tmp_path / "calls.hep"
    proc = subprocess.Popen([sys.executable, "-m", "blockradar", "record", "--hep", "--listen", f"127.0.0.1:{port}",
                             "-o", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        assert "recording HEP on udp" in proc.stderr.readline()
        now = time.time()
        sent = [hep(invite("c1", "+12025550123"), True, now),
                hep(response("c1", "+12025550123", "608 Rejected",
                             "Call-Info: <https://redress.example.com/608>;purpose=jwscard"), False, now + 0.2)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            deadline = time.monotonic() + 10
            while (not out.exists() or out.stat().st_size < sum(len(record(d)) for d in sent)) \
                    and time.monotonic() < deadline:
                if not out.exists() or out.stat().st_size == 0:
                    for datagram in sent:
                        sender.sendto(datagram, ("127.0.0.1", port))
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert list(read_records(out.read_bytes())) == sent
    replayed = subprocess.run([sys.executable, "-m", "blockradar", "replay", str(out), "--json", "--stats"],
                              capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    kinds = [json.loads(line)["kind"] for line in replayed.stdout.splitlines()]
    assert kinds[0] == "reader-stats" and "hep-join" in kinds


def test_with_trunk_addresses_two_carriers_dialling_one_number_are_never_swapped():
    out: list[CallOutcome] = []
    join = HepJoin(out.append, wait_s=2.0, window_s=10.0,
                   trunks={"carrier-a": ["192.0.2.7:5060"], "carrier-b": ["198.51.100.9"]})
    from_a = carrier("ca", "+12025550123", 100.0, status=603)
    from_b = carrier("cb", "+12025550123", 100.1, status=603)
    from_b.src = "198.51.100.9:5060"
    join.add_response(from_a, 100.0)
    join.add_response(from_b, 100.1)
    b_leg = CallOutcome(pbx="asterisk", connector="pbx1", call_id="u-b", ended_at=100.2, callee_number="+12025550123",
                        trunk="carrier-b", sip_code=603)
    join.add_outcome(b_leg, 100.2)
    assert [o.sip_call_id for o in out] == ["cb"]  # the earlier response was carrier-a's: not this leg's


def test_the_readme_hep_section_is_a_valid_config(tmp_path: Path, monkeypatch):
    import re

    from blockradar.config import load_config

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### HEP: the carrier's own response"):]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)[:1]
    config = tmp_path / "c.yaml"
    config.write_text(f"connectors: []\nstore: {tmp_path / 's.db'}\n{block}")
    monkeypatch.setenv("HEP_PASSWORD", "lab-hep-key-15")
    hep = load_config(config).config.hep
    assert hep is not None and hep.listen == "127.0.0.1:9060" and hep.wait == 2.0 and hep.window == 10.0
    assert hep.password is not None and hep.password.get_secret_value() == "lab-hep-key-15"
    assert hep.trunks == {"carrier-a": ["203.0.113.5:5060"]} and hep.forward == "10.0.0.5:9060"


def test_replay_reads_hep_as_the_daemon_does(tmp_path: Path):
    """``replay --config`` checks the config's hep.password as the daemon's listener does (a wrong key: every
    datagram refused, nothing joined), and its outcome lines carry what the join added (call_info,
    sip_call_id, headers)."""
    fixture = Path(__file__).parent / "fixtures" / "hep" / "asterisk"

    def replay(password: str) -> list[dict]:
        config = tmp_path / "c.yaml"
        config.write_text(f"connectors: []\nhep: {{password: {password}}}\n")
        run = subprocess.run([sys.executable, "-m", "blockradar", "replay", str(fixture / "ast22-hep-single-608.ami"),
                              str(fixture / "ast22-hep-single-608.hep"), "--config", str(config), "--json",
                              "--no-alerts", "--stats"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return [json.loads(line) for line in run.stdout.splitlines()]

    right = replay("lab-hep-key-15")
    (call,) = [r for r in right if r["kind"] == "outcome"]
    assert call["call_info"].endswith(";purpose=jwscard") and call["sip_call_id"] and call["headers"] == {}
    wrong = replay("not-the-key")
    hep_stats = next(r for r in wrong if r["kind"] == "reader-stats" and r["format"] == "hep")
    assert hep_stats["unauthorized"] == hep_stats["datagrams"] == 4
    (call,) = [r for r in wrong if r["kind"] == "outcome"]
    assert call["call_info"] is None and call["sip_call_id"] is None


def test_the_join_never_gives_a_call_another_calls_words():
    """Review findings: two callers blocked to one number 0.4 s apart, the later-reported one took the other's
    603+; a 486 whose response was lost took another call's 407. Now the caller and the status must agree,
    and a 401/407 challenge is never a carrier's answer."""
    out: list[CallOutcome] = []
    join = HepJoin(out.append, wait_s=2.0, window_s=10.0)
    from_a = carrier("ca", "+12025550123", 100.0)  # caller CALLER, 603 Network Blocked
    join.add_response(from_a, 100.0)
    other_caller = CallOutcome(pbx="asterisk", connector="pbx1", call_id="u-b", ended_at=100.3,
                               caller_number="+15550009999", callee_number="+12025550123", trunk="carrier",
                               sip_code=603)
    join.add_outcome(other_caller, 100.3)
    busy = outcome("+12025550123", 100.4, sip_code=486)
    join.add_outcome(busy, 100.4)
    join.tick(103.0)
    assert out == [other_caller, busy]  # neither took the 603+ of CALLER's call
    join.add_outcome(outcome("+12025550123", 103.1), 103.1)
    assert out[-1].sip_call_id == "ca"  # CALLER's own 603 gets it
    reader = HepReader(NumberPlan())
    reader.feed(hep(invite("c7", "+12025550123"), True, 1.8e9))
    assert reader.feed(hep(response("c7", "+12025550123", "407 Proxy Authentication Required"), False,
                           1.8e9 + 0.1)) is None
    assert reader.stats.challenges == 1
