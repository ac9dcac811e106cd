"""The conditions a rule can put on a call outcome, each compiled once from YAML.

A condition is a small object with three jobs: ``test(outcome)`` on the hot path (no parsing, no
regex compilation), ``why_not(outcome)`` for ``explain --trace``, and ``covers(other)`` so
``rules check`` can prove that an earlier rule shadows a later one (only when it is sure).
``parse_condition`` turns one ``match:`` entry into a condition or a list of problems.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

from blockradar.globs import compile_globs
from blockradar.outcome import CallOutcome
from blockradar.redress import ReasonValue, has_analytics_avp, parse_reason

ALL_SIP_CODES = frozenset(range(100, 700))


class ConditionError(ValueError):
    """A ``match:`` value that cannot be compiled; ``path`` is relative to the key."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


@functools.lru_cache(maxsize=4096)
def reason_facts(reason: str) -> tuple[tuple[ReasonValue, ...], bool]:
    """Parsed reason-values and whether the ATIS AVP is present; memoised, reasons repeat a lot."""
    return tuple(parse_reason(reason)), has_analytics_avp(reason)


def _header_map(outcome: CallOutcome) -> dict[str, str]:
    """Header names lower-cased, with FreeSWITCH's ``sip_rh_`` prefix removed."""
    out: dict[str, str] = {}
    for name, value in outcome.headers.items():
        key = name.lower()
        if key.startswith("sip_rh_"):
            key = key[7:]
        out[key] = value
    return out


class Condition:
    key: str  # the match: key this condition came from

    def test(self, outcome: CallOutcome) -> bool:
        raise NotImplementedError

    def why_not(self, outcome: CallOutcome) -> str:
        raise NotImplementedError

    def covers(self, other: Condition) -> bool:
        """True only when every outcome that passes ``other`` surely passes ``self``."""
        return False

    def describe(self) -> str:
        raise NotImplementedError


def _fmt_codes(codes: frozenset[int | None]) -> str:
    ints = sorted(c for c in codes if c is not None)
    parts: list[str] = []
    for klass in range(1, 7):
        block = set(range(klass * 100, klass * 100 + 100))
        if block <= set(ints):
            parts.append(f"{klass}xx")
            ints = [c for c in ints if c not in block]
    parts += [str(c) for c in ints]
    if None in codes:
        parts.append("none")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class SipCode(Condition):
    codes: frozenset[int | None]
    key: str = "sip_code"

    def test(self, outcome: CallOutcome) -> bool:
        return outcome.sip_code in self.codes

    def why_not(self, outcome: CallOutcome) -> str:
        code = "none" if outcome.sip_code is None else outcome.sip_code
        return f"sip_code {code} is not in [{_fmt_codes(self.codes)}]"

    def covers(self, other: Condition) -> bool:
        return isinstance(other, SipCode) and other.codes <= self.codes

    def describe(self) -> str:
        return f"sip_code in [{_fmt_codes(self.codes)}]"


MAX_MATCH_TEXT = 1024  # text a rule regex looks at (SIP phrases, reasons and headers are far shorter)


