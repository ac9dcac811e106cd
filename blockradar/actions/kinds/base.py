"""What every kind of action shares: the settings every ``actions:`` entry has (``ActionBase``), one run
of an action (``ActionRun``), how a run fails (``ActionFailed``: retry or not), and the contract a kind
implements (``Executor``). Each kind lives in its own module with its settings and its executor, the way
each notifier does."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blockradar.alerting.silences import Matcher
from blockradar.durations import parse_duration

# what a template may name: ``{caller_number}`` in a command argument, a URL, a body, an AstDB key
TEMPLATE_FIELDS = ("caller_number", "caller_digits", "national_number", "trunk", "threshold", "severity",
                   "fingerprint", "action", "phase")
RESULT_CHARS = 300  # what is kept of a peer's answer or a command's output: bounded, one line


def check_template(text: str) -> str:
    """Plain ``{name}`` fields of TEMPLATE_FIELDS only: no attribute or index access, no conversion (a
    template is config, the values come from the network)."""
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(f"template {text!r}: use {{name}} with name one of {', '.join(TEMPLATE_FIELDS)}")
    return text


def render(text: str, values: dict[str, str]) -> str:
    return text.format_map({k: values.get(k, "") for k in TEMPLATE_FIELDS})


def one_line(text: str, limit: int = RESULT_CHARS) -> str:
    """A peer's or a command's text, bounded and on one line (it goes into logs, rows and messages)."""
    flat = " ".join(text.replace("\x00", " ").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ActionBase(BaseModel):
    """What every ``actions:`` entry has: when it runs, the guardrails, and whether it only says what it
    would do (``dry_run``, the default for a new action). Each kind adds its own fields and a ``kind``
    literal."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    when: list[str] = Field(min_length=1)  # thresholds whose alerts trigger it
    match: list[str] = Field(default_factory=list)  # label matchers the alert must also satisfy
    kind: str
    timeout: float = Field(default=30.0, gt=0)  # one run, then it is tried again
    restore_after: float | None = 3600.0  # after the alert resolved; None: never restore on its own
    dry_run: bool = True  # a new action only says what it would do
    # guardrails
    pool: list[str] = Field(default_factory=list)  # the numbers rotated together (E.164), or empty: no pool cap
    max_pool_share: float = Field(default=1.0, gt=0, le=1)  # never rest more than this share of the pool at once
    cooldown: float = 3600.0  # after a number was restored, no new apply for it before this
    max_per_hour: int = Field(default=20, ge=1)  # applies per rolling hour, all numbers together
    min_count: int = Field(default=1, ge=1)  # minimum matching calls in the alert (evidence)
    # the durable queue: a run that may succeed later is tried again with a growing pause, until this
    give_up_after: float = Field(default=86_400.0, gt=0)
    backoff_initial: float = Field(default=5.0, gt=0)  # the first pause after a failed run, doubling ...
    backoff_max: float = Field(default=300.0, gt=0)  # ... up to this

    @field_validator("timeout", "cooldown", "give_up_after", "backoff_initial", "backoff_max", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("restore_after", mode="before")
    @classmethod
    def _restore_after(cls, value: Any) -> float | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("never", "")):
            return None
        return parse_duration(value)

    @field_validator("match")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            Matcher.parse(text)  # a bad matcher is a config error with its position
        return value

    @field_validator("pool")
    @classmethod
    def _pool(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("pool lists a number twice")
        return value

    def matchers(self) -> list[Matcher]:
        return [Matcher.parse(text) for text in self.match]

    def pool_cap(self) -> int | None:
        """How many numbers of the pool may rest at once (at least one), or None without a pool."""
        if not self.pool:
            return None
        return max(1, int(len(self.pool) * self.max_pool_share + 1e-9))


@dataclass(slots=True)
class ActionRun:
    """One attempt at one queued apply or restore."""

    key: str  # stable across attempts and restarts: ``<action>.<row id>`` (the peer's idempotency key)
    phase: str  # apply | restore
    context: dict[str, str]  # the template fields
    attempt: int = 1
    on_started: Any = None  # called with (pid, start ticks) when a command starts (exec), for a restart
    extra: dict[str, Any] = field(default_factory=dict)


class ActionFailed(Exception):
    """A run that did not do what it should. ``retry``: it may succeed later (timeouts, 5xx, a PBX or
    dialer that is down); otherwise it is permanent (a refusal, a bad request) and the next one goes."""

    def __init__(self, message: str, *, retry: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after


class Executor(Protocol):
    """A kind's executor: it renders what it does (without secrets) and does it."""

    kind: ClassVar[str]
    config: Any

    def describe(self, phase: str, context: dict[str, str]) -> list[str]:
        """What a run does, as words an operator reads (no secrets): a command's argv, a request line."""
        ...

    def target(self, context: dict[str, str]) -> str:
        """Where it rests a number, for a message: ``in VICIdial CID group NATIONAL``."""
        ...

    async def run(self, run: ActionRun) -> str:
        """Do it; return what the peer said (bounded), or raise ActionFailed."""
        ...

    async def aclose(self) -> None: ...
