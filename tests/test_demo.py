"""`blockradar demo` end to end: emulated PBXes, real connectors over TCP, the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from blockradar.demo.session import BLOCKED_NUMBER, demo_plan


def test_demo_plan_blocks_one_number_on_both_pbxes():
    plan = demo_plan(20)
    blocked = [(pbx, scenario) for _, pbx, scenario, caller, _ in plan if caller == BLOCKED_NUMBER]
    assert ("asterisk", "608") in blocked and ("freeswitch", "603plus") in blocked
    assert {caller for *_, caller, _ in plan} == {BLOCKED_NUMBER, "+15557650001", "+15557650002"}
    assert all(0 <= t < 20 for t, *_ in plan) and plan == sorted(plan)


def test_demo_runs_to_its_summary(tmp_path):
    store = tmp_path / "demo.db"
    demo = subprocess.Popen([sys.executable, "-m", "blockradar", "demo", "--duration", "8", "--json",
                             "--store", str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert demo.stdout is not None
    start = json.loads(demo.stdout.readline())  # the first JSON line says where the status page is
    assert start["kind"] == "demo-start" and start["status_page"].startswith("http://127.0.0.1:")
    time.sleep(5)  # some calls in
    with urllib.request.urlopen(start["status_page"], timeout=10) as response:
        page = response.read().decode()
    assert response.status == 200 and "demo-asterisk" in page and "<svg" in page
    stdout, stderr = demo.communicate(timeout=120)
    run = subprocess.CompletedProcess(demo.args, demo.returncode, stdout, stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [start, *(json.loads(line) for line in run.stdout.splitlines())]  # --json: JSON lines, every one
    assert [r["kind"] for r in records] == ["demo-start", "demo-summary"]
    summary = records[-1]
    assert summary["kind"] == "demo-summary"
    assert summary["connectors"] == {"demo-asterisk": "connected", "demo-freeswitch": "connected"}
    planned = len(demo_plan(8))
    assert summary["calls"] == planned
    assert summary["categories"]["analytics_block"] >= 3
    fired = {(a["threshold"], json.dumps(a["scope"])) for a in summary["alerts_fired"]}
    resolved = {(a["threshold"], json.dumps(a["scope"])) for a in summary["alerts_resolved"]}
    blocked = json.dumps({"caller_number": BLOCKED_NUMBER})
    assert ("demo-strong-block", blocked) in fired and ("demo-repeated-blocks", blocked) in fired
    assert fired == resolved  # the blocked number stops dialling: every alert clears before the end
    assert all(BLOCKED_NUMBER in scope or "carrier-c" in scope for _, scope in fired)
    assert summary["redress"] == ["https://analytics.example.net/redress"]
    assert "=== " in run.stderr and "analytics blocks on +15557650003" in run.stderr  # the console notifier
    report = subprocess.run([sys.executable, "-m", "blockradar", "report", "--store", str(store), "--json"],
                            capture_output=True, text=True, timeout=60)
    numbers = [r for r in map(json.loads, report.stdout.splitlines()) if r["kind"] == "number"]
    assert numbers[0]["value"] == BLOCKED_NUMBER and numbers[0]["analytics_blocks"] >= 3
    assert sum(n["attempts"] for n in numbers) == planned
