"""Hostile config and rule files: refused with file:line, exit 2, no traceback, in milliseconds; on SIGHUP a
refused file is a failed reload (the old rules keep running), never a hang or an "ok"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockradar.yamlsource import MAX_YAML_BYTES
from tests.test_daemon_inprocess import daemon_with_rule_file, until

# the audit's 1 KB "billion laughs": nine levels of nine aliases each (9**9 strings once expanded)
BILLION_LAUGHS = "version: 1\n" + "".join(
    f"l{i}: &l{i} [{', '.join(['*l' + str(i - 1)] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(9))
DEEP = "version: 1\nrules: " + "[" * 20_000 + "]" * 20_000 + "\n"
HUGE = "version: 1\n" + "# padding\n" * (MAX_YAML_BYTES // 10 + 1)
CASES = {"billion-laughs": (BILLION_LAUGHS, ":3:", "aliases (*name) are not allowed"),
         "deep": (DEEP, ":2:", "nested deeper than 64 levels"),
         "huge": (HUGE, ":1:", "larger than 1024 KiB")}


def blockradar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockradar", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", CASES)
def test_rules_check_and_run_check_refuse_a_hostile_file_at_once(tmp_path: Path, case: str) -> None:
    text, line, words = CASES[case]
    rules = tmp_path / "hostile.yaml"
    rules.write_text(text)
    started = time.monotonic()
    checked = blockradar("rules", "check", str(rules))
    config = tmp_path / "blockradar.yaml"
    config.write_text(f"rules: [default, {rules}]\nstore: {tmp_path / 's.db'}\n")
    run = blockradar("run", "--config", str(config), "--check")
    as_config = blockradar("run", "--config", str(rules), "--check")  # the same text as the config file itself
    assert time.monotonic() - started < 30  # the audit: 33-52 s each, then a MemoryError
    for result in (checked, run, as_config):
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and words in result.stderr
    assert f"{rules}{line}" in checked.stderr


async def test_a_hostile_file_on_sighup_is_a_failed_reload(tmp_path: Path) -> None:
    async with daemon_with_rule_file(tmp_path) as (daemon, rules, inbox):
        before = daemon.ruleset
        for text, _, words in CASES.values():
            rules.write_text(text)
            started = time.monotonic()
            assert daemon.reload() is False
            assert time.monotonic() - started < 5
            assert daemon.ruleset is before and daemon.last_reload["ok"] is False
            assert words in daemon.last_reload["error"]
        await until(lambda: "firing:blockradar-config-reload-failed" in inbox.titles())


def test_an_operator_regex_matches_in_linear_time_or_is_refused(tmp_path: Path) -> None:
    """The audit: ``sip_phrase: '^(a+)+$'`` passed `rules check`, then a 28-character phrase from the
    network took 10 s to match (Python's re backtracks; 40 characters would take days). RE2 is linear."""
    from blockradar.outcome import CallOutcome
    from blockradar.ruleset import load_ruleset

    rules = tmp_path / "redos.yaml"
    rules.write_text("version: 1\nrules:\n  - {name: redos, source: s, category: provider_block, "
                     "match: {sip_phrase: '^(a+)+$'}}\n")
    assert blockradar("rules", "check", str(rules)).returncode == 0
    ruleset = load_ruleset(["default", str(rules)])
    for phrase in ("a" * 40 + "b", "b" + "a" * 100_000, "aaaa"):  # (only the first 1 KB is looked at)
        call = CallOutcome("asterisk", "pbx1", "c1", sip_code=603, sip_phrase=phrase)
        expected = "provider_block" if phrase == "aaaa" else "declined"
        assert ruleset.classify(call).category == expected
    backref = tmp_path / "backref.yaml"
    backref.write_text("version: 1\nrules:\n  - {name: br, source: s, category: provider_block, "
                       "match: {sip_phrase: '(a)\\1'}}\n")
    refused = blockradar("rules", "check", str(backref))
    assert refused.returncode == 2 and f"{backref}:3:" in refused.stderr
    assert "linear-time (RE2) engine" in refused.stderr and "Traceback" not in refused.stderr
    assert "re2.cc" not in refused.stderr  # RE2's own logging stays quiet
