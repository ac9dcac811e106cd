"""The notifier contract: what a notification holds, and the one method a notifier has.

A :class:`Notification` is one message about one alert group (Alertmanager's meaning): it is
what the outbox stores (as JSON) and what every notifier renders. A notifier is any object with
a ``name`` and ``async send(notification)``; it raises :class:`NotifyError` saying whether a
retry may help and, when the peer said so, after how long.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import ssl
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from blockradar.outcome import iso
from blockradar.secret import Secret


class SampleCall(TypedDict):
    call_id: str
    callee: str | None
    code: int | None
    phrase: str | None
    category: str
    at: str | None


class AlertDict(TypedDict, total=False):
    """One alert inside a notification (all values JSON-ready; text here came from the network)."""

    fingerprint: str
    threshold: str
    kind: str  # number | trunk | scope | self: which message template renders it (``alert_kind``)
    description: str
    severity: str
    state: str  # firing | resolved
    change: str  # in a notification: new | firing (announced before) | resolved
    held: bool  # firing, but a PBX link it rests on is down: its state is frozen until the link is back
    labels: dict[str, str]
    scope: dict[str, str]
    count: int  # matching outcomes in the window
    attempts: int
    rate: float | None
    window_s: float
    categories: dict[str, int]  # matching calls per category, whole window
    watched: list[str]  # the categories the threshold counts
    sip_codes: dict[str, int]  # matching calls per SIP code, whole window (adds up to count)
    trunks: dict[str, int]  # matching calls per trunk, whole window
    connectors: dict[str, int]  # matching calls per connector, whole window
    first_seen: str | None
    last_seen: str | None
    started_at: str | None
    fired_at: str | None
    resolved_at: str | None
    resolve_rule: str  # when it resolves, in words
    samples: list[SampleCall]
    redress: list[dict[str, Any]]
    what_to_do: dict[str, str]
    actions: list[str]  # what the actions did for its number: "rest-cid: rested +1555... in VICIdial CID group X"
    detail: str  # self-alerts: what is wrong, in words


def alert_kind(scope: dict[str, str]) -> str:
    """Which template an alert gets: a calling number, a trunk, or another scope."""
    fields = set(scope)
    if fields == {"caller_number"}:
        return "number"
    if fields == {"trunk"}:
        return "trunk"
    return "scope"


@dataclass(slots=True)
class Notification:
    """One message about one alert group."""

    group_key: str
    group_labels: dict[str, str]
    status: str  # "firing" when any alert fires, else "resolved"
    alerts: list[AlertDict]
    created_at: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    test: bool = False
    # alerts of the group left out of ``alerts`` (beyond ``alerting.max_alerts_listed``), by change
    # (new / firing / resolved): a group of thousands of numbers is a message of bounded size
    unlisted: dict[str, int] = field(default_factory=dict)

    @property
    def firing(self) -> list[AlertDict]:
        return [a for a in self.alerts if a.get("state") == "firing"]

    @property
    def resolved(self) -> list[AlertDict]:
        return [a for a in self.alerts if a.get("state") == "resolved"]

    def with_alerts(self, alerts: list[AlertDict]) -> Notification:
        """The same message (id, group, time) telling ``alerts`` instead; its status follows them."""
        status = "firing" if any(a.get("state") == "firing" for a in alerts) else "resolved"
        return Notification(group_key=self.group_key, group_labels=dict(self.group_labels), status=status,
                            alerts=alerts, created_at=self.created_at, id=self.id, test=self.test,
                            unlisted=dict(self.unlisted))

    def idempotency_key(self, notifier: str) -> str:
        """Stable per (notification, notifier): receivers drop a repeat after a crash-and-resend."""
        return f"{self.id}.{notifier}"

    def severity(self) -> str:
        order = {"critical": 0, "warning": 1, "info": 2}
        sevs = [a.get("severity", "info") for a in (self.firing or self.alerts)]
        return min(sevs, key=lambda s: order.get(s, 3)) if sevs else "info"

    def title(self) -> str:
        """``CRITICAL analytics blocks on +15557650003 via carrier-c`` (plain text, may hold network text;
        every renderer escapes it for its medium). See ``wording.title``."""
        from blockradar.alerting.notifiers.wording import title

        return title(self)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "group_key": self.group_key,
                "group_labels": self.group_labels,
                "status": self.status,
                "test": self.test,
                "created_at": iso(self.created_at),
                "created_ts": self.created_at,
                "alerts": self.alerts,
                "unlisted": self.unlisted,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> Notification:
        data = json.loads(text)
        return cls(
            group_key=data["group_key"],
            group_labels=dict(data.get("group_labels") or {}),
            status=data["status"],
            alerts=list(data.get("alerts") or []),
            created_at=float(data.get("created_ts") or 0.0),
            id=data["id"],
            test=bool(data.get("test")),
            unlisted={str(k): int(v) for k, v in (data.get("unlisted") or {}).items()},
        )


class NotifyError(Exception):
    """A failed send. ``retry``: whether trying again may succeed; ``retry_after``: seconds the peer asked for.

    The message must never contain a secret (no webhook URL, no password).
    """

    def __init__(self, message: str, *, retry: bool = True, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after


@runtime_checkable
class Notifier(Protocol):
    """What the outbox needs from a notifier."""

    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver or raise NotifyError."""
        ...


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]+")


def one_line(text: Any, limit: int = 200) -> str:
    """Network text made single-line and bounded: control characters (CR, LF, tabs ...) become a space."""
    value = _CONTROL.sub(" ", str(text)).strip()
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def card_path(number: str) -> str:
    """The path of a number's card on the status page (``/numbers/+15557650003``)."""
    return "/numbers/" + urllib.parse.quote(number, safe="+")


def status_page_url(base: str | None, alert: AlertDict | None = None) -> str | None:
    """Where blockradar's status page shows ``alert`` (a number's card for a number alert, else the
    overview), under the page's public ``base`` URL (a notifier's ``status_url``); None without one."""
    if not base:
        return None
    base = base.rstrip("/")
    number = (alert.get("scope") or {}).get("caller_number") if alert is not None else None
    if alert is not None and alert.get("kind") == "number" and number:
        return base + card_path(number)
    return f"{base}/"


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def network_reason(exc: BaseException) -> str:
    """Why a connection failed, in words ("connection refused", "host name not found"), not the name of an
    exception class; follows what a client library wrapped (aiohttp's ``os_error``, ``__cause__``)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if "Certificate" in type(seen).__name__ or isinstance(seen, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted"
        if isinstance(seen, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(seen, socket.gaierror):
            return "host name not found"
        if isinstance(seen, TimeoutError):
            return "no answer in time"
        if isinstance(seen, OSError) and seen.errno:
            return _ERRNO_WORDS.get(seen.errno) or os.strerror(seen.errno).lower()
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return type(exc).__name__


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), bounded to a day."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), 86_400.0)


def _to_secret(value: Any) -> Any:
    if value is None or isinstance(value, Secret):
        return value
    return Secret(str(value))


# A config field holding a secret: accepts a string, keeps a Secret, prints and dumps as a mask.
SecretValue = Annotated[
    Secret,
    BeforeValidator(_to_secret),
    PlainSerializer(lambda s: str(s), return_type=str),
    WithJsonSchema({"type": "string", "writeOnly": True}),
]


class NotifierConfig(BaseModel):
    """Fields every notifier config has. Subclasses add their own and a ``type`` literal."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    name: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    rate_per_s: float | None = Field(default=None, gt=0)  # None: the notifier's own default
    timeout: float = Field(default=10.0, gt=0)
