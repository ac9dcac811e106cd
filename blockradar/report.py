"""The numbers behind ``blockradar report``: per calling number and per trunk, from stored outcomes.

For each scope value: attempts, answer rate, analytics blocks, the counts of the signals operators
ask about (603+, 608, 607, plain 603), block rate, the last redress contact and the alerts that
fired on it. Rows are sorted worst first (block rate, then blocks, then attempts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from blockradar.outcome import iso


@dataclass(slots=True)
class ScopeReport:
    scope: str  # "caller_number" | "trunk"
    value: str
    attempts: int = 0
    answered: int = 0
    analytics_blocks: int = 0
    sip_603plus: int = 0
    sip_608: int = 0
    sip_607: int = 0
    sip_603: int = 0
    unwanted: int = 0
    last_at: float | None = None
    last_redress: dict[str, Any] | None = None
    alerts: set[str] = field(default_factory=set)

    @property
    def answer_rate(self) -> float:
        return self.answered / self.attempts if self.attempts else 0.0

    @property
    def block_rate(self) -> float:
        return self.analytics_blocks / self.attempts if self.attempts else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "value": self.value, "attempts": self.attempts,
            "answer_rate": round(self.answer_rate, 4), "analytics_blocks": self.analytics_blocks,
            "603plus": self.sip_603plus, "608": self.sip_608, "607": self.sip_607, "603": self.sip_603,
            "block_rate": round(self.block_rate, 4), "last_seen": iso(self.last_at),
            "last_redress": self.last_redress, "alerts": sorted(self.alerts),
        }


def build_report(rows: Iterable[dict[str, Any]], alert_history: Iterable[dict[str, Any]],
                 analytics_categories: frozenset[str]) -> dict[str, list[ScopeReport]]:
    """Aggregate store rows (``Store.report_rows``) and alert episodes (``Store.alert_history``: those that
    fired, or still fired, in the period, resolved ones too) into per-scope reports."""
    by_scope: dict[str, dict[str, ScopeReport]] = {"caller_number": {}, "trunk": {}}
    for row in rows:
        for scope in ("caller_number", "trunk"):
            value = row.get(scope)
            if not value:
                continue
            report = by_scope[scope].get(value)
            if report is None:
                report = by_scope[scope][value] = ScopeReport(scope, value)
            report.attempts += 1
            report.answered += bool(row.get("answered")) or row.get("category") == "answered"
            blocked = row.get("category") in analytics_categories
            report.analytics_blocks += blocked
            code = row.get("sip_code")
            if code == 603:
                if blocked:
                    report.sip_603plus += 1
                else:
                    report.sip_603 += 1
            elif code == 608:
                report.sip_608 += 1
            elif code == 607:
                report.sip_607 += 1
            report.last_at = row.get("at")
            if row.get("redress"):
                report.last_redress = row["redress"]
    for episode in alert_history:
        for key, value in (episode.get("scope") or {}).items():
            report = by_scope.get(key, {}).get(value)
            if report is not None:
                report.alerts.add(f"{episode['threshold']} ({'resolved' if episode.get('resolved_at') else 'firing'})")
    return {
        scope: sorted(reports.values(), key=lambda r: (-r.block_rate, -r.analytics_blocks, -r.attempts, r.value))
        for scope, reports in by_scope.items()
    }
