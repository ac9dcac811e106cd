"""Logging setup: human-readable lines by default, one JSON object per line with ``--log-format json``.

* JSON lines use Elastic Common Schema names, so Elasticsearch, Loki or Vector take them as they
  are: ``@timestamp`` (UTC, ms), ``log.level``, ``log.logger``, ``message``, ``error.type`` /
  ``error.message`` / ``error.stack_trace``, ``process.pid``, ``service.name``, and ``labels``: the
  structured fields a line is about (``connector``, ``pbx``, ``call_id``, ``caller_number``,
  ``notifier``, ``fingerprint``, ``threshold``), given with ``extra=fields(...)``.
* Human lines are in UTC (``2026-11-30T01:02:03.456Z``), the time zone alerts and the store use.
* Under systemd (``JOURNAL_STREAM`` names our stderr), each line starts with its syslog priority
  (``<3>`` for errors, sd-daemon(3)), so ``journalctl -p err`` finds them; journald strips it.

A redaction filter on the handler replaces every registered secret (AMI secret, ESL password,
webhook URLs, SMTP password) with ``********`` in whatever a library logs, as a last line of
defence; our own code never logs them in the first place. Third-party loggers that log whole
events or actions at DEBUG (panoramisk, greenswitch's root logging) are held at INFO or above.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

_NOISY = ("panoramisk", "greenswitch", "aiohttp.access", "asyncio")


class RedactingFilter(logging.Filter):
    """Replaces known secret strings in a record's final message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            if secret in redacted:
                redacted = redacted.replace(secret, "********")
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            for secret in self._secrets:
                text = text.replace(secret, "********")
            record.exc_text = text
            record.exc_info = None
        if redacted is not message:
            record.msg, record.args = redacted, None
        return True


def fields(**values: Any) -> dict[str, Any]:
    """``log.info(..., extra=fields(connector="pbx1", call_id=...))``: what the line is about, as ``labels``
    in JSON lines (None values left out)."""
    return {"labels": {k: str(v) for k, v in values.items() if v is not None}}


class LineBudget:
    """At most ``limit`` lines of a kind per ``period_s``: a storm (a flood opens thousands of alerts) is
    logged as its first lines and then one summary of how many more there were."""

    def __init__(self, limit: int = 20, period_s: float = 10.0) -> None:
        self.limit = limit
        self.period_s = period_s
        self._start = float("-inf")
        self._used = 0
        self._held = 0

    def take(self, now: float) -> bool:
        """True when this line may be logged (``now``: a monotonic clock)."""
        if now - self._start >= self.period_s:
            self._start, self._used = now, 0
        if self._used < self.limit:
            self._used += 1
            return True
        self._held += 1
        return False

    def held_back(self, now: float) -> int:
        """Lines held back, once their period is over (then 0 until more are); for the summary line."""
        if not self._held or now - self._start < self.period_s:
            return 0
        held, self._held = self._held, 0
        return held


class LabelledLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every line carries the same ``labels`` (a connector's name and PBX), merged with any
    given per call through ``extra=fields(...)``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra["labels"] = {**(self.extra or {}), **extra.get("labels", {})}
        kwargs["extra"] = extra
        return msg, kwargs


def utc_iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One ECS-named JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "@timestamp": utc_iso(record.created),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "process.pid": record.process,
            "service.name": "blockradar",
        }
        labels = getattr(record, "labels", None)
        if isinstance(labels, dict) and labels:
            data["labels"] = labels
        if record.exc_info and record.exc_info[1] is not None:
            data["error.type"] = type(record.exc_info[1]).__name__
            data["error.message"] = str(record.exc_info[1])
        if record.exc_text or record.exc_info:
            data["error.stack_trace"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(data, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """``2026-11-30T01:02:03.456Z INFO    blockradar.daemon: message`` in UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_iso(record.created)


# sd-daemon(3) priorities by logging level
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalPriority(logging.Formatter):
    """Wraps a formatter: ``<N>`` before every line of a record, N its syslog priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITY if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in self.inner.format(record).split("\n"))


def stderr_is_journal(stream: TextIO) -> bool:
    """systemd connected ``stream`` to the journal: ``JOURNAL_STREAM`` is its ``device:inode``."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


def setup_logging(fmt: str = "human", level: int = logging.INFO, stream: TextIO | None = None,
                  secrets: Iterable[str] = ()) -> RedactingFilter:
    """Configure the root logger once for the process; returns the redaction filter to update."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else HumanFormatter()
    if stderr_is_journal(out):
        formatter = JournalPriority(formatter)
    handler.setFormatter(formatter)
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(level, logging.INFO) if name != "asyncio" else max(level, logging.WARNING))
    return redactor
