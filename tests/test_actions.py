"""Actions (issue 14): the guardrails, table-driven, and the backtest of a policy with
``blockradar replay --config FILE --json`` on a recording, with the config of the issue as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blockradar.actions.guardrails import Guardrails
from blockradar.actions.kinds import ExecAction as ActionConfig
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.outcome import from_iso, iso

pytestmark = pytest.mark.timeout(60)

A, B, C, D = "+15557650001", "+15557650002", "+15557650003", "+15557650004"
T0 = 1_796_000_000.0


def action(**fields) -> ActionConfig:
    return ActionConfig(**{"name": "rest-cid", "when": ["number-strong-block"], "kind": "exec",
                           "command": ["rest-cid", "{caller_number}"], **fields})


# each step: (minutes after T0, event, number, count) -> the phases the guardrails answer, in order
# events: fire, resolve, tick, hold, release, undo
CASES = {
    "apply, then restore an hour after the resolve": (
        {}, [(0, "fire", A, 3, ["apply"]), (10, "resolve", A, 0, []), (69, "tick", None, 0, []),
             (70, "tick", None, 0, ["restore"])]),
    "firing again before the restore cancels it": (
        {}, [(0, "fire", A, 3, ["apply"]), (10, "resolve", A, 0, []), (30, "fire", A, 3, []),
             (200, "tick", None, 0, [])]),
    "never restores without restore_after": (
        {"restore_after": "never"}, [(0, "fire", A, 3, ["apply"]), (10, "resolve", A, 0, []),
                                     (999, "tick", None, 0, [])]),
    "pool share: the second waits, then goes once the first is restored": (
        {"pool": [A, B, C], "max_pool_share": 0.34, "restore_after": "10m", "cooldown": "0s"},
        [(0, "fire", A, 3, ["apply"]), (1, "fire", B, 3, ["held"]), (5, "resolve", A, 0, []),
         (15, "tick", None, 0, ["restore", "apply"])]),
    "not in the pool": (
        {"pool": [A, B]}, [(0, "fire", D, 3, ["held"])]),
    "a held apply whose alert resolved is dropped": (
        {"pool": [A, B], "max_pool_share": 0.5, "restore_after": "10m"},
        [(0, "fire", A, 3, ["apply"]), (1, "fire", B, 3, ["held"]), (2, "resolve", B, 0, []),
         (3, "resolve", A, 0, []), (20, "tick", None, 0, ["restore"])]),
    "cooldown after a restore": (
        {"restore_after": "0s", "cooldown": "1h"},
        [(0, "fire", A, 3, ["apply"]), (1, "resolve", A, 0, []), (2, "tick", None, 0, ["restore"]),
         (30, "fire", A, 3, ["held"]), (63, "fire", A, 3, ["apply"])]),
    "hourly cap": (
        {"max_per_hour": 2}, [(0, "fire", A, 3, ["apply"]), (1, "fire", B, 3, ["apply"]),
                              (2, "fire", C, 3, ["held"]), (61, "tick", None, 0, ["apply"])]),
    "minimum evidence": (
        {"min_count": 3}, [(0, "fire", A, 2, ["held"]), (1, "fire", A, 3, ["apply"])]),
    "an operator's hold freezes a number, release lets it go": (
        {"restore_after": "10m"}, [(0, "hold", A, 0, []), (1, "fire", A, 3, ["held"]), (2, "release", A, 0, []),
                                   (3, "fire", A, 3, ["apply"]), (4, "hold", A, 0, []), (5, "resolve", A, 0, []),
                                   (60, "tick", None, 0, [])]),
    "undo restores at once": (
        {}, [(0, "fire", A, 3, ["apply"]), (1, "undo", A, 0, ["restore"]), (2, "undo", A, 0, [])]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_guardrails(case: str):
    fields, steps = CASES[case]
    guard = Guardrails(action(**fields))
    for minute, event, number, count, expected in steps:
        now = T0 + minute * 60
        if event == "fire":
            verdicts = [guard.fired(number, count, now)]
        elif event == "resolve":
            verdicts = [guard.resolved(number, now)]
        elif event == "tick":
            verdicts = guard.due(now)
        elif event == "undo":
            verdicts = [guard.undo(number, now)]
        else:
            getattr(guard, event)(number)
            verdicts = []
        phases = [v.phase for v in verdicts if v.phase != "none"]
        assert phases == expected, (case, minute, event, [(v.phase, v.number, v.reason) for v in verdicts])


def test_templates_are_plain_names_only():
    with pytest.raises(ValueError, match=r"use \{name\}"):
        action(command=["rest-cid", "{caller_number.__class__}"])
    with pytest.raises(ValueError, match=r"use \{name\}"):
        action(command=["rest-cid", "{secret}"])
    with pytest.raises(ValueError, match="command\n  Field required"):
        ActionConfig(name="x", when=["number-strong-block"], kind="exec")
    with pytest.raises(ValueError, match=r"the program .* cannot be a template"):
        action(command=["{caller_number}"])


def recording(path: Path) -> Path:
    """A stream of real recorded 608s: two numbers of the pool blocked, then quiet, then later calls."""
    builder = TrafficBuilder()
    frames = [b"Asterisk Call Manager/11.0.0\r\n"]
    t = T0
    for number in (A, B):
        for _ in range(3):
            frames += builder.ami_frames(CallSpec("608", number, "+12125550100", "carrier-a", t))
            t += 30
    for i in range(6):  # hours later: answered calls from another number move the clock on
        frames += builder.ami_frames(CallSpec("200", D, "+12125550100", "carrier-a", t + 3600 + i * 1800))
    path.write_bytes(b"".join(frames))
    return path


def test_replay_backtests_the_issues_policy_as_written(tmp_path: Path):
    config = tmp_path / "blockradar.yaml"
    config.write_text(textwrap.dedent("""\
        actions:
          - name: rest-cid
            when: [number-strong-block, number-analytics-blocks]
            kind: exec
            command: [rest-cid, '{caller_number}']
            restore_after: 1h
            dry_run: true
            pool: ['+15557650001', '+15557650002']   # optional
            max_pool_share: 0.34                      # optional
        """))
    run = subprocess.run([sys.executable, "-m", "blockradar", "replay", str(recording(tmp_path / "calls.ami")),
                          "--config", str(config), "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    decisions = [r for r in map(json.loads, run.stdout.splitlines()) if r["kind"] == "action"]
    seen = [(d["phase"], d["caller_number"]) for d in decisions]
    # A rests; B is held (one of two numbers may rest: max_pool_share 0.34); an hour after A's alert
    # resolved, A is restored; B's alert resolved meanwhile, so B is never rested
    assert seen[:2] == [("apply", A), ("held", B)], seen
    assert ("restore", A) in seen and ("apply", B) not in seen
    assert all(d["action"] == "rest-cid" and d["dry_run"] is True for d in decisions)
    (apply,) = [d for d in decisions if d["phase"] == "apply"]
    assert apply["command"] == ["rest-cid", A] and apply["threshold"] in ("number-strong-block",
                                                                          "number-analytics-blocks")
    held = next(d for d in decisions if d["phase"] == "held")
    assert "pool share" in held["reason"]
    people = subprocess.run([sys.executable, "-m", "blockradar", "replay", str(tmp_path / "calls.ami"), "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert "rest-cid" in people.stdout and "action decision(s)" in people.stdout


def test_a_config_names_what_is_wrong_with_an_action(tmp_path: Path):
    config = tmp_path / "blockradar.yaml"
    config.write_text("connectors: []\nstore: " + str(tmp_path / "s.db") + "\nactions:\n  - name: rest\n"
                      "    when: [no-such-threshold]\n    kind: exec\n    command: [echo, '{caller_number}']\n")
    run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(config), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and f"{config}:3:1: actions: action rest: when names no threshold" in run.stderr
    # a real action must name a program this machine has (a dry run may not)
    config.write_text(config.read_text().replace("no-such-threshold", "number-strong-block")
                      .replace("[echo,", "[no-such-rest-cid,") + "    dry_run: false\n")
    run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(config), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert f"{config}:4:5: actions[0]: program 'no-such-rest-cid' not found" in run.stderr, run.stderr
    config.write_text(config.read_text().replace("[no-such-rest-cid,", "[echo,"))
    run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(config), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


async def test_the_daemon_decides_reports_and_keeps_actions_live(tmp_path: Path, caplog):
    import asyncio
    import logging
    import time

    from blockradar.config import load_config
    from blockradar.daemon import Daemon
    from blockradar.testing import AmiServer, AmiSession

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "blockradar", "actions", *args, "--store", str(store)],
                              capture_output=True, text=True, timeout=60)

    caplog.set_level(logging.INFO, logger="blockradar")
    store = tmp_path / "state.db"
    held = cli("hold", "5557650002", "-c", "a VIP line: never rest it")  # any form of the number
    assert held.returncode == 0 and f"held {B}" in held.stdout
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw}}
            store: {store}
            http: null
            actions:
              - {{name: rest-cid, when: [number-strong-block], kind: exec, command: [rest-cid, '{{caller_number}}']}}
            """))
        daemon = Daemon(load_config(config))
        await daemon.start()
        try:
            deadline = time.monotonic() + 20
            while daemon.healths()[0].last_event_at is None or daemon.actions.guards["rest-cid"].holds != {B}:
                assert time.monotonic() < deadline, "not connected, or the hold not read"
                await asyncio.sleep(0.05)
            builder = TrafficBuilder()
            for number in (A, B):
                for i in range(2):
                    await ami.push(b"".join(builder.ami_frames(CallSpec("608", number, "+12125550100", "carrier-a",
                                                                        time.time() + i))))
            while len([r for r in caplog.records if r.getMessage().startswith("action rest-cid")]) < 2:
                assert time.monotonic() < deadline, "no action decided"
                await asyncio.sleep(0.05)
        finally:
            await daemon.stop(flush_s=2.0)
    lines = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("action rest-cid"))
    assert lines == [f"action rest-cid (dry run): apply {A}: rest-cid {A}",
                     f"action rest-cid (dry run): held {B}: held by an operator"]
    applied = next(r for r in caplog.records if r.getMessage().startswith("action rest-cid (dry run): apply"))
    assert applied.labels["caller_number"] == A and applied.labels["phase"] == "apply"
    # the audit, from the store, after the daemon stopped
    listed = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    assert [(r["kind"], r["caller_number"]) for r in listed[:-1]] == [("resting", A), ("hold", B)]
    history = [json.loads(line) for line in cli("history", "--json").stdout.splitlines()]
    assert sorted((r["phase"], r["caller_number"]) for r in history[:-1]) == [("apply", A), ("held", B)]
    assert history[-1] == {"kind": "actions-history-summary", "since": "24h", "decisions": 2}
    assert "rest-cid" in cli("history").stdout and A in cli("list").stdout
    assert cli("release", B).returncode == 0
    again = cli("release", B)
    assert again.returncode == 1 and "is not held" in again.stderr


