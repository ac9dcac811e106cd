"""Rule packs: load, validate, layer and compile YAML rule files; classify outcomes with them.

A rule file (``version: 1``) holds ``categories`` (name -> description, severity, analytics_block,
what_to_do) and an ordered list of ``rules`` (name, source, match, category, confidence); the first
rule that matches wins. Files are layered: rules of later files are tried first (carrier
overrides), categories merge field by field. Compilation happens once; ``RuleSet.classify`` only
walks the precompiled candidates for the outcome's SIP code and allocates nothing.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blockradar.classification import CONFIDENCES, SEVERITIES, Category, Classification, RuleRef
from blockradar.conditions import ALL_SIP_CODES, Condition, ConditionError, SipCode, parse_condition
from blockradar.outcome import CallOutcome
from blockradar.yamlsource import KeyPath, Problem, YamlDocument, YamlError, load_yaml

RULE_FORMAT_VERSION = 1
DEFAULT_PACK = "default"
FALLBACK_CATEGORY = "other"
# The match keys whose outcome fields RuleSet.classify puts in its memo key. A new match key must be
# added to the memo key and here (tests/test_classification.py checks this against conditions.PARSERS).
MEMO_COVERS = frozenset({"sip_code", "sip_phrase", "reason", "q850_cause", "pbx_cause", "pbx", "trunk", "answered",
                         "header", "redress"})
MEMO_MAX = 4096  # distinct (code, phrase, reason, ...) combinations remembered by RuleSet.classify

_FILE_KEYS = {"version", "name", "description", "categories", "rules"}
_CATEGORY_KEYS = {"description", "severity", "analytics_block", "what_to_do"}
_RULE_KEYS = {"name", "source", "match", "category", "confidence", "description", "note"}


def bundled_rules_dir() -> Path:
    """Where the shipped rule packs are: inside the wheel, or ``rules/`` of a source checkout."""
    packaged = Path(str(importlib.resources.files("blockradar"))) / "_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "rules"


def resolve_rule_path(spec: str) -> tuple[Path, str]:
    """``default`` or a bundled pack name (``carriers/twilio``) -> bundled file; else a path.

    Returns (path to read, name to show in messages: ``default pack``, ``carriers/twilio pack`` or the
    path as given), so a location reads ``default pack:120``."""
    bundled = bundled_rules_dir()
    name = spec[:-5] if spec.endswith(".yaml") else spec
    candidate = bundled / f"{name}.yaml"
    try:
        if not Path(spec).exists() and candidate.is_file():
            # named as the config names it, not by a path inside the installed package a user never sees
            return candidate, f"{name} pack"
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte (tests/fuzz): not bundled
        pass
    return Path(spec), spec


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule."""

    ref: RuleRef
    category: str
    confidence: str
    conditions: tuple[Condition, ...]
    result: Classification

    def matches(self, outcome: CallOutcome) -> bool:
        return all(condition.test(outcome) for condition in self.conditions)

    def why_not(self, outcome: CallOutcome) -> str:
        for condition in self.conditions:
            if not condition.test(outcome):
                return condition.why_not(outcome)
        return ""

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self.conditions) or "(matches everything)"


@dataclass(frozen=True, slots=True)
class TraceStep:
    rule: Rule
    matched: bool
    why_not: str


@dataclass(slots=True)
class _RawRule:
    file: str
    line: int
    path: KeyPath
    name: str
    source: str
    category: str
    confidence: str
    conditions: tuple[Condition, ...]
    doc: YamlDocument
    valid: bool = True


