"""The call outcome: one immutable, PBX-independent record per finished outbound call attempt.

Connectors' normalizers build these; everything downstream (classifier, windows, alerts, store,
report) reads only this record. Missing information is ``None``, never a guess.
Times are UNIX epoch seconds (UTC, float), which keeps the hot path cheap; the ``iso`` helper
formats them for output.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from blockradar.redress import Redress, redress_from

PbxKind = Literal["asterisk", "freeswitch", "replay"]

_EMPTY: Mapping[str, str] = MappingProxyType({})

# Every text a PBX sends is bounded before it is kept (the audit: 2,000 open legs with 250 KB channel names
# took 493 MB; 300 hangups with 1 MB Unique-IDs, 782 MB in the dedup set). With these bounds an outcome
# holds at most ~14 KB of text (12 fields + 16 headers), whatever the PBX sends.
MAX_TEXT = 512  # numbers, names, phrases, reasons, trunk names
MAX_ID = 128  # call ids: longer ones keep a prefix and a digest of the whole, so they stay distinct
MAX_HEADERS = 16
# A value outside these is not known, so it is None (tests/fuzz: "TechCause: 700", a 20-digit Q.850 cause, a 20-digit
# Event-Date-Timestamp and "Timestamp: inf" came out as they were; SQLite and the store's to_dict cannot write some).
SIP_CODES = range(100, 700)  # a SIP status code (RFC 3261: 3 digits, classes 1xx to 6xx)
Q850_CAUSES = range(128)  # a Q.850 cause value (7 bits)
MAX_TIME = 253_402_300_799.0  # the last second of year 9999: the latest time (and duration) iso() can write
_TEXT_FIELDS = ("caller_number", "caller_name", "callee_number", "trunk", "sip_phrase", "reason", "pbx_cause",
                "call_info", "caller_number_raw", "callee_number_raw", "connector")


def bounded_id(text: str) -> str:
    """``text`` if short, else a prefix plus a 64-bit BLAKE2b digest of the whole (still unique)."""
    if len(text) <= MAX_ID:
        return text
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()
    return f"{text[:MAX_ID - 17]}#{digest}"


def bounded(outcome: CallOutcome) -> CallOutcome:
    """The outcome with every text field within its bound and every number in its range, else None (the same
    object when it already is)."""
    changes: dict[str, Any] = {}
    if outcome.sip_code is not None and outcome.sip_code not in SIP_CODES:
        changes["sip_code"] = None
    if outcome.q850_cause is not None and outcome.q850_cause not in Q850_CAUSES:
        changes["q850_cause"] = None
    for name in ("started_at", "ended_at", "talk_s"):
        value = getattr(outcome, name)
        if value is not None and not 0 <= value <= MAX_TIME:  # nan and inf included
            changes[name] = None
    if len(outcome.call_id) > MAX_ID:
        changes["call_id"] = bounded_id(outcome.call_id)
    if outcome.sip_call_id is not None and len(outcome.sip_call_id) > MAX_ID:
        changes["sip_call_id"] = bounded_id(outcome.sip_call_id)
    for name in _TEXT_FIELDS:
        value = getattr(outcome, name)
        if value is not None and len(value) > MAX_TEXT:
            changes[name] = value[:MAX_TEXT]
    headers = outcome.headers
    if headers and (len(headers) > MAX_HEADERS
                    or any(len(k) > MAX_TEXT or len(v) > MAX_TEXT for k, v in headers.items())):
        changes["headers"] = {k[:MAX_TEXT]: v[:MAX_TEXT] for k, v in list(headers.items())[:MAX_HEADERS]}
    return outcome.replace(**changes) if changes else outcome


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """One finished outbound call attempt (one trunk leg), as the carrier answered it."""

    pbx: str
    connector: str
    call_id: str
    started_at: float | None = None
    ended_at: float | None = None
    answered: bool = False
    talk_s: float | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    callee_number: str | None = None
    trunk: str | None = None
    sip_code: int | None = None
    sip_phrase: str | None = None
    reason: str | None = None
    q850_cause: int | None = None
    pbx_cause: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    call_info: str | None = None
    redress: Redress | None = None
    # the number as the PBX wrote it, when that differs from the E.164 form above (display only)
    caller_number_raw: str | None = None
    callee_number_raw: str | None = None
    # the trunk leg's SIP Call-ID when the PBX gives it (the Asterisk glue, FreeSWITCH), for the HEP join
    sip_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.headers and not isinstance(self.headers, MappingProxyType):
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        if self.redress is None and (self.reason or self.call_info):
            object.__setattr__(self, "redress", redress_from(self.reason, self.call_info))

    def replace(self, **changes: Any) -> CallOutcome:
        """A copy with some fields changed (redress is recomputed when reason/call_info change)."""
        if "reason" in changes or "call_info" in changes:
            changes.setdefault("redress", None)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601, headers as a plain dict, redress as a dict or None)."""
        return {
            "pbx": self.pbx,
            "connector": self.connector,
            "call_id": self.call_id,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "answered": self.answered,
            "talk_s": self.talk_s,
            "caller_number": self.caller_number,
            "caller_name": self.caller_name,
            "callee_number": self.callee_number,
            "trunk": self.trunk,
            "sip_code": self.sip_code,
            "sip_phrase": self.sip_phrase,
            "reason": self.reason,
            "q850_cause": self.q850_cause,
            "pbx_cause": self.pbx_cause,
            "headers": dict(self.headers),
            "call_info": self.call_info,
            "redress": self.redress.to_dict() if self.redress else None,
            "caller_number_raw": self.caller_number_raw,
            "callee_number_raw": self.callee_number_raw,
            "sip_call_id": self.sip_call_id,
        }


def from_iso(text: Any) -> float | None:
    """ISO 8601 text (as ``iso`` writes it) back to epoch seconds; None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
