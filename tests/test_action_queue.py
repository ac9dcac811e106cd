"""Actions that run for real (``dry_run: false``) through the durable queue, end to end with a daemon, the
project's AMI server and a webhook receiver: a failed run is tried again and its attempts are kept; the
notification says what the action did; ``blockradar actions undo ID`` puts a number back; and kill -9
of the daemon in the middle of a run neither repeats the run's effect nor loses a queued one."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.store import Store
from blockradar.testing.ami import AmiServer, AmiSession
from tests.daemons import start_daemon
from tests.polling import until
from tests.servers.http_sink import HttpSink

pytestmark = pytest.mark.timeout(120)

A, B = "+15557650001", "+15557650002"

# A well-behaved dialer script: it records every start (key, phase, attempt), skips the work when its key
# is done already (BLOCKRADAR_KEY is the same on every attempt), and can fail once or take a while.
REST_CID = """\
import os, sys, time
log, effects = sys.argv[1], sys.argv[2]
key, phase, attempt = os.environ["BLOCKRADAR_KEY"], os.environ["BLOCKRADAR_PHASE"], os.environ["BLOCKRADAR_ATTEMPT"]
with open(log, "a") as f:
    f.write(f"start {key} {phase} {attempt} {sys.argv[3]}\\n")
if os.path.exists(effects) and key in open(effects).read().split():
    print("already done", key)
    sys.exit(0)
if os.path.exists(sys.argv[1] + ".fail-once") and attempt == "1":
    print("dialer database locked")
    sys.exit(75)
time.sleep(float(os.environ.get("REST_CID_SLOW", "0")))
with open(effects, "a") as f:
    f.write(f"{key}\\n")
