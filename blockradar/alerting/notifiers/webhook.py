"""Generic webhook notifier: a JSON POST of the notification, signed and idempotent.

Headers: ``Idempotency-Key`` (stable per notification and notifier: a receiver drops repeats
after a crash between send and "sent" mark), ``X-Blockradar-Event`` (firing/resolved/test) and,
with a shared ``secret``, ``X-Blockradar-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.
2xx is success; 408, 429 (honouring ``Retry-After``) and 5xx are retried; other 4xx are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, ClassVar, Literal

from pydantic import Field

from blockradar.alerting.notifiers.base import (
    Notification,
    NotifierConfig,
    SecretValue,
)
from blockradar.alerting.notifiers.http import HttpPoster
from blockradar.secret import mask_url

SIGNATURE_HEADER = "X-Blockradar-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Blockradar-Event"


class WebhookConfig(NotifierConfig):
    type: Literal["webhook"] = "webhook"
    url: SecretValue
    secret: SecretValue | None = None
    headers: dict[str, str] = Field(default_factory=dict)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """For receivers (and tests): constant-time check of the signature header."""
    return hmac.compare_digest(sign(secret, body), header or "")


def build_body(notification: Notification) -> bytes:
    data: dict[str, Any] = {"version": 1, **notification.to_dict()}
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode()


class WebhookNotifier:
    service_name: ClassVar[str] = "Webhook (JSON)"
    type: ClassVar[str] = "webhook"
    config_model: ClassVar[type[WebhookConfig]] = WebhookConfig
    default_rate_per_s: ClassVar[float | None] = None

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.name = config.name or "webhook"
        self.rate_per_s = config.rate_per_s or self.default_rate_per_s
        self._http = HttpPoster("webhook", config.timeout)

    def describe(self) -> str:
        signed = " (signed)" if self.config.secret else ""
        return f"{self.name}: webhook {mask_url(self.config.url.reveal())}{signed}"

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.describe()!r})"

    async def send(self, notification: Notification) -> None:
        body = build_body(notification)
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: notification.idempotency_key(self.name),
            EVENT_HEADER: "test" if notification.test else notification.status,
        }
        if self.config.secret:
            headers[SIGNATURE_HEADER] = sign(self.config.secret.reveal(), body)
        await self._http.post(self.config.url.reveal(), where=self.describe(), data=body, headers=headers)

    async def aclose(self) -> None:
        await self._http.aclose()
