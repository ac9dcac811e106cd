"""Logging setup: human-readable lines by default, one JSON object per line with ``--log-format json``.

A redaction filter on the handler replaces every registered secret (AMI secret, ESL password,
webhook URLs, SMTP password) with ``********`` in whatever a library logs, as a last line of
defence; our own code never logs them in the first place. Third-party loggers that log whole
events or actions at DEBUG (panoramisk, greenswitch's root logging) are held at INFO or above.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import TextIO

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text or record.exc_info:
            data["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(data, ensure_ascii=False)


def setup_logging(fmt: str = "human", level: int = logging.INFO, stream: TextIO | None = None,
                  secrets: Iterable[str] = ()) -> RedactingFilter:
    """Configure the root logger once for the process; returns the redaction filter to update."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
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