class LinearRegex:
    """A rule's regular expression on RE2, whose matching time is linear in the text: an operator's
    ``sip_phrase: '^(a+)+$'`` took 10 s on a 28-character phrase from the network with Python's ``re``.
    RE2 syntax is Python's minus backreferences and lookaround; such a pattern is refused at load, with
    the reason. Case-insensitive; the text is cut at ``MAX_MATCH_TEXT``."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, *, ignore_case: bool = True) -> None:
        options = re2.Options()
        options.log_errors = False  # RE2 would print to stderr, outside the log format
        options.case_sensitive = not ignore_case
        try:
            re.compile(pattern)  # Python's message for plain syntax errors is the clearer one
        except re.error as exc:
            raise ValueError(f"regular expression does not compile: {exc}") from None
        except (OverflowError, RecursionError):  # a{99999999999}; "(" nested thousands deep (found by tests/fuzz)
            raise ValueError("regular expression does not compile: a repeat count too large or nested too deep") \
                from None
        try:
            self._compiled = re2.compile(pattern, options)
        except re2.error as exc:
            detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"regular expression not supported by the linear-time (RE2) engine, which has no "
                             f"backreferences or lookaround: {detail}") from None
        self.pattern = pattern

    def search(self, text: str) -> object | None:
        return self._compiled.search(text[:MAX_MATCH_TEXT])

    def fullmatch(self, text: str) -> object | None:
        return self._compiled.fullmatch(text[:MAX_MATCH_TEXT])

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearRegex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


@dataclass(frozen=True, slots=True)
class Pattern(Condition):
    """A case-insensitive regex searched in a text field of the outcome."""

    key: str
    field: str
    source: str
    regex: LinearRegex

    def test(self, outcome: CallOutcome) -> bool:
        value = getattr(outcome, self.field)
        return value is not None and self.regex.search(value) is not None

    def why_not(self, outcome: CallOutcome) -> str:
        value = getattr(outcome, self.field)
        if value is None:
            return f"{self.field} is unknown"
        return f"{self.field} {value!r} does not match /{self.source}/"

    def covers(self, other: Condition) -> bool:
        return isinstance(other, Pattern) and other.key == self.key and other.source == self.source

    def describe(self) -> str:
        return f"{self.field} matches /{self.source}/"


@dataclass(frozen=True, slots=True)
class OneOf(Condition):
    """The field's value is one of a set (integers, or strings compared case-insensitively)."""

    key: str
    field: str
    values: frozenset[Any]
    fold_case: bool = False

    def _value(self, outcome: CallOutcome) -> Any:
        value = getattr(outcome, self.field)
        return value.lower() if self.fold_case and isinstance(value, str) else value

    def test(self, outcome: CallOutcome) -> bool:
        return self._value(outcome) in self.values

    def why_not(self, outcome: CallOutcome) -> str:
        value = getattr(outcome, self.field)
        return f"{self.field} {'none' if value is None else value!r} is not in [{self.describe_values()}]"

    def covers(self, other: Condition) -> bool:
        return isinstance(other, OneOf) and other.key == self.key and other.values <= self.values

    def describe_values(self) -> str:
        return ", ".join(sorted("none" if v is None else str(v) for v in self.values))

    def describe(self) -> str:
        return f"{self.field} in [{self.describe_values()}]"


@dataclass(frozen=True, slots=True)
class Flag(Condition):
    key: str
    expected: bool
    read: Callable[[CallOutcome], bool]
    label: str

    def test(self, outcome: CallOutcome) -> bool:
        return self.read(outcome) is self.expected

    def why_not(self, outcome: CallOutcome) -> str:
        return f"{self.label} is {str(not self.expected).lower()}"

    def covers(self, other: Condition) -> bool:
        return isinstance(other, Flag) and other.key == self.key and other.expected is self.expected

    def describe(self) -> str:
        return f"{self.label} is {str(self.expected).lower()}"


@dataclass(frozen=True, slots=True)
class TrunkGlob(Condition):
    globs: tuple[str, ...]
    regex: LinearRegex
    key: str = "trunk"

    def test(self, outcome: CallOutcome) -> bool:
        return outcome.trunk is not None and self.regex.match(outcome.trunk) is not None

    def why_not(self, outcome: CallOutcome) -> str:
        return f"trunk {outcome.trunk or 'none'!r} matches none of {list(self.globs)}"

    def covers(self, other: Condition) -> bool:
        return isinstance(other, TrunkGlob) and ("*" in self.globs or set(other.globs) <= set(self.globs))

    def describe(self) -> str:
        return f"trunk matches {list(self.globs)}"