def test_report_and_the_number_card_show_the_actions(tmp_path: Path):
    import time

    from blockradar.actions.planner import ActionDecision
    from blockradar.outcome import CallOutcome
    from blockradar.ruleset import load_ruleset
    from blockradar.store import Store
    from blockradar.web import pages, queries

    path = tmp_path / "state.db"
    now = time.time()
    rules = load_ruleset()
    with Store(str(path)) as store:
        call = CallOutcome(pbx="asterisk", connector="pbx1", call_id="c1", ended_at=now - 120, caller_number=A,
                           callee_number="+12125550100", trunk="carrier-a", sip_code=608)
        store.add_outcomes([(call, rules.classify(call))])
        store.log_actions([ActionDecision("rest-cid", "apply", A, now - 100, True, "number-strong-block",
                                          "carrier-a", command=["rest-cid", A]).to_dict(),
                           ActionDecision("rest-cid", "held", B, now - 90, True, "number-strong-block",
                                          reason="pool share: 1 of 2 numbers rest already").to_dict()])
    report = subprocess.run([sys.executable, "-m", "blockradar", "report", "--store", str(path), "--json"],
                            capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in report.stdout.splitlines()]
    assert [(r["phase"], r["caller_number"]) for r in lines if r["kind"] == "action"] == [("apply", A), ("held", B)]
    assert lines[-1]["actions"] == 2
    card = queries.number_card(path, A, now)
    assert card is not None and [(a["action"], a["phase"], a["command"]) for a in card["actions"]] == [
        ("rest-cid", "apply", ["rest-cid", A])]
    html = pages.number_card(card)
    assert 'id="actions"' in html and f"rest-cid {A}" in html and ">dry-run<" in html


