"""Shared pieces of the fuzz suite: bounded, reproducible hypothesis settings, the recorded fixtures as
seeds, byte mutations of them, the one definition of a well-formed CallOutcome, and damaged YAML files with the
one definition of a well-formed load error."""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from blockradar.outcome import _TEXT_FIELDS, MAX_HEADERS, MAX_ID, MAX_TEXT, CallOutcome, iso
from blockradar.redress import MAX_HEADER_CHARS, Redress
from blockradar.yamlsource import Problem

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def fuzz(max_examples: int) -> settings:
    """A bounded property: a fixed number of examples, the same ones on every run (derandomized), no
    example database written into the checkout, no per-example deadline (a loaded 2-core CI machine would
    flake; each test carries a pytest timeout instead). ``FUZZ_NO_SHRINK=1`` reports the first failing example as
    generated, at once (a debugging aid)."""
    return settings(
        max_examples=max_examples,
        phases=[Phase.explicit, Phase.generate] if os.environ.get("FUZZ_NO_SHRINK") else tuple(Phase),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                               HealthCheck.large_base_example],
    )


# ------------------------------------------------------------------------------------------ seeds

@functools.cache
def ami_recordings() -> tuple[bytes, ...]:
    """Every recorded AMI stream of the fixtures (banner, then CRLF frames), smallest first."""
    paths = sorted(FIXTURES.rglob("*.ami"), key=lambda p: (p.stat().st_size, str(p)))
    return tuple(p.read_bytes() for p in paths)


@functools.cache
def esl_recordings() -> tuple[bytes, ...]:
    """Every recorded ESL stream of the fixtures (plain and json events), smallest first."""
    paths = sorted(FIXTURES.rglob("*.esl"), key=lambda p: (p.stat().st_size, str(p)))
    return tuple(p.read_bytes() for p in paths)


# -------------------------------------------------------------------------------------- mutations

