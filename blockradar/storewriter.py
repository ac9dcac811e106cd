"""The daemon's writes to the store on a thread of their own, so the event loop never waits for SQLite.

Every outcome is one row; at thousands a second their inserts and commits (an fsync each, and the
GIL to win back from the ESL thread after each SQLite call) held the daemon's event loop 4-16 ms
per batch in the bench. Alert states come in thousands too when a flood opens alerts, and an hourly
prune deletes a day of rows. ``StoreWriter`` owns a second connection to the same store (WAL: one
writer at a time, readers never blocked) on its own thread:

* ``add`` queues an outcome row, ``save_alert_states`` a batch of alert states, ``prune`` the
  retention's deletes; none of them blocks. The thread writes them in the order they were queued,
  up to ``BATCH_ROWS`` items per transaction, gathering for ``LINGER_S`` first (a group commit: at
  5,000 calls a second, a commit and its fsync per wake-up kept the writer busy half the time). A
  prune deletes ``PRUNE_ROWS`` per transaction and is queued again behind what arrived meanwhile.
* The one rule the store keeps (an alert transition or a notification never on disk without the
  outcomes and states queued before it) holds because the loop's own writes (notifications, groups,
  silences: rare) first call ``wait_written`` (``Store.before_write``), which returns once everything
  queued so far is committed. Only the loop queues, so after that wait the writer is idle and the
  loop's transaction never waits on SQLite's lock either.

When the store refuses a write (disk full, read-only, damaged), what is queued stays queued (at most
``max_unstored`` items; beyond, the oldest are let go and counted in ``dropped``), ``on_error`` is
told (from this thread), and the head is tried again every ``retry_s``; the first write that succeeds
calls ``on_ok``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blockradar.store import STORE_ERRORS, AlertStateValues, OutcomeRow, Store

log = logging.getLogger(__name__)

BATCH_ROWS = 500  # queued items (outcome rows, jobs) in one transaction
LINGER_S = 0.02  # how long the writer lets rows gather before a commit (one fsync per batch, not per row)
PRUNE_ROWS = 5000  # rows one prune transaction deletes (a day of calls is many rows)


class _Job:
    """A write other than an outcome row, run on the writer's ``Store``; ``run`` returns True when the job
    wants to be queued once more (a prune with more to delete), anything else when it is done."""

    __slots__ = ("after", "rows", "run")

    def __init__(self, run: Callable[[Store], object], rows: int = 1, after: Callable[[], None] | None = None) -> None:
        self.run = run
        self.rows = rows  # about how many rows it writes: a transaction holds BATCH_ROWS of them
        self.after = after  # called on the writer's thread once the job is committed


class StoreWriter:
    """Writes what the loop queues to ``path`` on its own thread (see the module docstring)."""

    def __init__(self, path: str | Path, *, on_error: Callable[[BaseException], None] | None = None,
                 on_ok: Callable[[], None] | None = None, max_unstored: int = 50_000, retry_s: float = 1.0,
                 busy_timeout_s: float = 5.0) -> None:
        self.path = str(path)
        self.on_error = on_error
        self.on_ok = on_ok
        self.max_unstored = max_unstored
        self.retry_s = retry_s
        self.busy_timeout_s = busy_timeout_s
        self.dropped = 0  # items let go while the store could not take them (beyond max_unstored)
        self.written = 0  # outcome rows written
        self.commits = 0  # transactions committed
        self._items: collections.deque[OutcomeRow | _Job] = collections.deque()
        self._cond = threading.Condition()
        self._queued = 0  # items ever queued
        self._done = 0  # items ever written or let go
        self._failing = False
        self._stopping = False
        self._waiters = 0  # threads in wait_written
        self._thread: threading.Thread | None = None
        self._pragmas: list[str] = []  # statements to run on the writer's own connection (tests, faults)

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="blockradar-store-writer",
                                        daemon=True)
        self._thread.start()
        ready.wait(10.0)

    # -- what the loop queues ------------------------------------------------------------------------
    def add(self, row: OutcomeRow) -> None:
        """Queue one outcome row (any thread); never blocks."""
        self._queue(row)

    def save_alert_states(self, rows: list[AlertStateValues]) -> None:
        """Queue alert states (``AlertStateRow.encoded()``: encoded by the caller, so this thread only binds
        them) to be upserted after every row queued before."""
        if rows:
            self._queue(_Job(lambda store: store.save_alert_states(rows), len(rows)))

    def record_alert(self, fingerprint: str, threshold: str, severity: str | None, scope: dict[str, str],
                     fired_at: float, resolved_at: float | None = None) -> None:
        """Queue an alert episode's firing or resolve (``Store.record_alert``)."""
        self._queue(_Job(lambda store: store.record_alert(fingerprint, threshold, severity, scope, fired_at,
                                                          resolved_at)))

    def log_actions(self, decisions: list[dict[str, Any]], states: list[dict[str, Any]],
                    after: Callable[[], None] | None = None) -> None:
        """Queue action decisions (the audit log, and the queue of what runs) with the guardrail states they
        changed (``Store.log_actions``): written together, behind the alert states that caused them;
        ``after`` is called (on the writer's thread) once they are committed."""
        if decisions or states:
            self._queue(_Job(lambda store: store.log_actions(decisions, states), len(decisions) + len(states), after))

    def prune(self, outcomes_before: float, outbox_before: float) -> None:
        """Queue the retention's deletes: outcomes older than ``outcomes_before`` (``PRUNE_ROWS`` per
        transaction), then finished outbox rows older than ``outbox_before``; logs what went."""
        total = [0]

        def step(store: Store) -> bool:
            pruned = store.prune_outcomes(outcomes_before, limit=PRUNE_ROWS)
            total[0] += pruned
            if pruned >= PRUNE_ROWS:
                return True  # more to go, behind what was queued meanwhile
            store.prune_outbox(outbox_before)
            if total[0]:
                log.info("pruned %d outcome(s) older than the retention", total[0])
            return False

        self._queue(_Job(step, PRUNE_ROWS // 10))

    def _queue(self, item: OutcomeRow | _Job) -> None:
        with self._cond:
            self._items.append(item)
            self._queued += 1
            if len(self._items) > self.max_unstored:
                self._items.popleft()
                self.dropped += 1
                self._done += 1
            self._cond.notify()

    @property
    def pending(self) -> int:
        return len(self._items)

    @property
    def failing(self) -> bool:
        return self._failing

    @property
    def accepting(self) -> bool:
        """Started, running and not closing: what is queued now will be written."""
        return self.alive and not self._stopping

    def wait_written(self, timeout_s: float) -> bool:
        """Wait until everything queued so far is written (or let go); False on timeout, or at once while
        the store refuses writes (waiting would not help)."""
        with self._cond:
            target = self._queued
            self._waiters += 1
            self._cond.notify_all()  # no lingering for a group commit: somebody waits
            try:
                return self._cond.wait_for(lambda: self._done >= target or self._failing or self._stopping
                                           or not self.alive, timeout_s) and self._done >= target
            finally:
                self._waiters -= 1

    @property
    def alive(self) -> bool:
        """The writer thread runs (a dead one is said in the log and in the daemon's health)."""
        return self._thread is not None and self._thread.is_alive()

    def run_on_connection(self, sql: str) -> None:
        """Run a statement on the writer's own connection before its next write (``PRAGMA`` faults in tests)."""
        with self._cond:
            self._pragmas.append(sql)
            self._cond.notify()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout_s``) and stop."""
        self.wait_written(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the thread --------------------------------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        store: Store | None = None
        try:
            store = Store(self.path, busy_timeout_s=self.busy_timeout_s)  # this thread's own connection
            ready.set()
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._items) or bool(self._pragmas) or self._stopping)
                    # group commit: one transaction (one fsync) for what arrives within LINGER_S, unless
                    # somebody waits for it or a batch is full
                    self._cond.wait_for(lambda: len(self._items) >= BATCH_ROWS or self._waiters or self._stopping
                                        or bool(self._pragmas), LINGER_S)
                    if self._stopping and not self._items:
                        return
                    pragmas, self._pragmas = self._pragmas, []
                    batch = self._head()
                    dropped_before = self.dropped
                for sql in pragmas:
                    store._db.execute(sql)
                if batch and not self._write(store, batch, dropped_before) and not self._stopping:
                    time.sleep(self.retry_s)
        except Exception:  # never a silent death: say it, the daemon's health shows the rows waiting
            log.exception("the store writer stopped; outcomes and alert states are no longer written")
        finally:
            ready.set()
            if store is not None:
                store.close()
            with self._cond:
                self._cond.notify_all()  # whoever waits for rows to be written: they will not be

    def _head(self) -> list[OutcomeRow | _Job]:
        """The front of the queue, up to ``BATCH_ROWS`` rows' worth (at least one item)."""
        batch: list[OutcomeRow | _Job] = []
        weight = 0
        for item in self._items:
            weight += item.rows if isinstance(item, _Job) else 1
            if batch and weight > BATCH_ROWS:
                break
            batch.append(item)
        return batch

    def _write(self, store: Store, batch: list[OutcomeRow | _Job], dropped_before: int) -> bool:
        """``batch`` (the head of the queue) in one transaction, in order: runs of rows as multi-row
        inserts, each job in its place."""
        again: list[_Job] = []
        afters: list[Callable[[], None]] = []
        rows = 0
        try:
            with store.batch():
                run: list[OutcomeRow] = []
                for item in batch:
                    if isinstance(item, _Job):
                        store.add_outcome_rows(run)
                        rows += len(run)
                        run = []
                        if item.run(store):
                            again.append(item)
                        if item.after is not None:
                            afters.append(item.after)
                    else:
                        run.append(item)
                store.add_outcome_rows(run)
                rows += len(run)
        except STORE_ERRORS as exc:
            with self._cond:
                self._failing = True
                self._cond.notify_all()
            if self.on_error is not None:
                self.on_error(exc)
            return False
        recovered = False
        with self._cond:
            # the batch was the front of the queue; _queue() may have let some of it go meanwhile (counted then)
            still_queued = len(batch) - min(len(batch), self.dropped - dropped_before)
            for _ in range(still_queued):
                self._items.popleft()
            self._done += still_queued
            self.written += rows
            self.commits += 1
            for job in again:  # the rest of a prune, behind what arrived meanwhile
                self._items.append(job)
                self._queued += 1
            if self._failing:
                self._failing = False
                recovered = True
            self._cond.notify_all()
        if recovered and self.on_ok is not None:
            self.on_ok()
        for after in afters:
            after()
        return True
