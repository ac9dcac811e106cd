"""Call outcomes to the store on a thread of their own, so the event loop never waits for SQLite.

Every outcome is one row; at thousands a second their inserts and commits (an fsync each, and the
GIL to win back from the ESL thread after each SQLite call) held the daemon's event loop 4-16 ms
per batch in the bench. ``OutcomeWriter`` owns a second connection to the same store (WAL: one
writer at a time, readers never blocked) on its own thread: ``add`` queues a row (never blocks),
the thread writes what is queued in batches with ``Store.add_outcome_rows``.

The one rule the store keeps (an alert transition or a notification never on disk without the
outcomes it rests on) is kept by the daemon: before it commits alert work it calls ``wait_written``,
which returns once every row queued so far is committed (a short wait, once per tick).

When the store refuses a write (disk full, read-only, damaged), the rows stay queued (at most
``max_unstored``; beyond, the oldest are let go and counted in ``dropped``), ``on_error`` is told
(from this thread), and the batch is tried again every ``retry_s``; the first write that succeeds
calls ``on_ok``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from blockradar.store import STORE_ERRORS, OutcomeRow, Store

log = logging.getLogger(__name__)

BATCH_ROWS = 500


class OutcomeWriter:
    """Writes queued outcome rows to ``path`` on its own thread (see the module docstring)."""

    def __init__(self, path: str | Path, *, on_error: Callable[[BaseException], None] | None = None,
                 on_ok: Callable[[], None] | None = None, max_unstored: int = 50_000, retry_s: float = 1.0,
                 busy_timeout_s: float = 5.0) -> None:
        self.path = str(path)
        self.on_error = on_error
        self.on_ok = on_ok
        self.max_unstored = max_unstored
        self.retry_s = retry_s
        self.busy_timeout_s = busy_timeout_s
        self.dropped = 0  # rows let go while the store could not take them (beyond max_unstored)
        self.written = 0
        self._rows: collections.deque[OutcomeRow] = collections.deque()
        self._cond = threading.Condition()
        self._queued = 0  # rows ever queued
        self._done = 0  # rows ever written or let go
        self._failing = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pragmas: list[str] = []  # statements to run on the writer's own connection (tests, faults)

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="blockradar-outcome-writer",
                                        daemon=True)
        self._thread.start()
        ready.wait(10.0)

    def add(self, row: OutcomeRow) -> None:
        """Queue one row (any thread); never blocks."""
        with self._cond:
            self._rows.append(row)
            self._queued += 1
            if len(self._rows) > self.max_unstored:
                self._rows.popleft()
                self.dropped += 1
                self._done += 1
            self._cond.notify()

    @property
    def pending(self) -> int:
        return len(self._rows)

    @property
    def failing(self) -> bool:
        return self._failing

    def wait_written(self, timeout_s: float) -> bool:
        """Wait until every row queued so far is written (or let go); False on timeout, or at once while
        the store refuses writes (waiting would not help)."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._done >= target or self._failing or self._stopping
                                       or not self.alive, timeout_s) and self._done >= target

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
                    self._cond.wait_for(lambda: bool(self._rows) or bool(self._pragmas) or self._stopping)
                    if self._stopping and not self._rows:
                        return
                    pragmas, self._pragmas = self._pragmas, []
                    batch = [self._rows[i] for i in range(min(len(self._rows), BATCH_ROWS))]
                    dropped_before = self.dropped
                for sql in pragmas:
                    store._db.execute(sql)
                if batch and not self._write(store, batch, dropped_before) and not self._stopping:
                    time.sleep(self.retry_s)
        except Exception:  # never a silent death: say it, the daemon's health shows the rows waiting
            log.exception("the outcome writer stopped; outcomes are no longer written to the store")
        finally:
            ready.set()
            if store is not None:
                store.close()
            with self._cond:
                self._cond.notify_all()  # whoever waits for rows to be written: they will not be

    def _write(self, store: Store, batch: list[OutcomeRow], dropped_before: int) -> bool:
        try:
            store.add_outcome_rows(batch)
        except STORE_ERRORS as exc:
            with self._cond:
                self._failing = True
                self._cond.notify_all()
            if self.on_error is not None:
                self.on_error(exc)
            return False
        recovered = False
        with self._cond:
            # the batch was the front of the queue; add() may have let some of it go meanwhile (counted then)
            still_queued = len(batch) - min(len(batch), self.dropped - dropped_before)
            for _ in range(still_queued):
                self._rows.popleft()
            self._done += still_queued
            self.written += len(batch)
            if self._failing:
                self._failing = False
                recovered = True
            self._cond.notify_all()
        if recovered and self.on_ok is not None:
            self.on_ok()
        return True
