"""Shared pieces of the fuzz suite: bounded, reproducible hypothesis settings, the recorded fixtures as
seeds, byte mutations of them, and the one definition of a well-formed CallOutcome."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from blockradar.outcome import _TEXT_FIELDS, MAX_HEADERS, MAX_ID, MAX_TEXT, CallOutcome, iso
from blockradar.redress import MAX_HEADER_CHARS, Redress

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def fuzz(max_examples: int) -> settings:
    """A bounded property: a fixed number of examples, the same ones on every run (derandomized), no
    example database written into the checkout, no per-example deadline (a loaded 2-core CI machine would
    flake; each test carries a pytest timeout instead)."""
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
