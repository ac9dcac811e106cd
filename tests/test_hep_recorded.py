"""Real HEP from the lab's PBXes (tests/fixtures/hep/MANIFEST.md): Asterisk 22.10.1 with res_hep_pjsip and a
*plain* dialplan, FreeSWITCH 1.11.1 with sofia's capture-server, each recorded beside its own AMI / ESL stream,
with the SIP truth from the carriers' SIPp traces. Replayed together as the daemon joins them, every failed
call gets the carrier's own status line, every Reason and every Call-Info exactly as the carrier sent them:
so plain Asterisk tells a 603+ from a 603 and carries the 608's jwscard, which AMI alone never does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockradar.cli.replay import join_offline
from blockradar.recordings import read_recording
from blockradar.ruleset import load_ruleset
from blockradar.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "hep"
SETS = [p.with_suffix("") for p in sorted(FIXTURES.glob("*/*.hep"))]
RULES = load_ruleset()


def truth_of(base: Path) -> list[dict]:
    return [json.loads(line) for line in base.with_suffix(".truth.jsonl").read_text().splitlines() if line]


def replayed(base: Path, with_hep: bool = True):
    stream = base.with_suffix(".ami" if base.parent.name == "asterisk" else ".esl")
    outcomes = read_recording(stream).outcomes
    if not with_hep:
        return outcomes, {}
    return join_offline(outcomes, read_recording(base.with_suffix(".hep")).responses, None)


@pytest.mark.parametrize("base", SETS, ids=[p.name for p in SETS])
def test_every_failed_call_carries_what_the_carrier_sent(base: Path):
    outcomes, stats = replayed(base)
    by_callee = {}
    for outcome in outcomes:
        by_callee.setdefault(outcome.callee_number, []).append(outcome)
    truths = truth_of(base)
    checked = 0
    for truth in truths:
        (outcome,) = by_callee[truth["callee"]]
        if truth["final_code"] < 300:
            assert outcome.answered
            continue
        if base.name == "fs1111-hep-big17k":  # FreeSWITCH sent this 17.5 kB 608 with an empty payload
            assert outcome.sip_code == 608 and outcome.call_info is None
            continue
        assert (outcome.sip_code, outcome.sip_phrase) == (truth["final_code"], truth["final_phrase"])
        assert outcome.reason == (", ".join(truth["reason"]) or None)
        assert outcome.call_info == (", ".join(truth["call_info"]) or None)
        if base.parent.name == "freeswitch":
            assert outcome.sip_call_id == truth["call_id"]
        category = RULES.classify(outcome)
        if truth["outcome"] in ("608", "603nb"):
            assert category.category == "analytics_block" and category.confidence == "high"
            assert outcome.redress is not None and outcome.redress.url and "redress.example.net" in outcome.redress.url
        elif truth["outcome"] == "603":
            assert category.category == "declined" and outcome.redress is None
        checked += 1
    failed = sum(1 for t in truths if t["final_code"] >= 300) - (base.name == "fs1111-hep-big17k")
    assert checked == failed
    joined = stats["joined_by_call_id"] + stats["joined_by_number"]
    assert joined == failed and stats["orphan_responses"] == 0 and stats["outcomes_unjoined"] == 0 + (
        base.name == "fs1111-hep-big17k")
    how = "joined_by_call_id" if base.parent.name == "freeswitch" else "joined_by_number"
    assert stats[how] == joined


def test_without_hep_plain_asterisk_cannot_tell_a_603_plus_from_a_603():
    """The same mixed run, AMI alone: the 12 calls answered 603 (Network Blocked or Decline) are one category
    with no Reason, and no 608 has its Call-Info; with HEP they are told apart (the test above)."""
    base = FIXTURES / "asterisk" / "ast22-hep-mixed"
    alone, _ = replayed(base, with_hep=False)
    six_o_three = [o for o in alone if o.sip_code == 603]
    assert len(six_o_three) == 12 and {RULES.classify(o).category for o in six_o_three} == {"declined"}
    assert all(o.reason is None and o.call_info is None and o.redress is None for o in alone)
    joined, _ = replayed(base)
    assert sum(1 for o in joined if RULES.classify(o).category == "analytics_block") == 12  # 6 x 608, 6 x 603+


def test_the_pbxs_own_answers_to_a_phone_are_not_the_carriers():
    """A phone's call through the PBX to the carrier: HEP holds the carrier's answer to the PBX and the PBX's
    answer to the phone (Asterisk: 500 / 403; FreeSWITCH: 603 Decline with the carrier's ATIS Reason copied).
    Only the carrier's joins; the PBX's two are set aside, not counted as orphans."""
    for pbx, name in (("asterisk", "ast22-hep-phone-leg"), ("freeswitch", "fs1111-hep-phone-leg")):
        recording = read_recording(FIXTURES / pbx / f"{name}.hep")
        assert recording.stats["not_carrier"] == 2 and len(recording.responses) == 2
        assert {(r.status, r.phrase) for r in recording.responses} == {(608, "Rejected"), (603, "Network Blocked")}


def db_categories(db) -> list[dict]:
    return [{"callee": json.loads(row[1])["callee_number"], "category": row[0]}
            for row in db._db.execute("SELECT category, data FROM outcomes")]


def stored(store: Path) -> dict[str, dict]:
    with Store(store) as db:
        return {o.callee_number: o.to_dict() for o in db.iter_outcomes(0)}


async def test_the_daemon_live_gives_what_replay_gives(tmp_path: Path):
    """The lab's plain-Asterisk mixed run played live into a daemon (its AMI stream from the project's AMI
    server, its HEP datagrams over UDP, both moved to end a minute ago), against ``replay`` of the same two
    files: call by call the same code, phrase, Reason, Call-Info, redress and category. (The run's 60 s arrive
    at once, so the daemon is told to trust PBX times that much in the past: clock_skew_tolerance.)"""
    import socket
    import textwrap
    import time

    from blockradar.config import load_config
    from blockradar.daemon import Daemon
    from blockradar.testing.ami import AmiServer, AmiSession, event_stream, shift_times
    from blockradar.testing.hep import HepSender, first_time, recording, shifted
    from tests.polling import until

    base = FIXTURES / "asterisk" / "ast22-hep-mixed"
    datagrams = recording(base.with_suffix(".hep").read_bytes())
    delta = time.time() - 70 - first_time(datagrams)  # the run (60 s) ended a few seconds ago
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = tmp_path / "state.db"
    stream = shift_times(event_stream(base.with_suffix(".ami").read_bytes()), delta)
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw,
                  trunks: [carrier-a, carrier-b, carrier-c], clock_skew_tolerance: 5m}}
            hep: {{listen: "127.0.0.1:{port}", password: lab-hep-key-15}}
            store: {store}
            http: null
            """))
        daemon = Daemon(load_config(config))
        await daemon.start()
        try:
            await until(lambda: any(login.accepted for login in ami.logins), what="the daemon's login")
            await HepSender("127.0.0.1", port).send(shifted(datagrams, delta))
            await until(lambda: daemon.hep_reader.stats.datagrams == len(datagrams), what="the datagrams")
            await ami.push(stream)
            await until(lambda: len(stored(store)) == 30, timeout=20, what="30 outcomes stored")
            join = daemon.hep_join.stats
            figures = (join.joined_by_number, join.outcomes_unjoined, join.outcomes_without_response)
        finally:
            await daemon.stop(flush_s=2.0)
    assert figures == (24, 0, 6)  # every failed call joined, every answered one let through at once
    live = stored(store)
    offline, _ = replayed(base)
    assert len(offline) == 30
    for outcome in offline:
        mine = live[outcome.callee_number]
        want = outcome.to_dict()
        for key in ("sip_code", "sip_phrase", "reason", "call_info", "redress", "caller_number", "trunk", "answered"):
            assert mine[key] == want[key], (outcome.callee_number, key, mine[key], want[key])
    categories = {o.callee_number: RULES.classify(o).category for o in offline}
    with Store(store) as db:
        assert {r["callee"]: r["category"] for r in db_categories(db)} == categories
