"""What a receiver saw, checked against the truths an alerting tool owes it.

A :class:`Ledger` replays the notifications a receiver got, in the order it got them, keeping the
receiver's view of every alert (firing or resolved), and lists every breach: a message that only
repeats alerts already announced (with no repeat_interval due), an alert announced as new while
the receiver already shows it firing, a ``resolved`` before its ``firing``, a message older than one
already delivered for the same group, a "still firing" for an alert never announced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Ledger:
    def __init__(self, messages: Iterable[dict[str, Any]], *, repeats_allowed: bool = False) -> None:
        self.messages = [m for m in messages if not m.get("test")]
        self.repeats_allowed = repeats_allowed
        self.view: dict[str, str] = {}  # fingerprint -> firing | resolved, as the receiver shows it
        self.problems: list[str] = []
        self.new: dict[str, int] = {}  # fingerprint -> times announced new
        self.resolved: dict[str, int] = {}
        self._replay()

    def _replay(self) -> None:
        newest: dict[str, float] = {}
        for index, message in enumerate(self.messages):
            group = message.get("group_key", "")
            created = float(message.get("created_ts") or 0.0)
            if created < newest.get(group, float("-inf")):
                self.problems.append(f"#{index} {group}: older than a message delivered before it")
            newest[group] = max(created, newest.get(group, created))
            alerts = message.get("alerts", [])
            if alerts and not self.repeats_allowed and all(a.get("change") == "firing" for a in alerts):
                self.problems.append(f"#{index} {group}: only repeats alerts already announced")
            for alert in alerts:
                fp = alert.get("fingerprint", "")
                shown = self.view.get(fp)
                if alert.get("state") == "resolved":
                    if shown != "firing":
                        self.problems.append(f"#{index} {fp}: resolved before it was announced firing")
                    self.resolved[fp] = self.resolved.get(fp, 0) + 1
                    self.view[fp] = "resolved"
                elif alert.get("change") == "new":
                    if shown == "firing":
                        self.problems.append(f"#{index} {fp}: announced as new again")
                    self.new[fp] = self.new.get(fp, 0) + 1
                    self.view[fp] = "firing"
                elif shown != "firing":
                    self.problems.append(f"#{index} {fp}: 'still firing' but never announced")

    def firing(self) -> set[str]:
        return {fp for fp, state in self.view.items() if state == "firing"}

    def alerts(self, fingerprint_prefix: str = "") -> list[dict[str, Any]]:
        """Every alert entry received whose fingerprint starts with the prefix, in order."""
        return [a for m in self.messages for a in m.get("alerts", [])
                if a.get("fingerprint", "").startswith(fingerprint_prefix)]