def test_the_readme_recipes_are_valid_configs(tmp_path: Path):
    """Every YAML block of the README's "Automatic actions" is a config this version reads as written (the
    secret files and the script it names made up here)."""
    import re

    from blockradar.config import load_config

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("## Automatic actions")
    section = readme[start:readme.index("\n## ", start)]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    for name in ("vicidial-api.pass", "ami-actions.secret"):
        (tmp_path / name).write_text("s3cret\n")
    script = tmp_path / "rest-cid"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    seen = []
    for i, block in enumerate(blocks):
        text = block.replace("/etc/blockradar/", f"{tmp_path}/").replace("/usr/local/bin/rest-cid", str(script))
        config = tmp_path / f"recipe{i}.yaml"
        config.write_text(f"connectors: []\nstore: {tmp_path / 'state.db'}\n{text}")
        os.environ["CRM_TOKEN"] = "t0ken"
        try:
            loaded = load_config(config)
        finally:
            del os.environ["CRM_TOKEN"]
        seen += [(a.name, a.kind, a.dry_run) for a in loaded.config.actions]
    assert seen == [("rest-cid", "exec", True), ("rest-cid", "vicidial", True), ("rest-cid", "asterisk-db", False),
                    ("rest-cid", "exec", False), ("tell-the-crm", "http", False)]


