"""Thresholds: what the config says about "too many blocks", and how a window is judged.

A threshold counts the outcomes of some categories (optionally narrowed to some confidences or
SIP codes) per scope key (any outcome fields, e.g. ``caller_number`` or ``trunk``) over a
sliding window, and fires on a count (``count: 3``) or a rate (``rate: 0.3`` of the attempts,
with ``min_attempts``), after the condition held for ``for``. It resolves with hysteresis: only
when the value falls below ``resolve`` (default: half the firing bound), so it does not flap.

For rates the resolve check divides by ``max(attempts, min_attempts)``: an emptying window
(no calls any more) therefore resolves, and a quiet key with one blocked call out of two does not
stay "50 % blocked" forever.

When a firing alert may resolve is the alert lifecycle's business (``alerting/lifecycle.py``): the
value must stay below the resolve bound for ``keep_firing_for`` (Prometheus' name; default one
bucket, ``window / 12``) of time in which the PBX links it rests on were up, and a rate alert also
needs ``min_attempts`` calls since it fired (or a window with no matching call left).

``DEFAULT_THRESHOLDS`` are the shipped defaults; each carries its reason in ``description``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blockradar.durations import format_duration, parse_duration

Severity = Literal["critical", "warning", "info"]
Confidence = Literal["high", "medium", "low"]

# Scope fields: plain string fields of CallOutcome that identify a thing worth alerting about.
SCOPE_FIELDS = frozenset(
    {"pbx", "connector", "caller_number", "callee_number", "trunk", "caller_name", "sip_code", "pbx_cause"}
)
DEFAULT_BUCKETS_PER_WINDOW = 12


class ThresholdConfig(BaseModel):
    """One ``thresholds:`` entry of the config file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str = ""
    scope: list[str] = Field(min_length=1)
    categories: list[str] = Field(min_length=1)
    confidence: list[Confidence] | None = None  # only outcomes classified with these confidences
    sip_codes: list[int] | None = None  # only outcomes with these SIP codes
    window: float
    bucket: float | None = None  # bucket size; default window / 12
    count: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, gt=0, le=1)
    min_attempts: int = Field(default=1, ge=1)
    for_: float = Field(default=0.0, alias="for")
    resolve: float | None = Field(default=None, ge=0)  # resolve bound (count or rate); default half
    keep_firing_for: float | None = None  # how long the value must stay below it; default one bucket
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str | None = None  # one line for humans; default built from the fields

    @field_validator("window", "for_", "bucket", "keep_firing_for", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in SCOPE_FIELDS]
        if unknown:
            raise ValueError(f"unknown scope field(s) {unknown}; use some of {sorted(SCOPE_FIELDS)}")
        if len(set(value)) != len(value):
            raise ValueError("scope fields repeat")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdConfig:
        if (self.count is None) == (self.rate is None):
            raise ValueError("give exactly one of count or rate")
        if self.window <= 0:
            raise ValueError("window must be > 0")
        if self.bucket is not None and not 0 < self.bucket <= self.window:
            raise ValueError("bucket must be > 0 and <= window")
        if self.resolve is not None and self.resolve >= self.firing_bound:
            raise ValueError("resolve must be below the firing bound (hysteresis)")
        if self.keep_firing_for is not None and not 0 <= self.keep_firing_for <= self.window:
            raise ValueError("keep_firing_for must be between 0 and the window")
        return self

    @property
    def firing_bound(self) -> float:
        return float(self.count if self.count is not None else self.rate)  # type: ignore[arg-type]

    @property
    def resolve_bound(self) -> float:
        return self.resolve if self.resolve is not None else self.firing_bound / 2

    @property
    def bucket_s(self) -> float:
        return self.bucket if self.bucket is not None else self.window / DEFAULT_BUCKETS_PER_WINDOW

    @property
    def keep_firing_s(self) -> float:
        return self.keep_firing_for if self.keep_firing_for is not None else self.bucket_s

    def describe(self) -> str:
        """A one-line human description: ``>= 3 analytics_block per caller_number in 1h``."""
        if self.summary:
            return self.summary
        what = "+".join(self.categories)
        if self.confidence:
            what += f" ({'/'.join(self.confidence)} confidence)"
        if self.sip_codes:
            what += f" (SIP {'/'.join(map(str, self.sip_codes))})"
        scope = "+".join(self.scope)
        window = format_duration(self.window)
        if self.count is not None:
            return f">= {self.count} {what} per {scope} in {window}"
        return f">= {self.rate:.0%} {what} per {scope} in {window} (min {self.min_attempts} attempts)"


FIRE = 1
HOLD = 0
CLEAR = -1


