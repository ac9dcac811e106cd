"""The HTTP POST that HTTP notifiers (Slack, webhook) share: one aiohttp session per notifier,
and the mapping of what the peer answered to success or a ``NotifyError`` the outbox understands
(408, 429 with ``Retry-After`` and 5xx are retried; other statuses are permanent)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp

from blockradar.alerting.notifiers.base import NotifyError, network_reason, one_line, parse_retry_after
from blockradar.secret import scrub_url_secrets


def is_2xx(status: int) -> bool:
    return 200 <= status < 300


class HttpPoster:
    def __init__(self, label: str, timeout: float, *, accept: Callable[[int], bool] = is_2xx) -> None:
        self.label = label  # "slack", "webhook": the start of every error message
        self.timeout = timeout
        self.accept = accept
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, *, where: str, **request: Any) -> None:
        """POST to ``url`` (``where`` names it in errors, with secrets masked)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(url, **request) as resp:
                status = resp.status
                text = (await resp.text())[:200]
                retry_after = resp.headers.get("Retry-After")
        except aiohttp.ClientError as exc:
            raise NotifyError(f"{self.label}: cannot reach {where}: {network_reason(exc)}") from None
        except TimeoutError:
            raise NotifyError(f"{self.label}: no answer within {self.timeout:g}s") from None
        if self.accept(status):
            return
        reason = one_line(scrub_url_secrets(text, url), 80)  # a peer may echo the token back
        if status == 429:
            raise NotifyError(f"{self.label}: HTTP 429 rate limited ({reason})",
                              retry_after=parse_retry_after(retry_after, time.time()))
        raise NotifyError(f"{self.label}: HTTP {status} ({reason})", retry=status >= 500 or status == 408)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
