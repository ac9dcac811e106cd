"""Durable delivery: every notification is committed to the store's outbox before any send.

``enqueue`` writes one row per notifier in one transaction (``synchronous=FULL``), so once it
returns the notification survives a restart or ``kill -9``. One asyncio worker per notifier then
sends due rows, oldest first, with a per-notifier rate limit (the notifier's ``rate_per_s``) and
a per-send timeout; a failure that may succeed later is retried with exponential backoff and
jitter (or after the peer's ``Retry-After``) until the row expires (default 24 h); a permanent
failure stops at once. A dead or slow notifier only delays its own worker: classification and the
other notifiers go on. Each row carries an idempotency key (``<notification id>.<notifier>``),
sent by the webhook notifier as a header, so a crash between a send and its "sent" mark results in
a repeat a receiver can recognise. The queue is bounded per notifier (``max_pending``): beyond
it the oldest pending rows are marked ``dropped`` and counted, so a notifier dead for days cannot
grow the file without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blockradar.alerting.notifiers.base import Notification, Notifier, NotifyError
from blockradar.clock import Clock, SystemClock
from blockradar.durations import parse_duration
from blockradar.store import OutboxRow, Store

log = logging.getLogger(__name__)


class OutboxConfig(BaseModel):
    """The ``outbox:`` section of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expire_after: float = 86_400.0
    backoff_initial: float = 5.0
    backoff_max: float = 600.0
    send_timeout: float = 30.0
    poll_interval: float = 1.0  # the longest a worker sleeps without looking at the table
    max_pending: int = Field(default=10_000, ge=1)  # per notifier; beyond it the oldest are dropped (counted)

    @field_validator("expire_after", "backoff_initial", "backoff_max", "send_timeout", "poll_interval",
                     mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


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
            n.name: {"sent": 0, "retried": 0, "failed": 0, "expired": 0, "dropped": 0} for n in notifiers
        }
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # -- producing -----------------------------------------------------------------------------------
    def enqueue(self, notification: Notification) -> list[int]:
        """Commit one row per notifier; returns the row ids. Durable when this returns."""
        now = self.clock.now()
        payload = notification.to_json()
        ids = self.store.outbox_add(
            notification.id,
            [(n.name, notification.idempotency_key(n.name), payload) for n in self.notifiers],
            now,
            now + self.config.expire_after,
        )
        for n in self.notifiers:
            dropped = self.store.outbox_drop_oldest(n.name, self.config.max_pending)
            if dropped:
                self._count(n.name, "dropped", dropped)
                log.error("outbox: %s: %d pending notifications dropped (max_pending %d reached)", n.name, dropped,
                          self.config.max_pending)
        self.wake()
        return ids

    def wake(self) -> None:
        """Make the workers look at the table now (safe from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for event in self._events.values():
            loop.call_soon_threadsafe(event.set)

    # -- consuming -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        for notifier in self.notifiers:
            self._events[notifier.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._worker(notifier), name=f"outbox:{notifier.name}"))

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
        event = self._events[notifier.name]
        loop = asyncio.get_running_loop()
        rate = getattr(notifier, "rate_per_s", None)
        gap = 1.0 / rate if rate else 0.0
        next_send = 0.0
        while not self._stopping:
            now = self.clock.now()
            rows = self.store.outbox_due(notifier.name, now)
            if not rows:
                due = self.store.outbox_next_due(notifier.name)
                wait = self.config.poll_interval if due is None else min(self.config.poll_interval, max(0.0, due - now))
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=max(wait, 0.001))
                continue
            for row in rows:
                if self._stopping:
                    return
                pause = next_send - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                next_send = loop.time() + gap
                await self._attempt(notifier, row)

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
            self.store.outbox_mark_sent(row.id, self.clock.now())
            self._count(name, "sent")

    def _retry(self, row: OutboxRow, error: str, retry_after: float | None) -> None:
        if retry_after is not None:
            delay = retry_after
        else:
            full = min(self.config.backoff_max, self.config.backoff_initial * (2 ** min(row.attempts, 30)))
            delay = full / 2 + self.rng.uniform(0, full / 2)
        self.store.outbox_retry(row.id, self.clock.now() + delay, error)
        self._count(row.notifier, "retried")
        log.warning("outbox: %s: send failed (%s); retry %d in %.1fs", row.notifier, error, row.attempts + 1, delay)

    def _count(self, notifier: str, result: str, n: int = 1) -> None:
        self.stats[notifier][result] += n
        if self.on_result is not None:
            for _ in range(n):
                self.on_result(notifier, result)
