"""What one shared outcome looks like on Redis: a call outcome with its classification, as compact JSON.

Each daemon classifies its own PBX's calls with its own rule pack (a FreePBX box and a VICIdial box may
need different rules), so an entry carries the verdict (category, confidence, rule, analytics block)
and the daemons reading it count it as it is, without classifying it again.

Anything read from Redis is network input: another member, an older version or a stranger with the
password may have written it. ``decode`` checks every field's type, bounds the text like a connector
does (``outcome.bounded``) and raises ``ValueError`` for anything else; the reader counts and skips it.
"""

from __future__ import annotations

import json
from typing import Any

from blockradar.classification import Classification, RuleRef
from blockradar.outcome import CallOutcome, bounded
from blockradar.redress import Redress

MAX_VERDICTS = 1024  # verdicts kept, each at most ~200 characters: bounded whatever the stream holds
MAX_ENTRY = 64 * 1024  # bytes: an outcome holds at most ~14 KB of text (outcome.MAX_TEXT); more is not ours

_TEXT = ("pbx", "connector", "call_id", "caller_number", "caller_name", "callee_number", "trunk", "sip_phrase",
         "reason", "pbx_cause", "call_info", "caller_number_raw", "callee_number_raw", "sip_call_id")
_TIMES = ("started_at", "ended_at", "talk_s")
_INTS = ("sip_code", "q850_cause")
_REDRESS_TEXT = ("url", "tel", "email", "id", "location")
_VERDICTS: dict[tuple[Any, ...], Classification] = {}
_KINDS: dict[str, type] = {**dict.fromkeys(_TEXT, str), **dict.fromkeys(_TIMES, float), **dict.fromkeys(_INTS, int)}


def call_key(outcome: CallOutcome) -> str:
    """What makes two reports the same call fleet-wide: the connector (one name per PBX, the same on
    every daemon watching that PBX) and the PBX's call id."""
    return f"{outcome.connector}/{outcome.call_id}"


def encode(outcome: CallOutcome, cls: Classification) -> bytes:
    """One entry: the outcome's known fields (times as epoch floats) and ``v``, the verdict."""
    entry: dict[str, Any] = {}
    for name in _TEXT:
        value = getattr(outcome, name)
        if value is not None:
            entry[name] = value
    for name in _TIMES + _INTS:
        value = getattr(outcome, name)
        if value is not None:
            entry[name] = value
    if outcome.answered:
        entry["answered"] = True
    if outcome.headers:
        entry["headers"] = dict(outcome.headers)
    if outcome.redress is not None:
        entry["redress"] = outcome.redress.to_dict()
    entry["v"] = [cls.category, cls.confidence, cls.rule.name, cls.analytics_block]
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes, source: str = "fleet") -> tuple[CallOutcome, Classification]:
    """An entry back to (outcome, classification); ``ValueError`` when it is not one we wrote."""
    if len(data) > MAX_ENTRY:
        raise ValueError(f"entry of {len(data)} bytes")
    try:
        entry = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # 64 KB of "[" nests too deep
        raise ValueError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    fields: dict[str, Any] = {}
    for name, value in entry.items():  # one pass over what is there; unknown names are not ours to read
        kind = _KINDS.get(name)
        if kind is None or value is None:
            continue
        if kind is str:
            if type(value) is not str:
                raise ValueError(f"{name}: not text")
        elif kind is float:
            if type(value) is int:
                value = float(value)
            elif type(value) is not float:
                raise ValueError(f"{name}: not a number")
        elif type(value) is not int:
            raise ValueError(f"{name}: not an integer")
        fields[name] = value
    for name in ("pbx", "connector", "call_id"):
        if not fields.get(name):
            raise ValueError(f"{name}: missing")
    fields["answered"] = entry.get("answered") is True
    headers = entry.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise ValueError("headers: not an object")
        fields["headers"] = {_text(k, "headers"): _text(v, "headers") for k, v in list(headers.items())[:64]}
    redress = entry.get("redress")
    if redress is not None:
        fields["redress"] = _redress(redress)
    verdict = entry.get("v")
    if not (isinstance(verdict, list) and len(verdict) == 4):
        raise ValueError("v: not a verdict")
    category, confidence, rule = (_text(v, "v") for v in verdict[:3])
    if not category or confidence not in ("high", "medium", "low"):
        raise ValueError("v: not a verdict")
    key = (category[:80], confidence, rule[:120], verdict[3] is True, source)
    cls = _VERDICTS.get(key)
    if cls is None:
        cls = Classification(key[0], confidence, RuleRef(key[2], source, 0, ""), key[3])
        if len(_VERDICTS) < MAX_VERDICTS:  # a fleet has a few dozen rules: the same few verdicts, made once
            _VERDICTS[key] = cls
    return bounded(CallOutcome(**fields)), cls


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: not text")
    return value


def _redress(value: Any) -> Redress:
    if not isinstance(value, dict):
        raise ValueError("redress: not an object")
    parts = {name: _text(value[name], "redress")[:512] for name in _REDRESS_TEXT if value.get(name) is not None}
    source = value.get("source")
    return Redress(source=_text(source, "redress")[:20] if source is not None else "reason",
                   conformant=value.get("conformant") is True, **parts)
