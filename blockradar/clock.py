"""Time sources, injected everywhere: the system clock, a manual clock for tests and replay,
and the guard that decides whether a PBX's event time can be trusted.

Windows run on event time so that replay and live agree. A live PBX whose clock is off by more
than a tolerance (or a recording replayed through a live connector) must not be trusted: the
guard counts it, logs it once, and falls back to the time the event was received.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, epoch seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: tests and replay drive it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    def set(self, now: float) -> None:
        if now > self._now:
            self._mono += now - self._now
        self._now = now


class EventTimeGuard:
    """Picks the time of a live event: the PBX's own timestamp when it agrees with ours.

    ``event_time(pbx_ts, received_at)`` returns ``pbx_ts`` when it is within ``tolerance_s`` of
    ``received_at``; otherwise it counts the disagreement in ``skewed``, logs the first one (per
    guard) at WARNING, and returns ``received_at``.
    """

    def __init__(self, source: str, tolerance_s: float = 5.0) -> None:
        self.source = source
        self.tolerance_s = tolerance_s
        self.skewed = 0
        self.last_offset_s: float | None = None

    def event_time(self, pbx_ts: float | None, received_at: float) -> float:
        if pbx_ts is None:
            return received_at
        offset = pbx_ts - received_at
        if -self.tolerance_s <= offset <= self.tolerance_s:
            return pbx_ts
        self.skewed += 1
        self.last_offset_s = offset
        if self.skewed == 1:
            log.warning(
                "%s: PBX clock is %+.1f s off ours (tolerance %.1f s); using receive time instead "
                "(counted as clock_skew; logged once)",
                self.source,
                offset,
                self.tolerance_s,
            )
        return received_at
