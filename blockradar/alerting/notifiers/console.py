"""Console notifier for the demo and for debugging: a readable block of text per notification.

Network text is made single-line and stripped of control characters, so a hostile caller name
cannot move the cursor or inject terminal escape sequences.
"""

from __future__ import annotations

import sys
from typing import ClassVar, Literal, TextIO

from blockradar.alerting.notifiers.base import Notification, NotifierConfig, NotifyError, one_line
from blockradar.alerting.notifiers.email import _alert_text
from blockradar.alerting.notifiers.wording import unlisted_line


class ConsoleConfig(NotifierConfig):
    type: Literal["console"] = "console"
    stream: Literal["stdout", "stderr"] = "stdout"


class ConsoleNotifier:
    service_name: ClassVar[str] = "Console"
    type: ClassVar[str] = "console"
    config_model: ClassVar[type[ConsoleConfig]] = ConsoleConfig
    default_rate_per_s: ClassVar[float | None] = None

    def __init__(self, config: ConsoleConfig | None = None, *, stream: TextIO | None = None) -> None:
        self.config = config or ConsoleConfig()
        self.name = self.config.name or "console"
        self.rate_per_s = self.config.rate_per_s
        self._stream = stream

    def describe(self) -> str:
        return f"{self.name}: console ({self.config.stream})"

    async def send(self, notification: Notification) -> None:
        stream = self._stream or (sys.stdout if self.config.stream == "stdout" else sys.stderr)
        lines = [f"=== {one_line(notification.title(), 300)} ==="]
        for alert in notification.alerts:
            lines += _alert_text(alert)
        if unlisted_line(notification):
            lines.append(unlisted_line(notification))
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:
            raise NotifyError(f"console: {type(exc).__name__}") from None
