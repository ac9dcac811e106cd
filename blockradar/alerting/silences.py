"""Silences: time-bounded label matchers that mute alert notifications (Alertmanager's meaning).

A silence holds matchers such as ``caller_number=+15557650003`` (also ``!=``, ``=~`` and ``!~``
with a fully anchored regular expression), a start and an end, a comment and an author. An alert
is silenced while every matcher of an active silence matches its labels. Silences are stored
(see ``store.py``) so the CLI and the daemon share them.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blockradar.conditions import LinearRegex
from blockradar.numbers import NumberPlan

NUMBER_LABELS = frozenset({"caller_number", "callee_number"})


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> LinearRegex:
    """A matcher's regex, anchored and case-sensitive as in Alertmanager, in linear time (RE2)."""
    return LinearRegex(pattern, ignore_case=False)
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str  # = != =~ !~
    value: str

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"unknown matcher operator {self.op!r}")
        if self.op in ("=~", "!~"):
            try:
                _regex(self.value)
            except ValueError as exc:
                raise ValueError(f"bad regular expression in matcher {self.name}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _regex(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def with_numbers(self, plan: NumberPlan) -> Matcher:
        """An equality matcher on a number label, its value in the E.164 form the alerts carry
        (``caller_number=5557650003`` mutes ``+15557650003``); any other matcher unchanged."""
        if self.name not in NUMBER_LABELS or self.op not in ("=", "!="):
            return self
        text = plan.text(self.value)
        return self if text is None or text == self.value else Matcher(self.name, self.op, text)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``caller_number=+15557650003``, ``trunk=~carrier-.*``, ``severity!=info``."""
        match = _MATCHER.match(text)
        if not match:
            raise ValueError(f"not a matcher: {text!r} (use name=value, name!=value, name=~regex, name!~regex)")
        value = match.group(3)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return cls(match.group(1), match.group(2), value)


@dataclass(frozen=True, slots=True)
class Silence:
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str = ""
    author: str = ""
    created_at: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.matchers) and all(m.matches(labels) for m in self.matchers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "comment": self.comment,
            "author": self.author,
            "created_at": self.created_at,
        }