# Bytes that mean something to one of the parsers, or that have broken one before.
WIRE_TOKENS: tuple[bytes, ...] = (
    b"\r\n", b"\r\n\r\n", b"\r", b"\n", b"\n\n", b"\r\r\n", b": ", b":", b" ", b"\t", b"\x00", b"\xff", b"\xc3",
    b"\xe2\x82", b"\xed\xa0\x80", "J\u00f6rg".encode(), "\u202e".encode(), "\u00b2".encode(), "\u0663".encode(),
    "\uff16\uff10\uff18".encode(), b"%", b"%0A", b"%0a", b"%00", b"%zz", b"%E2%82", b"%C3%B6", b"0", b"9",
    b"-1", b"000", b"999999", b"99999999999999999999", b"1" * 5000, b"nan", b"inf", b"-inf", b"1e308", b"1e999",
    b"Asterisk Call Manager/", b"Event: ", b"Response: ", b"Content-Length: ", b"Content-Type: ",
    b"text/event-plain", b"text/event-json", b"Event-Name: ", b"CHANNEL_HANGUP_COMPLETE", b"{", b"}", b"[", b"]",
    b'"', b"\\", b"x" * 600, b"y" * 5000,
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, *, max_ops: int = 8, tokens: Sequence[bytes] = WIRE_TOKENS,
            anchors: Sequence[int] = ()) -> bytes:
    """``data`` after up to ``max_ops`` byte edits: flips, inserted tokens, deletions, duplicated or moved
    spans, a truncation. ``anchors`` are offsets worth aiming at (edits land near one half of the time)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, max_ops))):
        if anchors and draw(st.booleans()):
            pos = min(len(buf), max(0, draw(st.sampled_from(anchors)) + draw(st.integers(-8, 64))))
        else:
            pos = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(("flip", "token", "token", "delete", "duplicate", "move", "truncate", "byte")))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "token":
            buf[pos:pos] = draw(st.sampled_from(tokens))
        elif op == "byte":
            buf[pos:pos] = bytes([draw(st.integers(0, 255))])
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            span = bytes(buf[pos : pos + draw(st.integers(1, 256))])
            buf[pos:pos] = span
        elif op == "move":
            span = bytes(buf[pos : pos + draw(st.integers(1, 256))])
            del buf[pos : pos + len(span)]
            target = draw(st.integers(0, len(buf)))
            buf[target:target] = span
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


@st.composite
def chunked(draw: st.DrawFn, data: bytes, *, max_size: int = 4096) -> list[bytes]:
    """``data`` cut into reads of random sizes (from 1 byte up), as TCP may deliver it."""
    sizes = draw(st.lists(st.integers(1, max_size), min_size=1, max_size=64))
    chunks: list[bytes] = []
    pos = index = 0
    while pos < len(data):
        size = sizes[index % len(sizes)]
        chunks.append(data[pos : pos + size])
        pos += size
        index += 1
    return chunks


# -------------------------------------------------------------------------------- the outcome contract

TIME_MIN, TIME_MAX = 0.0, 253_402_300_799.0  # 1970 .. the last second of 9999: what iso() can write


def _is_time(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and TIME_MIN <= value <= TIME_MAX


def check_outcome(outcome: object, pbx: str) -> None:
    """The contract every CallOutcome a normalizer emits keeps, whatever the PBX sent: the right types,
    every text within its bound, a SIP code that is a SIP status (100-699), a Q.850 cause that is one
    (0-127), times the store and the report can write, and a JSON-ready ``to_dict``."""
    assert isinstance(outcome, CallOutcome), outcome
    assert outcome.pbx == pbx
    assert isinstance(outcome.connector, str) and outcome.connector
    assert isinstance(outcome.call_id, str) and 0 < len(outcome.call_id) <= MAX_ID, outcome.call_id
    for name in _TEXT_FIELDS:
        value = getattr(outcome, name)
        assert value is None or (isinstance(value, str) and len(value) <= MAX_TEXT), (name, value)
    code = outcome.sip_code
    assert code is None or (type(code) is int and 100 <= code <= 699), code
    cause = outcome.q850_cause
    assert cause is None or (type(cause) is int and 0 <= cause <= 127), cause
    assert type(outcome.answered) is bool
    for name in ("started_at", "ended_at"):
        value = getattr(outcome, name)
        assert value is None or _is_time(value), (name, value)
    talk = outcome.talk_s
    assert talk is None or (isinstance(talk, float | int) and math.isfinite(talk) and 0 <= talk <= TIME_MAX), talk
    headers = outcome.headers
    assert isinstance(headers, Mapping) and len(headers) <= MAX_HEADERS
    for key, value in headers.items():
        assert isinstance(key, str) and isinstance(value, str) and len(key) <= MAX_TEXT and len(value) <= MAX_TEXT
    redress = outcome.redress
    assert redress is None or isinstance(redress, Redress)
    if redress is not None:
        for value in (redress.url, redress.tel, redress.email, redress.id, redress.location):
            assert value is None or (isinstance(value, str) and len(value) <= MAX_HEADER_CHARS)
    json.dumps(outcome.to_dict(), ensure_ascii=False)  # what the store writes
    for value in (outcome.started_at, outcome.ended_at):
        iso(value)


# ------------------------------------------------------------------------------- YAML files

# YAML that has broken a loader, or means something special to this one
YAML_TOKENS = (
    "!!int", "!!int 0x", "!!float", "!!float x", "!!timestamp", "!!timestamp x", "!!binary", "!!binary '@@'", "!!set",
    "!!omap", "!!str", "!!null", "!!bool", "!!python/object:os.system", "!!map", "!!seq", "!foo", "2024-13-01",
    "2024-02-30", "2001-12-14t21:59:43.10-05:00", "9" * 400, "9" * 5000, "1e400", ".nan", ".inf", "-.inf", "~",
    "null", "yes", "on", "0x", "0b", "0o", "1:2:3", "1_000", "&a", "*a", "<<: {a: 1}", "? [a, b]", "? {a: 1}", "{",
    "}", "[", "]", "- ", ": ", "\t", '"\\ud800"', '"\\0"', '"\\x85"', "'", '"', "${AMI_SECRET}", "${NOPE}",
    "${X:-1}", "${EMPTY}", "$$", "${", "secret_file: nope", "password_file: /nonexistent/x", "url_file: ''",
    "event_socket_conf: nope.xml", "%YAML 1.1", "%TAG ! x", "---", "...", "|", ">", "#", "\x00", "\ufeff", "\x85",
    "\u2028", "\r", "\x1b", "-1", "0", "1h", "-5s", "30x", "rate: 2", "type: asterisk", "type: freeswitch",
    "type: nope", "name: pbx1", "[" * 100, "- " * 70 + "x", "{a: " * 70,
)
# values that PyYAML or a validator has choked on
YAML_VALUES = ("!!int", "!!int 0x", "!!float x", "!!timestamp x", "!!binary '@@'", "2024-13-01", "2024-02-30",
               "9" * 400, "-" + "9" * 400, "9" * 5000, "1e400", ".nan", "-.inf", "~", "[]", "{}", "&a x", "*a", "'",
               '"\\ud800"', '"\\0"', "${NOPE}", "-1", "0x", "[[[[", "? [a]", "!!set {a}", "!!omap [a]")
FILE_LINE = re.compile(r"^(?P<file>.+?):(?P<line>[1-9][0-9]*):(?P<col>[1-9][0-9]*): ")


def check_problems(problems: Sequence[Problem], file: str | None = None) -> None:
    """Every problem a loader reports is one ``file:line:column: key: message`` line (a key or value holding a
    newline must not start a line of its own), of ``file`` when given."""
    for problem in problems:
        assert isinstance(problem, Problem)
        text = str(problem)
        match = FILE_LINE.match(text)
        assert match and (file is None or match["file"] == file), text
        assert problem.line >= 1 and problem.column >= 1
        assert len(text.splitlines()) == 1 and "Traceback" not in text, text


@st.composite
def damaged_text(draw: st.DrawFn, seed: str) -> str:
    """``seed`` with lines dropped, repeated, moved, re-indented or uncommented, and tokens put anywhere."""
    lines = seed.splitlines()
    for op, index, token in draw(st.lists(st.tuples(
            st.sampled_from(("drop", "repeat", "move", "indent", "dedent", "uncomment", "token", "token", "value",
                             "value", "value", "cut")),
            st.integers(0, 10**6), st.sampled_from(YAML_TOKENS)), min_size=1, max_size=8)):
        if not lines:
            break
        i = index % len(lines)
        line = lines[i]
        if op == "drop":
            del lines[i]
        elif op == "repeat":
            lines.insert(i, line)
        elif op == "move":
            lines.insert(index // 7 % len(lines), lines.pop(i))
        elif op == "indent":
            lines[i] = " " * (index % 5) + line
        elif op == "dedent":
            lines[i] = line[index % 5 :]
        elif op == "uncomment":
            lines[i] = line.replace("# ", "", 1)
        elif op == "token":
            at = index % (len(line) + 1)
            lines[i] = line[:at] + token + line[at:]
        elif op == "value":
            keyed = [j for j, text in enumerate(lines) if ": " in text and not text.lstrip().startswith("#")]
            if keyed:
                j = keyed[index % len(keyed)]
                lines[j] = lines[j].partition(": ")[0] + ": " + YAML_VALUES[index % len(YAML_VALUES)]
        elif op == "cut":
            lines[i] = line[: index % (len(line) + 1)]
    return "\n".join(lines) + draw(st.sampled_from(("\n", "", "\r\n")))


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**400, -(10**400), 2**1024, 10**4000]), st.floats(),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20), st.dates(),
    st.sampled_from(["", "30s", "-1s", "1e400", "2h30m", "0", "asterisk", "freeswitch", "slack", "email", "webhook",
                     "${AMI_SECRET}", "${NOPE}", "127.0.0.1:9464", ":99999", "a:" + "9" * 5000, "US", "XX", "human",
                     "caller_number", "trunk", "analytics_block", "high", "critical", "x" * 2000]),
)
yaml_values = st.recursive(
    yaml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                          st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner,
                                                          max_size=4)),
    max_leaves=12)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a parsed document, the document itself included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def lookup(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def replaced(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: replaced(node[head], rest, value)}
    return [replaced(item, rest, value) if i == head else item for i, item in enumerate(node)]


@st.composite
def restructured(draw: st.DrawFn, seed: str) -> str:
    """``seed`` parsed, with one to three values (or keys' whole subtrees) replaced by random YAML, dumped again."""
    data = yaml.safe_load(seed)
    for _ in range(draw(st.integers(1, 3))):
        every = paths(data)
        leaves = [p for p in every if not isinstance(lookup(data, p), dict | list)]
        path = draw(st.sampled_from(leaves if draw(st.integers(0, 3)) else every))  # mostly one value
        data = replaced(data, path, draw(yaml_values if draw(st.booleans()) else yaml_scalars))
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
