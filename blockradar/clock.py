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

TICK_S = 1.0  # the daemon looks at its alerts and actions once a second; replay follows the same beat


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
    """Picks the time of a live event: the PBX's own timestamp when the PBX's clock agrees with ours.

    An event's *delay* (receive time minus PBX time) is the clock offset plus however long the event
    waited: in FreeSWITCH's queue while the daemon was stopped or slow, in a socket buffer during a
    burst. Waiting only ever adds, so the PBX clock's offset is the *smallest* delay seen (the
    minimum-delay filter NTP uses), not the delay of the event at hand. A backlog delivered after a
    128 s stall keeps its own PBX times (the issue 12 lab run: with one delay per event, every queued
    call was re-stamped with the time it arrived, up to 128 s late); only a clock that is off, whose
    every event is early or late by more than ``tolerance_s``, is replaced by the receive time
    (counted in ``skewed``, logged once per guard at WARNING).

    ``offset_s`` follows a clock that steps forward at once (a smaller delay lowers it) and one that
    steps back within two periods of ``RELAX_S`` of receive time: at the end of each period it becomes
    the smallest delay of that period, which still holds events that did not wait (a backlog drains
    in seconds, not ten minutes).
    """

    RELAX_S = 600.0

    def __init__(self, source: str, tolerance_s: float = 5.0) -> None:
        self.source = source
        self.tolerance_s = tolerance_s
        self.skewed = 0
        self.last_offset_s: float | None = None  # PBX time minus ours, as last judged off (for messages)
        self.offset_s: float | None = None  # the estimated delay of an event that did not wait at all
        self._period_start: float | None = None
        self._period_min = float("inf")

    def event_time(self, pbx_ts: float | None, received_at: float) -> float:
        if pbx_ts is None:
            return received_at
        delay = received_at - pbx_ts
        if self._period_start is None:
            self._period_start = received_at
        if delay < self._period_min:
            self._period_min = delay
        if self.offset_s is None or delay < self.offset_s:
            self.offset_s = delay
        elif received_at - self._period_start >= self.RELAX_S:
            self.offset_s = self._period_min
            self._period_start, self._period_min = received_at, delay
        if -self.tolerance_s <= self.offset_s <= self.tolerance_s:
            return pbx_ts
        self.skewed += 1
        self.last_offset_s = -self.offset_s
        if self.skewed == 1:
            log.warning(
                "%s: PBX clock is %+.1f s off ours (tolerance %.1f s); using receive time instead "
                "(counted as clock_skew; logged once)",
                self.source,
                -self.offset_s,
                self.tolerance_s,
            )
        return received_at