@dataclass(frozen=True, slots=True)
class Header(Condition):
    name: str  # lower-case, no sip_rh_ prefix
    value_source: str | None
    value_regex: LinearRegex | None
    key: str = "header"

    def test(self, outcome: CallOutcome) -> bool:
        if not outcome.headers:
            return False
        value = _header_map(outcome).get(self.name)
        if value is None:
            return False
        return self.value_regex is None or self.value_regex.search(value) is not None

    def why_not(self, outcome: CallOutcome) -> str:
        value = _header_map(outcome).get(self.name)
        if value is None:
            return f"no {self.name} header"
        return f"header {self.name} {value!r} does not match /{self.value_source}/"

    def covers(self, other: Condition) -> bool:
        return (isinstance(other, Header) and other.name == self.name
                and (self.value_source is None or self.value_source == other.value_source))

    def describe(self) -> str:
        return f"header {self.name}" + (f" matches /{self.value_source}/" if self.value_source else " present")


@dataclass(frozen=True, slots=True)
class Reason(Condition):
    """Conditions on the Reason header: present, protocol, cause, text regex, ATIS AVP."""

    present: bool | None
    protocol: str | None
    causes: frozenset[int] | None
    text_source: str | None
    text_regex: LinearRegex | None
    analytics_avp: bool | None
    key: str = "reason"

    def _value_ok(self, value: ReasonValue) -> bool:
        if self.protocol is not None and value.protocol != self.protocol:
            return False
        if self.causes is not None and value.cause not in self.causes:
            return False
        return self.text_regex is None or (value.text is not None and self.text_regex.search(value.text) is not None)

    def test(self, outcome: CallOutcome) -> bool:
        # why_not() == "" without building the messages (the hot path of classify)
        reason = outcome.reason
        if not reason:
            return self.present is False and self.analytics_avp is not True and not self._needs_value()
        if self.present is False:
            return False
        values, avp = reason_facts(reason)
        if self.analytics_avp is not None and avp is not self.analytics_avp:
            return False
        return not self._needs_value() or any(self._value_ok(v) for v in values)

    def why_not(self, outcome: CallOutcome) -> str:
        if self.test(outcome):
            return ""
        reason = outcome.reason
        if not reason:
            return "" if self.present is False and self.analytics_avp is not True and not self._needs_value() \
                else "no Reason header"
        if self.present is False:
            return "a Reason header is present"
        values, avp = reason_facts(reason)
        if self.analytics_avp is not None and avp is not self.analytics_avp:
            return "Reason has no v=analytics1 AVP" if self.analytics_avp else "Reason carries v=analytics1"
        if self._needs_value() and not any(self._value_ok(v) for v in values):
            return f"Reason {reason!r} does not match {self.describe()}"
        return ""

    def _needs_value(self) -> bool:
        return self.protocol is not None or self.causes is not None or self.text_regex is not None

    def covers(self, other: Condition) -> bool:
        if not isinstance(other, Reason):
            return False
        return (
            (self.present is None or self.present == other.present or (self.present and other._needs_value()))
            and (self.protocol is None or self.protocol == other.protocol)
            and (self.causes is None or (other.causes is not None and other.causes <= self.causes))
            and (self.text_source is None or self.text_source == other.text_source)
            and (self.analytics_avp is None or self.analytics_avp == other.analytics_avp)
        )

    def describe(self) -> str:
        parts = []
        if self.present is not None:
            parts.append(f"present={str(self.present).lower()}")
        if self.protocol:
            parts.append(f"protocol={self.protocol}")
        if self.causes is not None:
            parts.append("cause in [" + ", ".join(str(c) for c in sorted(self.causes)) + "]")
        if self.text_source:
            parts.append(f"text=/{self.text_source}/")
        if self.analytics_avp is not None:
            parts.append(f"analytics_avp={str(self.analytics_avp).lower()}")
        return "reason(" + ", ".join(parts) + ")"


