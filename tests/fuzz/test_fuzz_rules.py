"""Fuzz of the rule loader (blockradar.ruleset with blockradar.conditions and blockradar.yamlsource): the shipped rule
packs damaged line by line, their values replaced by random YAML, rules with random ``match:`` conditions (hostile
regexes included), and arbitrary pack names. ``build_ruleset`` never raises: it gives a RuleSet, or None with
errors, every one a ``file:line:column: key: message`` line, in bounded time; a RuleSet it gives classifies and
traces any outcome."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from blockradar.conditions import MATCH_KEYS
from blockradar.outcome import CallOutcome
from blockradar.ruleset import FALLBACK_CATEGORY, RuleSet, RuleSetError, build_ruleset, load_ruleset
from tests.fuzz.support import ROOT, check_problems, damaged_text, fuzz, restructured, yaml_values

PACKS = (ROOT / "rules" / "default.yaml", ROOT / "rules" / "carriers" / "twilio.yaml")
OUTCOMES = (
    CallOutcome("asterisk", "pbx1", "c1"),
    CallOutcome("asterisk", "pbx1", "c2", sip_code=603, sip_phrase="Network Blocked", q850_cause=21,
                reason='SIP;cause=603;text="v=analytics1;url=https://x.example"'),
    CallOutcome("freeswitch", "fs1", "c3", sip_code=608, trunk="carrier-a", headers={"X-Twilio-Error": "32203"},
                call_info="<https://x.example/jws>;purpose=jwscard", answered=False),
    CallOutcome("freeswitch", "fs1", "c4", sip_code=200, answered=True, pbx_cause="NORMAL_CLEARING"),
    CallOutcome("asterisk", "pbx1", "c5", sip_code=487, sip_phrase="a" * 512, reason="Q.850;cause=16"),
)


@functools.cache
def seeds() -> tuple[str, ...]:
    return tuple(path.read_text() for path in PACKS)


def check_build(specs: list[str], file: str | None = None) -> RuleSet | None:
    """``build_ruleset``: a RuleSet, or None and errors; every problem one ``file:line:column: ...`` line; a RuleSet
    classifies and traces every outcome; ``load_ruleset`` agrees."""
    started = time.monotonic()
    ruleset, report = build_ruleset(specs)
    assert time.monotonic() - started < 5
    check_problems(report.errors)
    check_problems(report.warnings)
    if file is not None:
        assert all(p.file in (file, "default pack", "carriers/twilio pack")
                   for p in report.errors + report.warnings)
    assert (ruleset is None) == bool(report.errors)
    if ruleset is None:
        with pytest.raises(RuleSetError):
            load_ruleset(specs)
        return None
    for outcome in OUTCOMES:
        found = ruleset.classify(outcome)
        assert found.category in ruleset.categories or found.category == FALLBACK_CATEGORY
        assert ruleset.trace(outcome)
    return ruleset


@pytest.fixture(scope="module")
def rule_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-rules") / "rules.yaml"


def test_the_seeds_load(rule_path: Path) -> None:
    for seed in seeds():
        rule_path.write_text(seed)
        assert check_build(["default", str(rule_path)], str(rule_path)) is not None


@pytest.mark.timeout(120)
@fuzz(120)
@given(data=st.data(), which=st.integers(0, 1))
def test_a_damaged_rule_pack_loads_or_is_refused_with_file_and_line(rule_path: Path, data, which: int):
    """A shipped pack, lines dropped, repeated, moved, re-indented, cut, YAML tokens put anywhere."""
    rule_path.write_bytes(data.draw(damaged_text(seeds()[which])).encode("utf-8", "surrogatepass"))
    check_build([str(rule_path)], str(rule_path))


@pytest.mark.timeout(120)
@fuzz(120)
@given(data=st.data(), which=st.integers(0, 1))
def test_a_rule_pack_with_values_of_any_shape_loads_or_is_refused(rule_path: Path, data, which: int):
    """A shipped pack with values (or whole rules, categories, conditions) replaced by random YAML."""
    rule_path.write_text(data.draw(restructured(seeds()[which])))
    check_build([str(rule_path)], str(rule_path))


REGEXES = ("(" * 3000 + ")" * 3000, "a{99999999999}", "(?:" * 500 + "a" + ")" * 500, "a{1000}{1000}", "(a{1000}){1000}",
           "(?P<n>a)(?P=n)", "(?=a)", "(?<!a)b", "\\", "[", "*", "\\N{NOPE}", "\\ud800", "\ud800", "(?i)block",
           "^(a+)+$", "x" * 5000, "[\\w-]{1,64}", "", "\x00", "\\p{L}", "(?P<n>", "a|" * 2000 + "b")
regexes = st.one_of(st.sampled_from(REGEXES), st.text(max_size=12))
codes = st.sampled_from([603, "6xx", "7xx", "none", 99, 700, True, [600, "6xx", None], [], {}, "", -1, 10**400, 1.5])
match_values = st.one_of(yaml_values, regexes, codes)
VALUES_OF = {
    "sip_code": codes, "q850_cause": codes, "sip_phrase": regexes,
    "reason": st.one_of(st.booleans(), st.fixed_dictionaries({}, optional={
        "present": st.one_of(st.booleans(), st.sampled_from(["yes", 1, None])),
        "protocol": st.sampled_from(["SIP", "q.850", "", 7, None]),
        "cause": st.one_of(st.integers(-5, 10**30), st.lists(st.integers(-5, 700), max_size=3), st.just("21")),
        "text": regexes, "analytics_avp": st.sampled_from([True, "no"]), "extra": st.just(1)})),
    "header": st.one_of(st.sampled_from(["X-Twilio-Error", "", 5]), st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(["X-Twilio-Error", "sip_rh_X-A", "", " ", 5])}, optional={"value": regexes}),
        max_size=2), st.fixed_dictionaries({"name": st.just("X-A"), "value": regexes})),
    "redress": st.one_of(st.booleans(), st.fixed_dictionaries({}, optional={
        "present": st.sampled_from([True, False, "x"]), "conformant": st.sampled_from([True, False, "x"]),
        "source": st.sampled_from(["reason", "call-info", "x", 1])})),
    "trunk": st.one_of(regexes, st.lists(regexes, max_size=3)),
}


@st.composite
def match_conditions(draw: st.DrawFn) -> dict[str, object]:
    keys = draw(st.lists(st.sampled_from((*MATCH_KEYS, "sip_codes", "", "Header")), max_size=3, unique=True))
    return {key: draw(VALUES_OF.get(key, match_values) if draw(st.integers(0, 3)) else match_values) for key in keys}


@pytest.mark.timeout(120)
@fuzz(200)
@given(match=match_conditions(),
       extra=st.dictionaries(st.sampled_from(("name", "source", "category", "confidence", "note", "priority")),
                             yaml_values, max_size=2),
       layered=st.booleans())
def test_rules_with_any_match_conditions_load_or_are_refused(rule_path: Path, match, extra, layered: bool):
    """One rule with random ``match:`` conditions (regexes RE2 or Python cannot compile, nested thousands deep,
    repeat counts past any limit, codes out of range, mappings with wrong keys), alone or on the default pack."""
    rule = {"name": "fuzzed", "source": "tests/fuzz", "category": "analytics_block", "match": match, **extra}
    pack = {"version": 1, "categories": {"analytics_block": {"severity": "critical"}}, "rules": [rule]}
    rule_path.write_text(yaml.safe_dump(pack, allow_unicode=True))
    check_build(["default", str(rule_path)] if layered else [str(rule_path)], str(rule_path))


@pytest.mark.timeout(60)
@fuzz(100)
@given(specs=st.lists(st.one_of(st.text(max_size=30), st.sampled_from(
    ["default", "carriers/twilio", "default.yaml", "carriers", "..", ".", "/", "rules/default.yaml", "x\x00y",
     "\x00", "a" * 5000, "~", "/nonexistent/x.yaml", "carriers/../default"])), min_size=1, max_size=3))
def test_any_pack_names_load_or_are_refused(specs: list[str]):
    """``rules: [...]`` of a config holds any strings: bundled names, paths, directories, NUL bytes, 5,000 letters."""
    check_build(specs)


def test_hostile_regexes_and_pack_names_are_refused_with_file_and_line(rule_path: Path) -> None:
    """Found by the fuzz suite: Python's ``re`` raised RecursionError on parentheses nested 3,000 deep and
    OverflowError on ``a{99999999999}`` (not ``re.error``), a pack name too long for the file system raised OSError
    (from ``Path.exists``) and one with a NUL byte ValueError, each out of ``build_ruleset``."""
    for regex in ("(" * 3000 + ")" * 3000, "a{99999999999}"):
        rule = {"name": "r", "source": "s", "category": "x", "match": {"sip_phrase": regex}}
        rule_path.write_text(yaml.safe_dump({"version": 1, "categories": {"x": {}}, "rules": [rule]}))
        ruleset, report = build_ruleset([str(rule_path)])
        assert ruleset is None and [str(p).split(": ")[0] for p in report.errors] == [f"{rule_path}:6:5"]
        assert "regular expression does not compile" in str(report.errors[0])
    ruleset, report = build_ruleset(["default", "x\x00y", "a" * 5000])
    assert ruleset is None and [str(p)[:12] for p in report.errors] == ["aaaaaaaaaaaa", "x\\x00y:1:1: "]
    assert "cannot read file: File name too long" in str(report.errors[0])
