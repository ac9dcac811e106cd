"""What the classifier says about an outcome, and the catalogue of blocking categories.

These are plain values shared by the rule engine (which produces them) and by windows, alerts,
store and notifiers (which consume them). The category names in the default pack are a contract:
analytics_block, unwanted, declined, forbidden, identity_failure, provider_block, busy,
no_answer, invalid_number, network_failure, answered, rejected_unknown, other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONFIDENCES = ("high", "medium", "low")
SEVERITIES = ("critical", "warning", "info", "none")


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    description: str
    severity: str  # critical | warning | info | none
    analytics_block: bool  # counts towards "blocked by carrier analytics"
    what_to_do: str  # one line for the operator


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Which rule decided, and where it is written."""

    name: str
    file: str
    line: int
    source: str  # the RFC / ATIS / PBX-source reference the rule rests on

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Classification:
    category: str
    confidence: str  # high | medium | low
    rule: RuleRef
    analytics_block: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "confidence": self.confidence,
            "rule": self.rule.name,
            "rule_file": self.rule.where(),
            "source": self.rule.source,
            "analytics_block": self.analytics_block,
        }