@dataclass(frozen=True, slots=True)
class RedressCond(Condition):
    present: bool
    conformant: bool | None
    source: str | None
    key: str = "redress"

    def test(self, outcome: CallOutcome) -> bool:
        # why_not() == "" without building the messages (the hot path of classify)
        redress = outcome.redress
        if redress is None:
            return not self.present
        if not self.present:
            return False
        if self.conformant is not None and redress.conformant is not self.conformant:
            return False
        return self.source is None or redress.source == self.source

    def why_not(self, outcome: CallOutcome) -> str:
        if self.test(outcome):
            return ""
        redress = outcome.redress
        if redress is None:
            return "" if not self.present else "no redress information"
        if not self.present:
            return "redress information is present"
        if self.conformant is not None and redress.conformant is not self.conformant:
            return f"redress is {'not ' if self.conformant else ''}conformant"
        if self.source is not None and redress.source != self.source:
            return f"redress comes from {redress.source}, not {self.source}"
        return ""

    def covers(self, other: Condition) -> bool:
        return (isinstance(other, RedressCond) and other.present == self.present
                and (self.conformant is None or self.conformant == other.conformant)
                and (self.source is None or self.source == other.source))

    def describe(self) -> str:
        if not self.present:
            return "no redress"
        extra = [f"conformant={str(self.conformant).lower()}"] if self.conformant is not None else []
        extra += [f"source={self.source}"] if self.source else []
        return "redress present" + (f" ({', '.join(extra)})" if extra else "")


# ----------------------------------------------------------------------------------- parsing

def compile_regex(source: Any, path: tuple[str | int, ...] = ()) -> LinearRegex:
    if not isinstance(source, str) or not source:
        raise ConditionError("expected a regular expression as a non-empty string", path)
    try:
        return LinearRegex(source)
    except ValueError as exc:
        raise ConditionError(str(exc), path) from None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def parse_sip_codes(value: Any) -> frozenset[int | None]:
    codes: set[int | None] = set()
    for index, item in enumerate(_as_list(value)):
        path: tuple[str | int, ...] = (index,) if isinstance(value, list) else ()
        if isinstance(item, bool):
            raise ConditionError("expected a SIP code, not true/false", path)
        if isinstance(item, int) and 100 <= item <= 699:
            codes.add(item)
        elif isinstance(item, str) and re.fullmatch(r"[1-6][xX]{2}", item.strip()):
            base = int(item.strip()[0]) * 100
            codes.update(range(base, base + 100))
        elif isinstance(item, str) and item.strip().lower() == "none":
            codes.add(None)
        else:
            raise ConditionError(
                f"{item!r} is not a SIP code: expected 100-699, a class like 6xx, 'none' "
                "(no final response known), or a list of them", path)
    if not codes:
        raise ConditionError("expected at least one SIP code")
    return frozenset(codes)


def parse_q850(value: Any) -> frozenset[int | None]:
    causes: set[int | None] = set()
    for index, item in enumerate(_as_list(value)):
        path: tuple[str | int, ...] = (index,) if isinstance(value, list) else ()
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 127:
            causes.add(item)
        elif isinstance(item, str) and item.strip().lower() == "none":
            causes.add(None)
        else:
            raise ConditionError(f"{item!r} is not a Q.850 cause: expected 0-127, 'none', or a list", path)
    if not causes:
        raise ConditionError("expected at least one Q.850 cause")
    return frozenset(causes)


def _strings(value: Any, what: str) -> list[str]:
    items = _as_list(value)
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise ConditionError(f"expected {what} as a string (or a list of strings)",
                                 (index,) if isinstance(value, list) else ())
    if not items:
        raise ConditionError(f"expected at least one {what}")
    return items


def _bool(value: Any, path: tuple[str | int, ...] = ()) -> bool:
    if not isinstance(value, bool):
        raise ConditionError("expected true or false", path)
    return value


