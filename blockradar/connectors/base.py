"""What every connector is to the rest of blockradar: a source of CallOutcomes with a health state.

A connector owns its transport (connect, login, reconnect, liveness) and hands each finished
outbound trunk leg to an ``OutcomeSink``. It knows nothing of rules, windows or alerts.
Like an aiosmtpd handler, a sink is any callable; it is called in the asyncio loop thread and
must not block.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from blockradar.outcome import CallOutcome


class OutcomeSink(Protocol):
    def __call__(self, outcome: CallOutcome) -> None: ...


class LinkState(enum.StrEnum):
    """Where a connector's link is. Only CONNECTED means events are flowing."""

    STARTING = "starting"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    AUTH_FAILED = "auth_failed"  # wrong credentials / ACL rejection: long backoff, alert
    BACKING_OFF = "backing_off"  # waiting before the next connect attempt
    STOPPED = "stopped"


@dataclass(slots=True)
class ConnectorHealth:
    """A snapshot for /healthz, metrics and self-alerts. Counters only ever grow."""

    name: str
    pbx: str  # "asterisk" | "freeswitch"
    state: LinkState = LinkState.STARTING
    state_since: float | None = None  # epoch seconds of the last state change
    last_event_at: float | None = None  # epoch seconds of the last frame received
    connects: int = 0  # successful logins
    reconnects: int = 0  # successful logins after the first
    events: int = 0  # frames received
    parse_errors: int = 0  # frames that could not be parsed
    dropped: int = 0  # events dropped by a full hand-off buffer
    expired_calls: int = 0  # call state that timed out without a hangup (e.g. lost in a gap)
    clock_skewed: int = 0  # events whose PBX time was replaced by receive time
    outcomes: int = 0  # call outcomes produced
    last_error: str | None = None  # a short, secret-free description
    extra: dict[str, Any] = field(default_factory=dict)

    def set_state(self, state: LinkState, now: float, error: str | None = None) -> None:
        """Move to ``state`` (``state_since`` changes only on a real change); keep ``error`` if given."""
        if self.state != state:
            self.state = state
            self.state_since = now
        if error is not None:
            self.last_error = error

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data


class Connector(Protocol):
    """The interface the daemon drives. ``start`` returns once the connector runs in the
    background (it connects and reconnects by itself); ``close`` stops it and waits."""

    name: str
    pbx: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> ConnectorHealth: ...