@dataclass(slots=True)
class LoadReport:
    """What loading found: errors make the set unusable; warnings are advice."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


class RuleSetError(YamlError):
    """Rule files that cannot be used; ``problems`` holds every error found."""


class RuleSet:
    """Compiled, layered rules plus the merged category catalogue."""

    def __init__(self, rules: Sequence[Rule], categories: dict[str, Category], files: Sequence[str],
                 warnings: Sequence[Problem] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.categories = dict(categories)
        self.files = tuple(files)
        self.warnings = tuple(warnings)
        fallback_category = self.categories.get(FALLBACK_CATEGORY)
        self.fallback = Classification(
            FALLBACK_CATEGORY, "low", RuleRef("(no rule matched)", "", 0, ""),
            fallback_category.analytics_block if fallback_category else False)
        no_code = tuple(r for r in self.rules if not any(isinstance(c, SipCode) for c in r.conditions))
        self._unusual_codes = no_code
        self._memo: dict[tuple[Any, ...], Classification] = {}
        self._by_code: dict[int | None, tuple[Rule, ...]] = {
            code: tuple(r for r in self.rules if _may_match_code(r, code))
            for code in (None, *sorted(ALL_SIP_CODES))
        }

    def candidates(self, sip_code: int | None) -> tuple[Rule, ...]:
        found = self._by_code.get(sip_code)
        return found if found is not None else self._unusual_codes

    def classify(self, outcome: CallOutcome) -> Classification:
        """The first matching rule's classification, or ``other``/low when none matches.

        Memoised on every field a condition can read (the match keys: sip_code, sip_phrase, reason,
        q850_cause, pbx_cause, pbx, trunk, header, redress, answered), so the many outcomes that
        differ only in numbers, ids and times are classified once. Bounded: cleared when full."""
        r = outcome.redress
        key = (outcome.sip_code, outcome.sip_phrase, outcome.reason, outcome.q850_cause, outcome.pbx_cause,
               outcome.pbx, outcome.trunk, outcome.answered,
               tuple(outcome.headers.items()) if outcome.headers else None,
               None if r is None else (r.source, r.conformant))
        memo = self._memo
        found = memo.get(key)
        if found is None:
            found = self._classify(outcome)
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[key] = found
        return found

    def _classify(self, outcome: CallOutcome) -> Classification:
        for rule in self.candidates(outcome.sip_code):
            for condition in rule.conditions:
                if not condition.test(outcome):
                    break
            else:
                return rule.result
        return self.fallback

    def trace(self, outcome: CallOutcome) -> list[TraceStep]:
        """Every rule in order, whether it matched and why not, up to and including the winner."""
        steps: list[TraceStep] = []
        for rule in self.rules:
            why = rule.why_not(outcome)
            steps.append(TraceStep(rule, why == "", why))
            if why == "":
                break
        return steps

    def category(self, name: str) -> Category:
        return self.categories.get(name) or Category(name, "", "info", False, "")

    def analytics_categories(self) -> frozenset[str]:
        return frozenset(name for name, cat in self.categories.items() if cat.analytics_block)


def _may_match_code(rule: Rule, code: int | None) -> bool:
    return all(code in c.codes for c in rule.conditions if isinstance(c, SipCode))


# ------------------------------------------------------------------------------ loading

def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(doc: YamlDocument, path: KeyPath, mapping: dict[str, Any], allowed: set[str],
                report: LoadReport) -> None:
    for key in mapping:
        if key not in allowed:
            report.errors.append(doc.problem(
                (*path, key), f"unknown key{_suggest(str(key), allowed)}; expected one of {sorted(allowed)}"))


def _parse_categories(doc: YamlDocument, raw: Any, report: LoadReport) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        report.errors.append(doc.problem(("categories",), "expected a mapping of category name -> fields"))
        return {}
    parsed: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        path: KeyPath = ("categories", name)
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            report.errors.append(doc.problem(path, "a category name is letters, digits and underscores"))
            continue
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            report.errors.append(doc.problem(path, f"expected a mapping with keys {sorted(_CATEGORY_KEYS)}"))
            continue
        _check_keys(doc, path, spec, _CATEGORY_KEYS, report)
        fields: dict[str, Any] = {}
        for key in ("description", "what_to_do"):
            if key in spec:
                if not isinstance(spec[key], str):
                    report.errors.append(doc.problem((*path, key), "expected text"))
                else:
                    fields[key] = spec[key].strip()
        if "severity" in spec:
            if spec["severity"] not in SEVERITIES:
                report.errors.append(doc.problem((*path, "severity"), f"expected one of {list(SEVERITIES)}"))
            else:
                fields["severity"] = spec["severity"]
        if "analytics_block" in spec:
            if not isinstance(spec["analytics_block"], bool):
                report.errors.append(doc.problem((*path, "analytics_block"), "expected true or false"))
            else:
                fields["analytics_block"] = spec["analytics_block"]
        parsed[name] = fields
    return parsed


def _parse_rule(doc: YamlDocument, index: int, raw: Any, report: LoadReport) -> _RawRule | None:
    path: KeyPath = ("rules", index)
    if not isinstance(raw, dict):
        report.errors.append(doc.problem(path, "expected a rule: a mapping with name, source, match, category"))
        return None
    _check_keys(doc, path, raw, _RULE_KEYS, report)
    ok = True
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        report.errors.append(doc.problem((*path, "name") if "name" in raw else path,
                                         "every rule needs a name (text)"))
        ok = False
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        report.errors.append(doc.problem((*path, "source") if "source" in raw else path,
                                         "every rule needs a source: the RFC / ATIS / PBX reference it rests on"))
        ok = False
    category = raw.get("category")
    if not isinstance(category, str) or not category:
        report.errors.append(doc.problem((*path, "category") if "category" in raw else path,
                                         "every rule needs a category"))
        ok = False
    confidence = raw.get("confidence", "medium")
    if confidence not in CONFIDENCES:
        report.errors.append(doc.problem((*path, "confidence"), f"expected one of {list(CONFIDENCES)}"))
        ok = False
    conditions: list[Condition] = []
    match = raw.get("match", {})
    if match is None:
        match = {}
    if not isinstance(match, dict):
        report.errors.append(doc.problem((*path, "match"), "expected a mapping of conditions (or {} for all)"))
        ok = False
    else:
        for key, value in match.items():
            try:
                conditions.extend(parse_condition(str(key), value))
            except ConditionError as exc:
                message = str(exc)
                if message.startswith("unknown match key"):
                    message += _suggest(str(key), ("sip_code", "sip_phrase", "reason", "q850_cause", "pbx_cause",
                                                   "pbx", "trunk", "header", "redress", "answered"))
                report.errors.append(doc.problem((*path, "match", key, *exc.path), message))
                ok = False
    if not isinstance(name, str) or not isinstance(category, str) or not category:
        return None
    line, _ = doc.where(path)
    return _RawRule(doc.file, line, path, name.strip(), str(source or "").strip(), category, str(confidence),
                    tuple(conditions), doc, ok)


def _read_file(spec: str, report: LoadReport) -> tuple[YamlDocument, dict[str, dict[str, Any]], list[_RawRule]] | None:
    path, display = resolve_rule_path(spec)
    try:
        doc = load_yaml(path, display)
    except YamlError as exc:
        report.errors.extend(exc.problems)
        return None
    data = doc.data
    if not isinstance(data, dict):
        report.errors.append(doc.problem((), "a rule file is a mapping with version, categories and rules"))
        return None
    _check_keys(doc, (), data, _FILE_KEYS, report)
    version = data.get("version")
    if version != RULE_FORMAT_VERSION:
        report.errors.append(doc.problem(("version",) if "version" in data else (),
                                         f"expected 'version: {RULE_FORMAT_VERSION}' (the rule format version)"))
    categories = _parse_categories(doc, data.get("categories"), report)
    raw_rules = data.get("rules", [])
    rules: list[_RawRule] = []
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        report.errors.append(doc.problem(("rules",), "expected a list of rules"))
    else:
        for index, raw in enumerate(raw_rules):
            rule = _parse_rule(doc, index, raw, report)
            if rule is not None:
                rules.append(rule)
    return doc, categories, rules


def _merge_categories(layers: list[dict[str, dict[str, Any]]]) -> dict[str, Category]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for name, fields in layer.items():
            merged.setdefault(name, {}).update(fields)
    return {
        name: Category(name, f.get("description", ""), f.get("severity", "info"),
                       f.get("analytics_block", False), f.get("what_to_do", ""))
        for name, f in merged.items()
    }


def _shadowed_by(earlier: _RawRule, later: _RawRule) -> bool:
    """True when every outcome that matches ``later`` surely matches ``earlier`` first."""
    return all(any(e.covers(l_) for l_ in later.conditions) for e in earlier.conditions)


def build_ruleset(specs: Sequence[str] | None = None) -> tuple[RuleSet | None, LoadReport]:
    """Load and layer rule files. ``specs`` None means the bundled default pack.

    Returns the RuleSet (None when there are errors) and every error and warning found."""
    specs = list(specs) if specs else [DEFAULT_PACK]
    report = LoadReport()
    layers: list[tuple[dict[str, dict[str, Any]], list[_RawRule]]] = []
    seen_paths: set[Path] = set()
    files: list[str] = []
    for spec in specs:
        path, _ = resolve_rule_path(spec)
        try:
            resolved = path.resolve()
        except (OSError, ValueError):  # ValueError: a NUL byte in the name
            resolved = path
        if resolved in seen_paths:
            continue
        seen_paths.add(resolved)
        files.append(resolve_rule_path(spec)[1])
        read = _read_file(spec, report)
        if read is not None:
            layers.append((read[1], read[2]))
    categories = _merge_categories([cats for cats, _ in layers])
    ordered: list[_RawRule] = [rule for _, rules in reversed(layers) for rule in rules]

    names: dict[str, _RawRule] = {}
    for rule in ordered:
        if rule.category not in categories:
            report.errors.append(rule.doc.problem(
                (*rule.path, "category"),
                f"unknown category {rule.category!r}{_suggest(rule.category, categories)}; "
                f"define it under 'categories:' or use one of {sorted(categories)}"))
        previous = names.get(rule.name)
        if previous is not None:
            same_file = previous.file == rule.file
            report.errors.append(rule.doc.problem(
                (*rule.path, "name"),
                f"duplicate rule name {rule.name!r} (also at {previous.file}:{previous.line}); names must be unique",
                "error" if same_file else "warning"))
            if not same_file:
                report.warnings.append(report.errors.pop())
        else:
            names[rule.name] = rule
    shadowed: dict[int, list[_RawRule]] = {}
    valid_rules = [rule for rule in ordered if rule.valid]
    for later_index, later in enumerate(valid_rules):
        for earlier_index, earlier in enumerate(valid_rules[:later_index]):
            if _shadowed_by(earlier, later):
                shadowed.setdefault(earlier_index, []).append(later)
                break
    for earlier_index, victims in shadowed.items():
        earlier = valid_rules[earlier_index]
        if len(victims) > 2:
            names_list = ", ".join(repr(v.name) for v in victims[:3]) + (", ..." if len(victims) > 3 else "")
            report.warnings.append(earlier.doc.problem(
                earlier.path,
                f"rule {earlier.name!r} matches every call that the {len(victims)} rules after it would "
                f"({names_list}), so they can never match", "warning"))
            continue
        for later in victims:
            report.warnings.append(later.doc.problem(
                later.path,
                f"rule {later.name!r} can never match: rule {earlier.name!r} at {earlier.file}:{earlier.line} "
                "matches every call it would, and comes first", "warning"))
    report.errors.sort(key=lambda p: (p.file, p.line, p.column))
    report.warnings.sort(key=lambda p: (p.file, p.line, p.column))
    if report.errors:
        return None, report
    compiled: list[Rule] = []
    for raw in ordered:
        ref = RuleRef(raw.name, raw.file, raw.line, raw.source)
        result = Classification(raw.category, raw.confidence, ref, categories[raw.category].analytics_block)
        compiled.append(Rule(ref, raw.category, raw.confidence, raw.conditions, result))
    return RuleSet(compiled, categories, files, report.warnings), report


def load_ruleset(specs: Sequence[str] | None = None) -> RuleSet:
    """Like ``build_ruleset`` but raises RuleSetError listing every problem when unusable."""
    ruleset, report = build_ruleset(specs)
    if ruleset is None:
        raise RuleSetError(report.errors)
    return ruleset