def _mapping(value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConditionError(f"expected a mapping with keys {sorted(allowed)}")
    for key in value:
        if key not in allowed:
            raise ConditionError(f"unknown key {key!r}; expected one of {sorted(allowed)}", (key,))
    return value


def _parse_reason(value: Any) -> Reason:
    if isinstance(value, bool):
        return Reason(value, None, None, None, None, None)
    spec = _mapping(value, {"present", "protocol", "cause", "text", "analytics_avp"})
    present = _bool(spec["present"], ("present",)) if "present" in spec else None
    protocol = None
    if "protocol" in spec:
        if not isinstance(spec["protocol"], str) or not spec["protocol"]:
            raise ConditionError("expected a protocol name such as SIP or Q.850", ("protocol",))
        protocol = spec["protocol"].upper()
    causes = None
    if "cause" in spec:
        raw = spec["cause"]
        items = _as_list(raw)
        if not items or any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in items):
            raise ConditionError("expected a cause number or a list of them", ("cause",))
        causes = frozenset(items)
    text_source = spec.get("text")
    text_regex = compile_regex(text_source, ("text",)) if "text" in spec else None
    avp = _bool(spec["analytics_avp"], ("analytics_avp",)) if "analytics_avp" in spec else None
    return Reason(present, protocol, causes, text_source, text_regex, avp)


def _parse_header(value: Any, index: tuple[int, ...]) -> Header:
    if isinstance(value, str):
        value = {"name": value}
    try:
        spec = _mapping(value, {"name", "value"})
    except ConditionError as exc:
        raise ConditionError(str(exc), index + exc.path) from None
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConditionError("expected the header name, e.g. X-Twilio-Error", (*index, "name"))
    key = name.strip().lower()
    key = key[7:] if key.startswith("sip_rh_") else key
    value_source = spec.get("value")
    regex = compile_regex(value_source, (*index, "value")) if "value" in spec else None
    return Header(key, value_source, regex)


def _parse_redress(value: Any) -> RedressCond:
    if isinstance(value, bool):
        return RedressCond(value, None, None)
    spec = _mapping(value, {"present", "conformant", "source"})
    present = _bool(spec.get("present", True), ("present",))
    conformant = _bool(spec["conformant"], ("conformant",)) if "conformant" in spec else None
    source = spec.get("source")
    if source is not None and source not in ("reason", "call-info"):
        raise ConditionError("expected 'reason' or 'call-info'", ("source",))
    return RedressCond(present, conformant, source)


def _trunk(value: Any) -> TrunkGlob:
    globs = tuple(_strings(value, "trunk glob"))
    regex = compile_globs(globs)
    return TrunkGlob(globs, regex)


def _answered(outcome: CallOutcome) -> bool:
    return outcome.answered


PARSERS: dict[str, Callable[[Any], list[Condition]]] = {
    "sip_code": lambda v: [SipCode(parse_sip_codes(v))],
    "sip_phrase": lambda v: [Pattern("sip_phrase", "sip_phrase", v, compile_regex(v))],
    "reason": lambda v: [_parse_reason(v)],
    "q850_cause": lambda v: [OneOf("q850_cause", "q850_cause", parse_q850(v))],
    "pbx_cause": lambda v: [OneOf("pbx_cause", "pbx_cause", frozenset(s.lower() for s in _strings(v, "cause name")),
                                  fold_case=True)],
    "pbx": lambda v: [OneOf("pbx", "pbx", frozenset(s.lower() for s in _strings(v, "PBX kind")), fold_case=True)],
    "trunk": lambda v: [_trunk(v)],
    "header": lambda v: [_parse_header(item, (i,) if isinstance(v, list) else ())
                         for i, item in enumerate(_as_list(v))],
    "redress": lambda v: [_parse_redress(v)],
    "answered": lambda v: [Flag("answered", _bool(v), _answered, "answered")],
}

MATCH_KEYS = tuple(PARSERS)


def parse_condition(key: str, value: Any) -> list[Condition]:
    """Compile one ``match:`` entry. Raises ConditionError (with a path relative to the key)."""
    parser = PARSERS.get(key)
    if parser is None:
        raise ConditionError(f"unknown match key {key!r}; expected one of {', '.join(MATCH_KEYS)}")
    return parser(value)