def test_replay_of_the_live_lab_run_gives_what_the_daemon_did(tmp_path: Path):
    """The lab's live run (tests/fixtures/asterisk/actions/MANIFEST.md): replayed with the same config, the
    action rests the number at the call that fired the alert and puts it back restore_after the resolve,
    as the daemon did; the recording itself shows the dialplan dialling with the fallback meanwhile."""
    fixture = Path(__file__).parent / "fixtures" / "asterisk" / "actions" / "live-rest-cid.ami"
    config = tmp_path / "blockradar.yaml"
    config.write_text(textwrap.dedent("""\
        connectors:
          - {name: pbx1, type: asterisk, username: blockradar, secret: x}
        thresholds:
          - {name: strong, scope: [caller_number], categories: [analytics_block], confidence: [high],
             window: 2m, count: 2, severity: warning}
        alerting: {group_wait: 0s, group_interval: 30s, repeat_interval: 4h}
        actions:
          - {name: rest-cid, when: [strong], kind: asterisk-db, username: blockradar-actions, secret: y,
             restore_after: 20s, dry_run: false}
        """))
    run = subprocess.run([sys.executable, "-m", "blockradar", "replay", str(fixture), "--config", str(config),
                          "--json"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    calls = [(r["caller_number"], r["sip_code"]) for r in records if r["kind"] == "outcome"]
    assert calls == [(A, 608), (A, 608), ("+15557650003", 608)] + [("+15557650003", None)] * 3 + [(A, None)] * 2
    events = [(r["kind"], r.get("state") or r.get("phase")) for r in records if r["kind"] in ("alert", "action")]
    assert events == [("alert", "firing"), ("action", "apply"), ("alert", "resolved"), ("action", "restore")]
    apply, restore = (r for r in records if r["kind"] == "action")
    second_608 = [r for r in records if r["kind"] == "outcome"][1]
    assert iso(apply["at"]) == second_608["ended_at"] == "2026-11-30T04:04:45.254Z"  # live: 04:04:45.258
    assert apply["command"] == ["DBPut", "blockradar-rest/15557650001", "strong"]
    assert restore["command"] == ["DBDel", "blockradar-rest/15557650001"]
    resolved = next(r for r in records if r["kind"] == "alert" and r["state"] == "resolved")
    assert restore["at"] - from_iso(resolved["at"]) == pytest.approx(20.0, abs=1.0)
    assert abs(restore["at"] - from_iso("2026-11-30T04:07:12.267Z")) < 3.0  # the daemon's DBDel, live
    # the number came back before the last two calls, which went out with it again
    last_calls = [r for r in records if r["kind"] == "outcome"][-2:]
    assert all(from_iso(c["ended_at"]) > restore["at"] for c in last_calls)


def snapshot(threshold: str, state: str, number: str = A, count: int = 3) -> dict:
    return {"threshold": threshold, "state": state, "scope": {"caller_number": number}, "count": count,
            "fingerprint": f"{threshold}|{number}", "labels": {"trunk": "carrier-a"}}


def test_a_number_comes_back_only_when_the_last_of_its_alerts_resolved():
    """Review finding: with two thresholds in ``when`` the first resolve restored the number while the other
    alert still fired (and nothing rested it again)."""
    from blockradar.actions.planner import ActionPlanner

    planner = ActionPlanner([action(when=["number-strong-block", "number-analytics-blocks"], restore_after=600)])
    assert [d.phase for d in planner.on_transition(snapshot("number-strong-block", "firing"), 0.0)] == ["apply"]
    assert planner.on_transition(snapshot("number-analytics-blocks", "firing"), 10.0) == []
    assert planner.on_transition(snapshot("number-strong-block", "resolved"), 100.0) == []
    assert planner.tick(10_000.0) == []  # the analytics alert still fires: no restore
    assert planner.on_transition(snapshot("number-analytics-blocks", "resolved"), 20_000.0) == []
    assert [d.phase for d in planner.tick(20_600.0)] == ["restore"]


def test_a_restore_that_fell_due_while_held_follows_the_release():
    """Review finding: fire, hold, resolve, release left the number resting for good."""
    from blockradar.actions.planner import ActionPlanner

    planner = ActionPlanner([action(restore_after=600)])
    assert [d.phase for d in planner.on_transition(snapshot("number-strong-block", "firing"), 0.0)] == ["apply"]
    planner.set_holds({A})
    planner.on_transition(snapshot("number-strong-block", "resolved"), 100.0)
    assert planner.tick(5_000.0) == []  # held: no restore
    planner.set_holds(set())
    assert [d.phase for d in planner.tick(5_001.0)] == ["restore"]


def test_a_restart_does_not_decide_again_an_episode_already_decided():
    """Review finding: apply, undo, the cooldown over, a restart: the still-firing alert was taken for a new
    one and the number rested again. The episode's firing time is kept with the state until it resolves."""
    from blockradar.actions.guardrails import NumberState
    from blockradar.actions.planner import ActionPlanner, StateRow

    live = ActionPlanner([action(cooldown=60)])
    firing = {**snapshot("number-strong-block", "firing"), "fired_at": "2026-11-30T00:00:00.000Z"}
    assert [d.phase for d in live.on_transition(firing, 0.0)] == ["apply"]
    assert [d.phase for d in live.undo("rest-cid", A, 10.0, "undo by ops")] == ["restore"]
    live.tick(1_000.0)  # the cooldown is over
    kept = [r for r in live.changed_states() if r.state.caller_number == A]
    assert kept and kept[-1].alert_fired_at is not None  # not "empty": the store keeps the row
    restarted = ActionPlanner([action(cooldown=60)])
    restarted.load("rest-cid", [StateRow("rest-cid", NumberState(A, None, None, None, None), {}, r.alert_fired_at)
                                for r in kept], [])
    assert restarted.reconcile([firing], 2_000.0) == []
