"""Durable, ordered delivery: every notification is committed to the store's outbox before any send.

``enqueue`` writes one row per notifier in one transaction (``synchronous=FULL``), so once it
returns the notification survives a restart or ``kill -9``. One asyncio worker per notifier (an
*endpoint*) then delivers that notifier's rows **in order**: it only ever sends the oldest pending
row, so a receiver never gets an older message after a newer one, nor a ``resolved`` before its
``firing``. A failure that may succeed later pauses the endpoint, not one message: the head row is
retried with exponential backoff and jitter, or after the peer's ``Retry-After`` (a 429), and
nothing behind it goes out meanwhile; a permanent failure (a 4xx) marks the row ``failed`` and the
next one goes. Rows expire (default 24 h). A dead or slow notifier only delays its own worker.

Superseding. A notification carries its alert group's full current state, so when a newer one of a
group is queued while an older one still waits (the endpoint is failing), the older one is marked
``superseded`` and the newer one carries what the older would have told: alerts the older announced
as new stay marked new, resolves it announced are added. An older one is never superseded when the
newer one resolves (or no longer lists) an alert the older one announced firing: the receiver gets
the firing first. The row being sent is never touched.

Each row carries an idempotency key (``<notification id>.<notifier>``), sent by the webhook notifier
as a header, so a crash between a send and its "sent" mark results in a repeat a receiver can
recognise. The queue is bounded per notifier (``max_pending``): beyond it the oldest pending rows
are marked ``dropped`` and counted, so a notifier dead for days cannot grow the file without limit.

In a fleet (``fleet/told.py``) every daemon queues the same notifications and a gate decides before
each send: this daemon sends the row (it holds the notifier lease, or Redis is away), the row waits
(another daemon is to send it: looked at again every ``GATE_WAIT_S``), or the row is done, ``told``
(every transition in it was told by some daemon). After a send the gate logs what was told.

Logging: an endpoint's first failure is logged (WARNING), further ones are summarised once a
minute, and its recovery is logged with how long it failed and how many attempts it took.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blockradar.alerting.notifiers.base import AlertDict, Notification, Notifier, NotifyError, one_line
from blockradar.clock import Clock, SystemClock
from blockradar.durations import format_duration, parse_duration
from blockradar.logs import fields
from blockradar.store import STORE_ERRORS, OutboxRow, Store
from blockradar.wakeups import wake

log = logging.getLogger(__name__)


SUMMARY_EVERY_S = 60.0
MEMORY_QUEUE = 1000  # notifications held in memory while the store cannot be written
MEMORY_TRIES = 3  # sends per notifier of a notification held in memory
SUPERSEDED = "superseded"
TOLD = "told"  # a fleet's other daemon told the receiver already (``fleet.told``)
GATE_WAIT_S = 1.0  # how soon a row another daemon is to send is looked at again
# a row the fleet's notifier has not told in this long is finished as told: the holder's judgement stood (its
# view of links, silences and timers decides), and a later holder must not tell hour-old news
GATE_GIVE_UP_S = 3600.0
OWN_GROUPS = "self/"  # this daemon's self-alerts: never held behind a row that waits for the fleet


class Gate(Protocol):
    """Decides, before each send, whether this daemon sends a row (``fleet.told.NotificationGate``)."""

    async def check(self, notifier: str, notification: Notification) -> tuple[str, Notification | None]: ...

    async def delivered(self, notifier: str, notification: Notification) -> None: ...


class OutboxConfig(BaseModel):
    """The ``outbox:`` section of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expire_after: float = 86_400.0
    backoff_initial: float = 5.0
    backoff_max: float = 60.0  # an endpoint back from an outage is tried again within a minute
    send_timeout: float = 30.0
    poll_interval: float = 1.0  # the longest a worker sleeps without looking at the table
    max_pending: int = Field(default=10_000, ge=1)  # per notifier; beyond it the oldest are dropped (counted)

    @field_validator("expire_after", "backoff_initial", "backoff_max", "send_timeout", "poll_interval",
                     mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class _Endpoint:
    """One notifier's delivery state: what is in flight, when it may be tried again (the pause is the
    endpoint's, not a row's: superseding the waiting row must not lift a Retry-After), and how its
    current failure streak goes (the backoff grows with the streak, whichever row is at the head)."""

    __slots__ = ("attempts", "failing_since", "gate_hold", "in_flight", "last_error", "next_send", "resume_at",
                 "sent_unmarked", "summarised_at")

    def __init__(self) -> None:
        self.in_flight: int | None = None  # the row id being sent
        self.resume_at = 0.0  # no send before this (backoff or the peer's Retry-After)
        self.failing_since: float | None = None
        self.attempts = 0  # failed attempts in the current streak
        self.last_error = ""
        self.summarised_at = 0.0
        self.next_send = 0.0  # the notifier's rate limit
        self.sent_unmarked: int | None = None  # a row sent whose "sent" mark the store refused
        # (row id, look again at, waiting since): the head row waits for the fleet's notifier (``gate``)
        self.gate_hold: tuple[int, float, float] | None = None


def merge_into(newer: Notification, older: Notification) -> Notification | None:
    """``newer`` carrying what ``older`` would have told, or None when ``older`` must go out first
    (``newer`` resolves, or leaves out, an alert that ``older`` announces firing)."""
    by_fp = {a.get("fingerprint"): a for a in newer.alerts}
    alerts = [AlertDict(**a) for a in newer.alerts]  # type: ignore[typeddict-item]
    merged = {a.get("fingerprint"): a for a in alerts}
    for alert in older.alerts:
        fp = alert.get("fingerprint")
        mine = by_fp.get(fp)
        if alert.get("state") == "firing":
            if mine is None or mine.get("state") != "firing":
                return None
            if alert.get("change") == "new":
                merged[fp]["change"] = "new"  # the receiver has not heard of it yet
        elif mine is None:
            alerts.append(alert)  # a resolve the receiver has not heard yet
    return newer.with_alerts(alerts)


class Outbox:
    """The durable queue between the alert lifecycle and the notifiers."""

    def __init__(
        self,
        store: Store,
        notifiers: Sequence[Notifier],
        config: OutboxConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        names = [n.name for n in notifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"notifier names must be unique: {names}")
        self.store = store
        self.notifiers = list(notifiers)
        self.config = config or OutboxConfig()
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.on_result = on_result
        self.stats: dict[str, dict[str, int]] = {
            n.name: {"sent": 0, "retried": 0, "failed": 0, "expired": 0, "dropped": 0, SUPERSEDED: 0, TOLD: 0}
            for n in notifiers
        }
        self._endpoints = {n.name: _Endpoint() for n in notifiers}
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        # notifications the store could not take (disk full, read-only): sent straight from memory
        self._memory: collections.deque[Notification] = collections.deque(maxlen=MEMORY_QUEUE)
        self._memory_event: asyncio.Event | None = None
        self.memory_sent = 0
        self.memory_lost = 0  # fell off the bounded memory queue, or every try failed
        # a fleet's notification gate (``fleet.told.NotificationGate``): which daemon sends a row, and the log
        # of what was told; None when the daemon runs alone
        self.gate: Gate | None = None

    # -- producing -----------------------------------------------------------------------------------
    def enqueue(self, notification: Notification) -> list[int]:
        """Commit one row per notifier; returns the row ids. Durable when this returns. When the store
        cannot be written, the notification is sent from memory instead (best effort; no row ids)."""
        try:
            return self._enqueue(notification)
        except STORE_ERRORS:  # reported by the store; the daemon says it once per episode
            if len(self._memory) == self._memory.maxlen:
                self.memory_lost += 1
            self._memory.append(notification)
            if self._memory_event is not None and self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._memory_event.set)
            return []

    def _enqueue(self, notification: Notification) -> list[int]:
        now = self.clock.now()
        payload = notification.to_json()
        ids: list[int] = []
        with self.store.batch():
            for n in self.notifiers:
                entry = (n.name, notification.idempotency_key(n.name), payload)
                added = self.store.outbox_add(notification.id, [entry], now, now + self.config.expire_after,
                                              group_key=notification.group_key)
                for row_id in added:  # none when this notification was queued before (idempotent)
                    self._supersede_older(n.name, notification, row_id)
                ids += added
            for n in self.notifiers:
                dropped = self.store.outbox_drop_oldest(n.name, self.config.max_pending)
                if dropped:
                    self._count(n.name, "dropped", dropped)
                    log.error("outbox: %s: %d pending notifications dropped (max_pending %d reached)", n.name,
                              dropped, self.config.max_pending)
        self.wake()
        return ids

    def _supersede_older(self, notifier: str, notification: Notification, row_id: int) -> None:
        """Fold the queued, older messages of the same group into the new one where that is safe."""
        in_flight = self._endpoints[notifier].in_flight
        older = [r for r in self.store.outbox_pending_of_group(notifier, notification.group_key, row_id)
                 if r.id != in_flight]
        merged = notification
        folded = []
        for row in reversed(older):  # newest first: each fold keeps what the receiver has not heard
            try:
                previous = Notification.from_json(row.payload)
            except (ValueError, KeyError, TypeError):
                break
            candidate = merge_into(merged, previous)
            if candidate is None:
                break  # this one (and everything older) must go out before the new one
            merged = candidate
            folded.append(row.id)
        if not folded:
            return
        for old_id in folded:
            self.store.outbox_supersede(old_id, row_id, merged.to_json())
        self._count(notifier, SUPERSEDED, len(folded))

    def wake(self) -> None:
        """Make the workers look at the table now (safe from any thread)."""
        wake(self._loop, self._events.values())

    # -- consuming -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        for notifier in self.notifiers:
            self._events[notifier.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._worker(notifier), name=f"outbox:{notifier.name}"))
        self._memory_event = asyncio.Event()
        if self._memory:
            self._memory_event.set()
        self._tasks.append(asyncio.create_task(self._memory_worker(), name="outbox:memory"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for notifier in self.notifiers:
            close = getattr(notifier, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def drain(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until nothing is pending; True when drained."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.store.outbox_depth() > 0:
            if loop.time() >= deadline:
                return False
            self.wake()
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        return True

    def depth(self) -> int:
        return self.store.outbox_depth()

    async def _worker(self, notifier: Notifier) -> None:
        name = notifier.name
        event = self._events[name]
        endpoint = self._endpoints[name]
        loop = asyncio.get_running_loop()
        rate = getattr(notifier, "rate_per_s", None)
        gap = 1.0 / rate if rate else 0.0
        while not self._stopping:
            try:
                await self._step(notifier, event, endpoint, loop, gap)
            except STORE_ERRORS as exc:  # reported by the store; look again after a poll interval
                self.store.report_error(exc)
                await asyncio.sleep(self.config.poll_interval)

    async def _step(self, notifier: Notifier, event: asyncio.Event, endpoint: _Endpoint,
                    loop: asyncio.AbstractEventLoop, gap: float) -> None:
        name = notifier.name
        if endpoint.sent_unmarked is not None:  # sent, but the store could not record it: record it first
            self.store.outbox_mark_sent(endpoint.sent_unmarked, self.clock.now())
            endpoint.sent_unmarked = None
        now = self.clock.now()
        row = self.store.outbox_head(name)
        hold = endpoint.gate_hold
        if row is not None and hold is not None and hold[0] == row.id and now < hold[1]:
            # the head waits for the fleet's notifier: this daemon's own self-alerts do not wait behind it
            own = self.store.outbox_head(name, group_prefix=OWN_GROUPS)
            row = own if own is not None and own.next_attempt_at <= now else None
            if row is None:
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=max(hold[1] - now, 0.001))
                return
        due = None if row is None else max(row.next_attempt_at, endpoint.resume_at)
        if due is None or due > now:  # nothing queued, or the endpoint is paused
            wait = self.config.poll_interval if due is None else min(self.config.poll_interval, due - now)
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=max(wait, 0.001))
            return
        pause = endpoint.next_send - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        endpoint.next_send = loop.time() + gap
        endpoint.in_flight = row.id
        try:
            await self._attempt(notifier, row)
        finally:
            endpoint.in_flight = None

    async def _attempt(self, notifier: Notifier, row: OutboxRow) -> None:
        name = notifier.name
        now = self.clock.now()
        if row.expires_at <= now:
            self.store.outbox_finish(row.id, "expired", row.last_error or "expired before it could be sent")
            self._count(name, "expired")
            log.warning("outbox: %s: notification %s expired after %d attempts", name, row.notification_id,
                        row.attempts)
            return
        try:
            notification = Notification.from_json(row.payload)
        except (ValueError, KeyError, TypeError) as exc:
            self.store.outbox_finish(row.id, "failed", f"unreadable payload: {type(exc).__name__}")
            self._count(name, "failed")
            return
        if self.gate is not None:
            verdict, gated = await self.gate.check(name, notification)
            endpoint = self._endpoints[name]
            hold = endpoint.gate_hold
            held = hold is not None and hold[0] == row.id
            since = hold[2] if held and hold is not None else now
            if held:
                endpoint.gate_hold = None
            if verdict == TOLD or (verdict != "send" and now - since >= GATE_GIVE_UP_S):
                why = ("told by a daemon of the fleet" if verdict == TOLD else
                       f"the fleet's notifier did not tell it in {format_duration(GATE_GIVE_UP_S)}")
                self.store.outbox_finish(row.id, TOLD, why)
                self._count(name, TOLD)
                return
            if verdict != "send" or gated is None:  # another daemon is to send it: look again soon
                endpoint.gate_hold = (row.id, now + GATE_WAIT_S, since)
                return
            notification = gated
        try:
            await asyncio.wait_for(notifier.send(notification), timeout=self.config.send_timeout)
        except NotifyError as exc:
            if not exc.retry:
                self.store.outbox_finish(row.id, "failed", str(exc))
                self._count(name, "failed")
                log.error("outbox: %s: giving up on %s: %s", name, row.notification_id, exc)
                return
            self._retry(row, str(exc), exc.retry_after)
        except TimeoutError:
            self._retry(row, f"no answer within {self.config.send_timeout:g}s", None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a notifier bug must not kill its worker
            self._retry(row, f"unexpected {type(exc).__name__}", None)
        else:
            self._count(name, "sent")
            log.info("outbox: %s: delivered %s (%s, %d alert(s))", name, one_line(notification.title()),
                     notification.status, len(notification.alerts),
                     extra=fields(notifier=name, notification=row.notification_id))
            self._recovered(name)
            self._endpoints[name].sent_unmarked = row.id  # until the store has it: never sent twice
            self.store.outbox_mark_sent(row.id, self.clock.now())
            self._endpoints[name].sent_unmarked = None
            if self.gate is not None:
                await self.gate.delivered(name, notification)

    async def _memory_worker(self) -> None:
        """Send what the store could not take, straight from memory: each notifier up to
        ``MEMORY_TRIES`` times with a growing pause, in order. Not durable (the store is failing)."""
        assert self._memory_event is not None
        while not self._stopping:
            await self._memory_event.wait()
            self._memory_event.clear()
            while self._memory:
                notification = self._memory.popleft()
                delivered = False
                for notifier in self.notifiers:
                    for attempt in range(MEMORY_TRIES):
                        try:
                            await asyncio.wait_for(notifier.send(notification), timeout=self.config.send_timeout)
                        except asyncio.CancelledError:
                            raise
                        except Exception as exc:
                            error = str(exc) if isinstance(exc, NotifyError) else type(exc).__name__
                            log.warning("outbox: %s: sending from memory failed (%s); try %d of %d", notifier.name,
                                        error, attempt + 1, MEMORY_TRIES)
                            if isinstance(exc, NotifyError) and not exc.retry:
                                break
                            pause = min(self.config.backoff_max, self.config.backoff_initial * 2 ** attempt)
                            await asyncio.sleep(pause)
                        else:
                            self._count(notifier.name, "sent")
                            log.info("outbox: %s: delivered from memory: %s", notifier.name,
                                     one_line(notification.title()),
                                     extra=fields(notifier=notifier.name, notification=notification.id))
                            delivered = True
                            break
                if delivered:
                    self.memory_sent += 1
                else:
                    self.memory_lost += 1

    def _retry(self, row: OutboxRow, error: str, retry_after: float | None) -> None:
        """Pause the endpoint: its head row is tried again after the peer's wish or our backoff."""
        endpoint = self._endpoints[row.notifier]
        if retry_after is not None:
            delay = retry_after
        else:
            full = min(self.config.backoff_max, self.config.backoff_initial * (2 ** min(endpoint.attempts, 30)))
            delay = full / 2 + self.rng.uniform(0, full / 2)
        now = self.clock.now()
        endpoint.resume_at = now + delay  # first: a store that cannot record the retry must not undo the pause
        self.store.outbox_retry(row.id, now + delay, error)
        self._count(row.notifier, "retried")
        endpoint.attempts += 1
        endpoint.last_error = error
        queued = self.store.outbox_depth(row.notifier)
        if endpoint.failing_since is None:
            endpoint.failing_since = endpoint.summarised_at = now
            log.warning("outbox: %s: delivery failing (%s); %d notification(s) wait in order; next try in %.1fs",
                        row.notifier, error, queued, delay)
        elif now - endpoint.summarised_at >= SUMMARY_EVERY_S:
            endpoint.summarised_at = now
            log.warning("outbox: %s: still failing after %s: %d attempts, last: %s; %d queued; next try in %.1fs",
                        row.notifier, format_duration(round(now - endpoint.failing_since)), endpoint.attempts,
                        error, queued, delay)
        else:
            log.debug("outbox: %s: send failed (%s); retry %d in %.1fs", row.notifier, error, row.attempts + 1,
                      delay)

    def _recovered(self, name: str) -> None:
        endpoint = self._endpoints[name]
        if endpoint.failing_since is None:
            return
        lasted = format_duration(round(self.clock.now() - endpoint.failing_since))
        log.warning("outbox: %s: delivering again after %s and %d failed attempt(s); %d queued", name, lasted,
                    endpoint.attempts, self.store.outbox_depth(name))
        endpoint.failing_since = None
        endpoint.attempts = 0
        endpoint.resume_at = 0.0

    def _count(self, notifier: str, result: str, n: int = 1) -> None:
        self.stats[notifier][result] += n
        if self.on_result is not None:
            for _ in range(n):
                self.on_result(notifier, result)
