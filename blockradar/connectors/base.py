"""What every connector is to the rest of blockradar: a source of CallOutcomes with a health state.

A connector owns its transport (connect, login, reconnect, liveness) and hands each finished
outbound trunk leg to an ``OutcomeSink``. It knows nothing of rules, windows or alerts.
Like an aiosmtpd handler, a sink is any callable; it is called in the asyncio loop thread and
must not block.
"""

from __future__ import annotations

import enum
import random
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
    # connected, but the PBX answers nothing (no Pong / probe answer, not a byte): presumed hung. The
    # session is kept, so what the PBX queued for it arrives the moment it resumes; given up (redial)
    # after the connector's hung timeout only if the PBX greets a second connection (the session, not
    # the PBX, is stuck).
    UNRESPONSIVE = "unresponsive"
    AUTH_FAILED = "auth_failed"  # wrong credentials / ACL rejection: retried every auth_backoff, alert
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
    numbers_kept_as_given: int = 0  # caller/callee numbers not a possible number of the default region
    legs_skipped: dict[str, int] = field(default_factory=dict)  # legs that are not carrier attempts, by reason
    clock_skewed: int = 0  # events whose PBX time was replaced by receive time
    outcomes: int = 0  # call outcomes produced
    last_error: str | None = None  # why the link is not up, short and secret-free; None while it is up
    last_error_at: float | None = None  # when the last error happened (kept after recovery, for history)
    auth_failing: bool = False  # the last login was refused, until one is accepted (one page per cause)
    extra: dict[str, Any] = field(default_factory=dict)

    def set_state(self, state: LinkState, now: float, error: str | None = None) -> None:
        """Move to ``state`` (``state_since`` changes only on a real change); keep ``error`` if given.
        CONNECTED clears ``last_error`` (``last_error_at`` stays) and ``auth_failing``."""
        if self.state != state:
            self.state = state
            self.state_since = now
        if error is not None:
            self.last_error = error
            self.last_error_at = now
        if state == LinkState.AUTH_FAILED:
            self.auth_failing = True
        elif state == LinkState.CONNECTED:
            self.last_error = None
            self.auth_failing = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data


class RedialSchedule:
    """When a connector tries its PBX again. Every second blind is calls lost, and a TCP connect to a
    PBX that is not listening yet costs nothing, so while a link is down it is retried at least every
    ``ceiling`` seconds (default 1): first after ``initial``, doubling up to the ceiling, jittered
    downward only (never later than the ceiling, and never in lockstep with other daemons). A PBX
    announcing a shutdown is no reason to wait longer: it may be back in a second. After an
    authentication failure it waits ``auth_retry`` (a wrong secret rarely fixes itself within a
    second, and the PBX logs every refusal) unless the daemon is told to retry at once (SIGHUP)."""

    def __init__(self, initial: float = 0.25, ceiling: float = 1.0, auth_retry: float = 30.0,
                 rng: random.Random | None = None) -> None:
        if initial <= 0 or ceiling < initial or auth_retry <= 0:
            raise ValueError("0 < initial <= ceiling and auth_retry > 0 are required")
        self.initial = initial
        self.ceiling = ceiling
        self.auth_retry = auth_retry
        self._rng = rng or random.Random()
        self._delay = initial
        self.waits = 0  # retries scheduled after a failure or a loss (not after auth failures)
        self.longest = 0.0  # the longest of those waits

    def reset(self) -> None:
        """The link came up: the next loss is retried after ``initial`` again."""
        self._delay = self.initial

    def next_delay(self) -> float:
        """Seconds before the next connect attempt after a failed one or a lost link."""
        delay = self._delay
        self._delay = min(delay * 2, self.ceiling)
        wait = delay * (0.75 + 0.25 * self._rng.random())
        self.waits += 1
        self.longest = max(self.longest, wait)
        return wait

    def auth_delay(self) -> float:
        self.reset()
        return self.auth_retry


class Connector(Protocol):
    """The interface the daemon drives. ``start`` returns once the connector runs in the
    background (it connects and reconnects by itself); ``close`` stops it and waits;
    ``retry_now`` cuts short any wait before the next connect attempt (SIGHUP after a fixed secret)."""

    name: str
    pbx: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def retry_now(self) -> None: ...

    def health(self) -> ConnectorHealth: ...
