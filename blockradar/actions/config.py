"""The ``actions:`` section: what to do when an alert fires (``apply``) and after it resolved
(``restore``), and the guardrails around it. A new action is a dry run until ``dry_run: false``."""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blockradar.alerting.silences import Matcher
from blockradar.durations import parse_duration

KINDS = ("exec", "http", "vicidial", "asterisk-db")
# what a template may name: ``{caller_number}`` in a command argument, a URL or a body
TEMPLATE_FIELDS = ("caller_number", "caller_digits", "trunk", "threshold", "severity", "fingerprint", "action",
                   "phase")


def check_template(text: str) -> None:
    """Plain ``{name}`` fields of TEMPLATE_FIELDS only: no attribute or index access, no conversion (a
    template is config, the values come from the network)."""
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(f"template {text!r}: use {{name}} with name one of {', '.join(TEMPLATE_FIELDS)}")


def render(text: str, values: dict[str, str]) -> str:
    return text.format_map({k: values.get(k, "") for k in TEMPLATE_FIELDS})


class ActionConfig(BaseModel):
    """One ``actions:`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    when: list[str] = Field(min_length=1)  # thresholds whose alerts trigger it
    match: list[str] = Field(default_factory=list)  # label matchers the alert must also satisfy
    kind: Literal["exec", "http", "vicidial", "asterisk-db"]
    # exec: argv lists (no shell), every argument a template ({caller_number}, {trunk}, {threshold} ...)
    command: list[str] | None = None
    restore_command: list[str] | None = None
    timeout: float = Field(default=30.0, gt=0)
    restore_after: float | None = 3600.0  # after the alert resolved; None: never restore on its own
    dry_run: bool = True  # a new action only says what it would do
    # guardrails
    pool: list[str] = Field(default_factory=list)  # the numbers rotated together (E.164), or empty: no pool cap
    max_pool_share: float = Field(default=1.0, gt=0, le=1)  # never rest more than this share of the pool at once
    cooldown: float = 3600.0  # after a number was restored, no new apply for it before this
    max_per_hour: int = Field(default=20, ge=1)  # applies per rolling hour, all numbers together
    min_count: int = Field(default=1, ge=1)  # minimum matching calls in the alert (evidence)
    settings: dict[str, Any] = Field(default_factory=dict)  # kind-specific (http, vicidial, asterisk-db)

    @field_validator("timeout", "cooldown", mode="before")
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

    @model_validator(mode="after")
    def _kind_fields(self) -> ActionConfig:
        if self.kind == "exec" and not self.command:
            raise ValueError("kind exec needs command: a list, the program first (no shell)")
        for argument in [*(self.command or []), *(self.restore_command or [])]:
            check_template(argument)
        if not self.dry_run:
            # this version decides and reports (daemon log, replay backtest); it does not run anything yet
            raise ValueError("dry_run: false is not supported yet: actions are decided and reported (the "
                             "daemon's log, blockradar replay --json), not executed")
        if self.pool and len(set(self.pool)) != len(self.pool):
            raise ValueError("pool lists a number twice")
        return self

    def matchers(self) -> list[Matcher]:
        return [Matcher.parse(text) for text in self.match]

    def pool_cap(self) -> int | None:
        """How many numbers of the pool may rest at once (at least one), or None without a pool."""
        if not self.pool:
            return None
        return max(1, int(len(self.pool) * self.max_pool_share + 1e-9))