class Threshold:
    """A compiled threshold: where its numbers live in a WindowSet, and how they are judged.

    ``offsets`` index into ``KeyWindow.totals`` (the window's base already added); ``attempts_at``
    is the attempts column of its window, ``window_buckets`` its length in buckets and ``bucket_s``
    the bucket size (to sum the evidence of the same buckets). ``active`` maps scope key -> the live
    alert (owned by the alert lifecycle) so the hot path needs one dict lookup, no tuple.
    """

    __slots__ = (
        "active",
        "attempts_at",
        "bound",
        "bucket_s",
        "categories",
        "codes",
        "confidences",
        "config",
        "description",
        "for_s",
        "index",
        "is_rate",
        "keep_firing_s",
        "min_attempts",
        "name",
        "offsets",
        "resolve_bound",
        "scope",
        "severity",
        "signal_names",
        "window_buckets",
        "window_s",
    )

    def __init__(self, index: int, config: ThresholdConfig, attempts_at: int, offsets: tuple[int, ...],
                 signal_names: tuple[str, ...], window_buckets: int = 1) -> None:
        self.index = index
        self.config = config
        self.name = config.name
        self.scope = tuple(config.scope)
        self.categories = frozenset(config.categories)
        self.confidences = frozenset(config.confidence) if config.confidence else None  # a filter, or None
        self.codes = frozenset(config.sip_codes) if config.sip_codes else None
        self.severity = config.severity
        self.window_s = config.window
        self.for_s = config.for_
        self.is_rate = config.rate is not None
        self.bound = config.firing_bound
        self.resolve_bound = config.resolve_bound
        self.min_attempts = config.min_attempts
        self.attempts_at = attempts_at
        self.offsets = offsets
        self.signal_names = signal_names  # category name per offset, for the alert's breakdown
        self.window_buckets = window_buckets
        self.description = config.describe()
        self.bucket_s = config.bucket_s
        self.keep_firing_s = config.keep_firing_s
        self.active: dict[Any, Any] = {}

    def values(self, totals: list[int]) -> tuple[int, int]:
        """(matching, attempts) in this threshold's window."""
        matching = 0
        for off in self.offsets:
            matching += totals[off]
        return matching, totals[self.attempts_at]

    def judge(self, matching: int, attempts: int) -> int:
        """FIRE when the firing condition holds, CLEAR when below the resolve bound, else HOLD."""
        if self.is_rate:
            if attempts >= self.min_attempts and matching >= self.bound * attempts:
                return FIRE
            denominator = attempts if attempts > self.min_attempts else self.min_attempts
            return CLEAR if matching < self.resolve_bound * denominator else HOLD
        if matching >= self.bound and attempts >= self.min_attempts:
            return FIRE
        return CLEAR if matching < self.resolve_bound else HOLD

    def breakdown(self, totals: list[int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, off in zip(self.signal_names, self.offsets, strict=True):
            out[name] = out.get(name, 0) + totals[off]
        return out


def _default(**fields: Any) -> ThresholdConfig:
    return ThresholdConfig.model_validate(fields)


DEFAULT_THRESHOLDS: tuple[ThresholdConfig, ...] = (
    _default(
        name="number-strong-block",
        description=(
            "Any conformant 603+ (603 Network Blocked with the ATIS v=analytics1 Reason) or 608 on a "
            "calling number: a carrier's analytics engine blocked it, which is rarely noise ('treat any "
            "608 as a strong signal'). Matched as the analytics_block category with HIGH confidence: the "
            "default rule pack gives high confidence only to the conformant 603+ and to 608, medium to a "
            "'Network Blocked' without the AVP. Warning, immediately; the 1h window keeps it up for an "
            "hour after the last such block."
        ),
        scope=["caller_number"],
        categories=["analytics_block"],
        confidence=["high"],
        window="1h",
        count=1,
        severity="warning",
    ),
    _default(
        name="number-analytics-blocks",
        description=(
            "Repeated analytics blocks of one calling number (3 in an hour, any confidence): the number "
            "is being blocked, not just unlucky once; act now (check reputation, rest the number, file "
            "redress)."
        ),
        scope=["caller_number"],
        categories=["analytics_block"],
        window="1h",
        count=3,
        severity="critical",
    ),
    _default(
        name="number-block-rate",
        description=(
            "Share of a number's attempts blocked by analytics, unwanted-marking or its own provider, "
            "over at least 20 attempts an hour: 10 % means the number's reputation is gone on at least "
            "one network. The minimum volume keeps one unlucky call from paging."
        ),
        scope=["caller_number"],
        categories=["analytics_block", "unwanted", "provider_block"],
        window="1h",
        rate=0.1,
        min_attempts=20,
        severity="critical",
    ),
    _default(
        name="trunk-block-rate",
        description=(
            "Analytics blocks as a share of a trunk's attempts, at least 50 attempts in 15 minutes: 2 % "
            "across a carrier is a carrier-wide event (a new analytics policy, a campaign flagged as a "
            "whole, a signing/attestation problem), not one bad number."
        ),
        scope=["trunk"],
        categories=["analytics_block", "identity_failure"],
        window="15m",
        rate=0.02,
        min_attempts=50,
        severity="critical",
    ),
    _default(
        name="number-unwanted-rate",
        description=(
            "607 Unwanted (called users marking the call) as a share of a number's attempts, at least 20 "
            "an hour: a leading indicator; analytics engines learn from this feedback, so rising 607s come "
            "before 603+/608 blocks."
        ),
        scope=["caller_number"],
        categories=["unwanted"],
        window="1h",
        rate=0.05,
        min_attempts=20,
        severity="warning",
    ),
)