print("rested" if phase == "apply" else "back", sys.argv[3])
"""


def setup(tmp_path: Path, ami_port: int, sink_url: str, *, group_wait: str = "0s", slow: float = 0.0) -> Path:
    program = tmp_path / "rest-cid"
    program.write_text(f"#!{sys.executable}\n{REST_CID}")
    program.chmod(0o755)
    log, effects = tmp_path / "runs.log", tmp_path / "effects"
    config = tmp_path / "blockradar.yaml"
    config.write_text(textwrap.dedent(f"""\
        connectors:
          - {{name: pbx1, type: asterisk, port: {ami_port}, username: br, secret: pw}}
        thresholds:
          - {{name: strong, scope: [caller_number], categories: [analytics_block], confidence: [high],
              window: 1h, count: 2}}
        alerting: {{group_wait: {group_wait}, group_interval: 1s, repeat_interval: 4h,
                    group_by: [threshold, caller_number]}}
        notifiers:
          - {{type: webhook, url: "{sink_url}"}}
        store: {tmp_path / "state.db"}
        http: null
        actions:
          - name: rest-cid
            when: [strong]
            kind: exec
            command: [{program}, {log}, {effects}, '{{caller_number}}']
            restore_command: [{program}, {log}, {effects}, '{{caller_number}}']
            env: {{REST_CID_SLOW: '{slow}'}}
            restore_after: never
            dry_run: false
            backoff_initial: 0.2s
            backoff_max: 1s
        """))
    return config


BUILDER = TrafficBuilder()  # one for the module: every call gets its own channel and call id


async def push_blocks(ami: AmiServer, number: str, calls: int = 2) -> None:
    builder = BUILDER
    for i in range(calls):
        await ami.push(b"".join(builder.ami_frames(CallSpec("608", number, "+12125550100", "carrier-a",
                                                            time.time() + i * 0.01))))



def rows(store: Path) -> list[dict]:
    with Store(store) as db:
        return db.action_log(0)


def cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockradar", "actions", *args, "--store", str(store)],
                          capture_output=True, text=True, timeout=60)


async def test_a_run_is_retried_reported_in_the_alert_and_undone(tmp_path: Path):
    from prometheus_client import CollectorRegistry

    from blockradar.config import load_config
    from blockradar.daemon import Daemon

    (tmp_path / "runs.log.fail-once").touch()  # the dialer's first answer: "database locked" (exit 75)
    store = tmp_path / "state.db"
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami, HttpSink() as sink:
        registry = CollectorRegistry()
        daemon = Daemon(load_config(setup(tmp_path, ami.port, sink.url, group_wait="4s")), registry=registry)
        await daemon.start()
        try:
            await until(lambda: any(login.accepted for login in ami.logins), what="the daemon's login")
            await push_blocks(ami, A)
            await until(lambda: any(r["status"] == "done" for r in rows(store)), what="the apply done")
            (tmp_path / "runs.log.fail-once").unlink()
            (apply,) = rows(store)
            assert (apply["phase"], apply["caller_number"], apply["attempts"]) == ("apply", A, 2)
            assert apply["result"] == f"rested {A}" and apply["dry_run"] is False
            assert apply["command"][-1] == A and apply["target"] == "with rest-cid"
            await sink.wait_for(1, timeout=15)  # group_wait 4 s: the run is done by then
            alert = sink.requests[0].json["alerts"][0]
            assert alert["actions"] == [f"rest-cid: rested {A} with rest-cid"]
            runs = registry.get_sample_value("blockradar_action_runs_total",
                                             {"action": "rest-cid", "phase": "apply", "result": "retried"})
            assert runs == 1.0

            listed = [json.loads(line) for line in cli(store, "list", "--json").stdout.splitlines()]
            assert [(r["kind"], r["caller_number"], r["id"]) for r in listed[:-1]] == [("resting", A, apply["id"])]
            undo = cli(store, "undo", f"#{apply['id']}", "-c", "wrong number")
            assert undo.returncode == 0 and "within a few seconds" in undo.stdout, undo.stderr
            await until(lambda: len(rows(store)) == 2 and rows(store)[1]["status"] == "done", timeout=20,
                        what="the undo's restore done")
            restore = rows(store)[1]
            assert (restore["phase"], restore["caller_number"]) == ("restore", A)
            assert restore["reason"].startswith(f"undo of #{apply['id']} by ") and "wrong number" in restore["reason"]
            assert restore["result"] == f"back {A}"
            again = cli(store, "undo", str(apply["id"]))
            assert again.returncode == 1 and "does not rest" in again.stderr
        finally:
            await daemon.stop(flush_s=2.0)
    log = (tmp_path / "runs.log").read_text().splitlines()
    assert log == [f"start rest-cid.{apply['id']} apply 1 {A}", f"start rest-cid.{apply['id']} apply 2 {A}",
                   f"start rest-cid.{restore['id']} restore 1 {A}"]
    history = cli(store, "history")
    assert "wrong number" in history.stdout and f"rested {A}" in history.stdout
    assert "no number rests" in cli(store, "list").stdout


async def test_kill_9_during_a_run_neither_repeats_nor_loses_it(tmp_path: Path):
    store = tmp_path / "state.db"
    log, effects = tmp_path / "runs.log", tmp_path / "effects"
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami, HttpSink() as sink:
        config = setup(tmp_path, ami.port, sink.url, slow=3.0)  # each run takes 3 s: time to kill it mid-run
        proc = start_daemon(config, config.parent / "daemon.err")
        try:
            await until(lambda: any(login.accepted for login in ami.logins), what="the daemon's login")
            await push_blocks(ami, A)
            await push_blocks(ami, B)
            # A's run is under way (its command's pid is on disk) and B's apply waits behind it
            await until(lambda: len(rows(store)) == 2 and rows(store)[0]["pid"], what="A running, B queued")
            first = rows(store)
            assert [(r["caller_number"], r["status"]) for r in first] == [(A, "running"), (B, "pending")]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not effects.exists()  # killed before A's command finished (it goes on, orphaned)
        proc = start_daemon(config, config.parent / "daemon.err")  # at once: A's orphaned command still runs
        try:
            await until(lambda: all(r["status"] == "done" for r in rows(store)) and len(rows(store)) == 2,
                        timeout=40, what="both runs done after the restart")
            await asyncio.sleep(1.5)  # a few ticks: anything decided twice would show by now
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    final = rows(store)
    key_a, key_b = (f"rest-cid.{r['id']}" for r in final)
    # each apply was decided once and took effect once
    assert [(r["phase"], r["caller_number"], r["status"]) for r in final] == [("apply", A, "done"),
                                                                              ("apply", B, "done")]
    assert effects.read_text().split() == [key_a, key_b]
    runs = log.read_text().splitlines()
    # A ran again with the same key only after its orphaned first run had ended, and skipped the work
    assert runs == [f"start {key_a} apply 1 {A}", f"start {key_a} apply 2 {A}", f"start {key_b} apply 1 {B}"]
    assert final[0]["attempts"] == 2 and final[0]["result"] == f"already done {key_a}"
    assert final[1]["attempts"] == 1 and final[1]["result"] == f"rested {B}"
    err = (tmp_path / "daemon.err").read_text()
    assert "was running when blockradar stopped; running it again with the same key" in err


async def test_an_action_that_fails_for_good_pages(tmp_path: Path):
    from blockradar.config import load_config
    from blockradar.daemon import Daemon

    store = tmp_path / "state.db"
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami, HttpSink() as sink:
        config = setup(tmp_path, ami.port, sink.url)
        program = tmp_path / "rest-cid"
        program.write_text(f"#!{sys.executable}\nimport sys\nprint('no such CID in the dialer')\nsys.exit(3)\n")
        daemon = Daemon(load_config(config))
        await daemon.start()
        try:
            await until(lambda: any(login.accepted for login in ami.logins), what="the daemon's login")
            await push_blocks(ami, A)
            await until(lambda: any(r.json and r.json["alerts"][0]["labels"].get("alertname") == "action-failing"
                                    for r in sink.requests), what="the action-failing page")
        finally:
            await daemon.stop(flush_s=2.0)
    (row,) = rows(store)
    assert row["status"] == "failed" and row["attempts"] == 1 and "exit 3: no such CID in the dialer" in row["result"]
    page = next(r.json for r in sink.requests if r.json["alerts"][0]["labels"].get("alertname") == "action-failing")
    alert = page["alerts"][0]
    assert alert["scope"] == {"action": "rest-cid"}
    assert alert["detail"] == f"rest-cid: could not rest {A} with rest-cid: {row['result']}"


async def test_one_number_failing_holds_no_other_back_and_a_failed_apply_leaves_it_in_rotation(tmp_path: Path):
    """Review findings: one number's failing run held every other number's rows for up to a day; an apply
    that failed for good still counted as resting (pool cap, status page)."""
    from blockradar.actions.kinds import ExecAction
    from blockradar.actions.planner import ActionPlanner
    from blockradar.actions.queue import ActionQueue

    program = tmp_path / "rest-cid"
    program.write_text(f"#!{sys.executable}\nimport sys\n"
                       f"sys.exit(75 if sys.argv[1] == '{A}' else 3 if sys.argv[1] == '+15557650003' else 0)\n")
    program.chmod(0o755)
    planner = ActionPlanner([ExecAction(name="rest-cid", when=["strong"], command=[str(program), "{caller_number}"],
                                        dry_run=False, backoff_initial=0.2, backoff_max=0.5)])
    decisions = []
    for number in (A, "+15557650003", B):  # A keeps failing (75), ...0003 fails for good (3), B works
        decisions += planner.on_transition({"threshold": "strong", "state": "firing", "count": 2,
                                            "scope": {"caller_number": number}, "fingerprint": number},
                                           time.time())
    with Store(tmp_path / "state.db") as store:
        store.log_actions([{**d.to_dict(), "context": d.context} for d in decisions], [])
        queue = ActionQueue(store, planner, poll_interval=0.1)
        await queue.start()
        try:
            await until(lambda: {r["caller_number"]: r["status"] for r in store.action_log(0)}.get(B) == "done",
                        timeout=20, what="B's apply done while A keeps failing")
            await until(lambda: any(r["status"] == "failed" for r in store.action_log(0)), timeout=20,
                        what="...0003's permanent failure")
        finally:
            await queue.stop()
        rows = {r["caller_number"]: r for r in store.action_log(0)}
    assert rows[A]["status"] == "pending" and rows[A]["attempts"] >= 1
    assert rows["+15557650003"]["status"] == "failed"
    guard = planner.guards["rest-cid"]
    assert "+15557650003" not in guard.resting and A in guard.resting and B in guard.resting
