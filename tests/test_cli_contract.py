"""One CLI contract (issue 13): every command that prints records has ``--json``, and it means JSON lines
(one object per line, each with a ``kind``, a summary last where there is one); tables for people fit
the terminal they are printed on."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockradar.cli.common import table
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset
from blockradar.store import Store

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parent / "fixtures"


def blockradar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockradar", *args], capture_output=True, text=True, timeout=60)


def json_lines(run: subprocess.CompletedProcess[str]) -> list[dict]:
    lines = run.stdout.splitlines()
    assert lines, run.stderr[-2000:]
    records = [json.loads(line) for line in lines]  # every line parses on its own
    assert all(isinstance(r, dict) for r in records)
    return records


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    rules = load_ruleset()
    now = time.time()
    with Store(str(path)) as s:
        calls = [CallOutcome(pbx="asterisk", connector="pbx1", call_id=f"c{i}", ended_at=now - 60 + i,
                             caller_number="+15557650003", callee_number="+15551230008", trunk="carrier-a",
                             sip_code=code, answered=code == 200) for i, code in enumerate((608, 200, 486))]
        s.add_outcomes([(o, rules.classify(o)) for o in calls])
        s.record_alert("fp", "number-strong-block", "warning", {"caller_number": "+15557650003"}, now - 50, now - 10)
    assert blockradar("silence", "add", "--store", str(path), "caller_number=+15557650003", "--for", "1h",
                      "--comment", "contract test").returncode == 0
    return path


def test_every_json_option_prints_json_lines(store: Path, tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # nothing listens here once the socket closes
    config = tmp_path / "notify.yaml"
    config.write_text(f"notifiers:\n  - {{type: webhook, name: deadhook, url: 'http://127.0.0.1:{dead_port}/x'}}\n")
    runs = {
        "report": blockradar("report", "--store", str(store), "--json"),
        "silence list": blockradar("silence", "list", "--store", str(store), "--json"),
        "replay": blockradar("replay", str(FIXTURES / "asterisk/01-608-rejected.ami"), "--json", "--stats"),
        "rules check": blockradar("rules", "check", "--json"),
        "explain": blockradar("explain", "--sip-code", "608", "--json"),
        "notify-test": blockradar("notify-test", "--config", str(config), "--timeout", "5", "--json"),
        "actions list": blockradar("actions", "list", "--store", str(store), "--json"),
        "actions history": blockradar("actions", "history", "--store", str(store), "--json"),
    }
    kinds = {name: [r.get("kind") for r in json_lines(run)] for name, run in runs.items()}
    assert kinds["report"][-1] == "report-summary" and {"number", "trunk", "alert"} <= set(kinds["report"])
    assert kinds["rules check"] == ["rules-check"]
    assert kinds["notify-test"] == ["notify-test", "notify-test-summary"]
    assert kinds["actions list"] == ["actions-summary"] and kinds["actions history"] == ["actions-history-summary"]
    assert "reader-stats" in kinds["replay"] and "outcome" in kinds["replay"]
    (explained,) = json_lines(runs["explain"])
    assert explained["category"] == "analytics_block" and explained["rule_file"].startswith("default pack:")
    (silence,) = json_lines(runs["silence list"])
    assert silence["comment"] == "contract test"
    failed = json_lines(runs["notify-test"])[0]
    assert failed["ok"] is False and "connection refused" in failed["error"]


@pytest.mark.parametrize("width", [60, 80, 132])
def test_tables_fit_the_terminal(width: int):
    long_url = "https://analytics.example.net/redress/" + "x" * 60
    rows = [["+15557650003", "carrier-with-a-long-name", 1234, "33%", long_url], ["+15557650004", "b", 3, "0%", ""]]
    text = table(["calling number", "trunk", "attempts", "answer rate", "last redress"], rows, width=width)
    assert all(len(line) <= width for line in text.splitlines()), text
    assert "+15557650003" in text and "1234" in text  # what a row is about, and its figures, are never cut
