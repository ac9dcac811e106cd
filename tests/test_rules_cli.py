"""`blockradar explain` and `blockradar rules check`, run as the installed console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blockradar.ruleset import build_ruleset


def blockradar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockradar", *args], capture_output=True, text=True, timeout=60)


def test_explain_608_json():
    run = blockradar("explain", "--sip-code", "608", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["category"] == "analytics_block" and data["confidence"] == "high"
    assert data["rule"] == "sip-608-rejected" and data["redress"] is None


def test_explain_603plus_human_with_redress_and_trace():
    run = blockradar("explain", "--sip-code", "603", "--phrase", "Network Blocked", "--reason",
                     'SIP;cause=603;text="v=analytics1;url=https://x.example;id=42"', "--trace")
    assert run.returncode == 0, run.stderr
    assert re.search(r"^category:\s+analytics_block", run.stdout, re.M)
    assert re.search(r"^rule:\s+atis-603plus \(default pack:\d+\)", run.stdout, re.M)
    assert "url=https://x.example" in run.stdout and "id=42" in run.stdout
    assert "MATCH atis-603plus" in run.stdout


def test_explain_trace_says_why_not():
    run = blockradar("explain", "--sip-code", "486", "--trace", "--json")
    data = json.loads(run.stdout)
    assert data["category"] == "busy"
    first = data["trace"][0]
    assert first["matched"] is False and "486" in first["why_not"]
    assert data["trace"][-1]["matched"] is True


def test_explain_with_carrier_override_and_header():
    run = blockradar("explain", "--sip-code", "603", "--header", "X-Twilio-Error: 32203", "--rules",
                     "carriers/twilio", "--json")
    assert json.loads(run.stdout)["category"] == "provider_block"


def test_explain_call_info_redress():
    run = blockradar("explain", "--sip-code", "608", "--call-info", "<https://r.example/x.jws>;purpose=jwscard",
                     "--json")
    redress = json.loads(run.stdout)["redress"]
    assert redress == {"url": "https://r.example/x.jws", "tel": None, "email": None, "id": None,
                       "location": None, "source": "call-info", "conformant": True}


def test_rules_check_default_ok():
    run = blockradar("rules", "check", "rules/default.yaml")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok:")


BROKEN = textwrap.dedent("""\
    version: 1
    rules:
      - name: acme-spam
        source: "ACME docs"
        match:
          sip_code: 6xy
          sip_phrase: "spam("
        category: analytic_block
      - name: acme-spam
        source: x
        match: {sip_cod: 603}
        category: declined
        confidence: sure
    """)


def test_rules_check_broken_file(tmp_path: Path):
    path = tmp_path / "acme.yaml"
    path.write_text(BROKEN)
    run = blockradar("rules", "check", str(path))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    expected = {
        (6, "rules[0].match.sip_code"), (7, "rules[0].match.sip_phrase"), (8, "rules[0].category"),
        (9, "rules[1].name"), (11, "rules[1].match.sip_cod"), (13, "rules[1].confidence"),
    }
    found = set()
    for line in lines:
        match = re.match(rf"{re.escape(str(path))}:(\d+):(\d+): ([^:]+): .+", line)
        assert match, line
        found.add((int(match.group(1)), match.group(3)))
    assert found == expected
    assert "did you mean 'analytics_block'" in run.stderr and "did you mean 'sip_code'" in run.stderr


@pytest.mark.parametrize(("text", "line", "key", "words"), [
    ("version: 2\nrules: []\n", 1, "version", "version: 1"),
    ("rules: []\n", 1, "(document)", "version: 1"),
    ("version: 1\nrules: {a: 1}\n", 2, "rules", "list of rules"),
    ("version: 1\nrules:\n  - name: x\n    match: {}\n    category: other\n", 3, "rules[0]", "source"),
    ("version: 1\nrules: [\n", 3, "(document)", "not valid YAML"),
    ("version: 1\nversion: 1\n", 2, "version", "duplicate key"),
    ("version: 1\ncategories:\n  x: {severity: loud}\n", 3, "categories.x.severity", "critical"),
    ("version: 1\nrulez: []\n", 2, "rulez", "did you mean 'rules'"),
    ("version: 1\nrules:\n  - {name: x, source: s, category: other, match: {reason: {cause: abc}}}\n", 3,
     "rules[0].match.reason.cause", "cause number"),
    ("version: 1\nrules:\n  - {name: x, source: s, category: other, match: {header: {value: a}}}\n", 3,
     "rules[0].match.header.name", "header name"),
    ("\xff\xfe", 1, "(document)", "not UTF-8"),
])
def test_loader_problems_name_line_and_key(tmp_path: Path, text, line, key, words):
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode("latin-1"))
    ruleset, report = build_ruleset([str(path)])
    assert ruleset is None
    messages = [str(p) for p in report.errors]
    assert any(m.startswith(f"{path}:{line}:") and f": {key}: " in m and words in m for m in messages), messages


def test_shadowed_rule_warns_but_passes(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text("version: 1\ncategories: {other: {}, analytics_block: {analytics_block: true}}\nrules:\n"
                    "  - {name: any-6xx, source: s, category: other, match: {sip_code: 6xx}}\n"
                    "  - {name: just-608, source: s, category: analytics_block, match: {sip_code: 608}}\n"
                    "  - {name: 608-on-x, source: s, category: analytics_block, match: {sip_code: 608, trunk: x}}\n"
                    "  - {name: busy, source: s, category: other, match: {sip_code: 486}}\n")
    run = blockradar("rules", "check", "--standalone", str(path))
    assert run.returncode == 0
    warnings = run.stderr.strip().splitlines()
    assert warnings == [
        f"{path}:5:5: warning: rules[1]: rule 'just-608' can never match: rule 'any-6xx' at {path}:4 "
        "matches every call it would, and comes first",
        f"{path}:6:5: warning: rules[2]: rule '608-on-x' can never match: rule 'any-6xx' at {path}:4 "
        "matches every call it would, and comes first",
    ]
    strict = blockradar("rules", "check", "--strict", "--standalone", str(path))
    assert strict.returncode == 2


def test_layering_override_first_and_categories_merge(tmp_path: Path):
    path = tmp_path / "carrier.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        categories:
          declined: {severity: warning}
          carrier_x_block: {description: X, severity: critical, analytics_block: true, what_to_do: call X}
        rules:
          - name: x-blocked
            source: carrier X docs
            match: {sip_code: 603, sip_phrase: 'blocked by x', trunk: 'x-*'}
            category: carrier_x_block
            confidence: high
        """))
    ruleset, report = build_ruleset(["default", str(path)])
    assert ruleset is not None, report.errors
    assert ruleset.rules[0].ref.name == "x-blocked"
    assert ruleset.categories["declined"].severity == "warning"
    assert ruleset.categories["declined"].what_to_do  # merged, not replaced
    assert ruleset.analytics_categories() == {"analytics_block", "carrier_x_block"}
    from blockradar.outcome import CallOutcome
    hit = CallOutcome("asterisk", "c", "1", sip_code=603, sip_phrase="Blocked by X", trunk="x-east")
    miss = hit.replace(trunk="y-east")
    assert ruleset.classify(hit).category == "carrier_x_block"
    assert ruleset.classify(miss).category == "declined"
