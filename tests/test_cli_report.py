"""`blockradar report` filters: a number in any form, a trunk."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from blockradar.cli import cli
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset
from blockradar.store import Store


def test_report_filters_by_a_number_in_any_form_and_by_trunk(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    rules = load_ruleset()
    now = time.time()
    calls = [("+15557650003", "carrier-a", 608), ("+15557650003", "carrier-b", 200), ("+15557650004", "carrier-a", 608)]
    outcomes = [CallOutcome(pbx="asterisk", connector="pbx1", call_id=f"c{i}", ended_at=now - 60 + i,
                            caller_number=caller, callee_number="+15551230008", trunk=trunk, sip_code=code,
                            answered=code == 200)
                for i, (caller, trunk, code) in enumerate(calls)]
    with Store(str(db)) as store:
        store.add_outcomes([(o, rules.classify(o)) for o in outcomes])

    def report(*args: str) -> dict:
        result = CliRunner().invoke(cli, ["report", "--store", str(db), "--json", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.output.splitlines()]  # JSON lines, the summary last
        assert lines[-1]["kind"] == "report-summary"
        return {"numbers": [r for r in lines if r["kind"] == "number"],
                "trunks": [r for r in lines if r["kind"] == "trunk"],
                "alerts": [r for r in lines if r["kind"] == "alert"], "summary": lines[-1]}

    everything = report()
    assert {r["value"] for r in everything["numbers"]} == {"+15557650003", "+15557650004"}
    one = report("--number", "(555) 765-0003")
    assert [(r["value"], r["attempts"]) for r in one["numbers"]] == [("+15557650003", 2)]
    assert {r["value"] for r in one["trunks"]} == {"carrier-a", "carrier-b"}
    via_a = report("--trunk", "carrier-a")
    assert {r["value"] for r in via_a["trunks"]} == {"carrier-a"}
    assert {(r["value"], r["attempts"]) for r in via_a["numbers"]} == {("+15557650003", 1), ("+15557650004", 1)}


def test_report_lists_alerts_that_fired_and_resolved_in_the_period(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    now = time.time()
    with Store(str(db)) as store:
        rules = load_ruleset()
        o = CallOutcome(pbx="asterisk", connector="pbx1", call_id="c1", ended_at=now - 600,
                        caller_number="+15557650003", callee_number="+15551230008", trunk="carrier-a", sip_code=608)
        store.add_outcomes([(o, rules.classify(o))])
        scope = {"caller_number": "+15557650003"}
        store.record_alert("strong|+15557650003", "number-strong-block", "warning", scope, now - 590)
        store.record_alert("strong|+15557650003", "number-strong-block", "warning", scope, now - 590, now - 100)
        store.record_alert("old|+15557650003", "number-strong-block", "warning", scope, now - 90_000, now - 89_000)
    result = CliRunner().invoke(cli, ["report", "--store", str(db), "--json"], catch_exceptions=False)
    lines = [json.loads(line) for line in result.output.splitlines()]
    alerts = [r for r in lines if r["kind"] == "alert"]
    assert [(a["threshold"], a["state"]) for a in alerts] == [("number-strong-block", "resolved")]  # one episode
    (number,) = [r for r in lines if r["kind"] == "number"]
    assert number["alerts"] == ["number-strong-block (resolved)"]
    assert lines[-1] == {"kind": "report-summary", "since": "24h", "numbers": 1, "trunks": 1, "alerts": 1,
                         "alerts_resolved": 1, "actions": 0}
    people = CliRunner().invoke(cli, ["report", "--store", str(db)], catch_exceptions=False).output
    assert "ANSWER RATE" in people and "alerts, last 24h" in people and "number-strong-block" in people
