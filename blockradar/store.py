"""The SQLite store: outcomes (with retention), alert states, alert groups, silences and the outbox.

One file, WAL journal, ``synchronous=FULL`` for the outbox's durability promise (a committed
enqueue survives ``kill -9`` and power loss), a busy timeout so the CLI can add a silence while
the daemon runs. Safe for one writer process (the daemon) plus short-lived CLI writers. The schema
is versioned in ``PRAGMA user_version``; ``migrate`` brings an older file up to date and refuses a
newer one. Every public method commits its own transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from blockradar.alerting.silences import Matcher, Silence
from blockradar.classification import Classification
from blockradar.outcome import CallOutcome
from blockradar.redress import Redress

SCHEMA_VERSION = 6

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,                 -- event time: ended_at, else started_at
    connector TEXT NOT NULL,
    call_id TEXT NOT NULL,
    caller_number TEXT,
    trunk TEXT,
    category TEXT,
    sip_code INTEGER,
    data TEXT NOT NULL                -- CallOutcome.to_dict() as JSON, plus ended/started epoch floats
);
CREATE INDEX IF NOT EXISTS outcomes_at ON outcomes(at);
CREATE TABLE IF NOT EXISTS alert_states (
    fingerprint TEXT PRIMARY KEY,
    threshold TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL,
    fired_at REAL,
    resolved_at REAL,
    notified INTEGER NOT NULL DEFAULT 0,
    snapshot TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_groups (
    key TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    last_sent_at REAL,
    notified_firing TEXT NOT NULL,
    notified_resolved TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    comment TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    notification_id TEXT NOT NULL,
    notifier TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,             -- pending | sent | failed | expired | dropped | superseded | told
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    sent_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(notifier, status, next_attempt_at);
"""

# v2: the outbox delivers in order per notifier and a newer message of a group supersedes a queued
# older one, so each row knows its alert group
_SCHEMA_V2 = """
ALTER TABLE outbox ADD COLUMN group_key TEXT;
UPDATE outbox SET group_key = json_extract(payload, '$.group_key') WHERE json_valid(payload);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox(notifier, status, id);
"""

# v3: a calling number's outcomes by time, for its card on the status page
_SCHEMA_V3 = """
CREATE INDEX IF NOT EXISTS outcomes_caller ON outcomes(caller_number, at);
"""

# v4: every alert episode (fired, resolved), kept after its state row is gone: for reports and number cards
_SCHEMA_V4 = """
CREATE TABLE IF NOT EXISTS alert_history (
    fingerprint TEXT NOT NULL,
    threshold TEXT NOT NULL,
    severity TEXT,
    scope TEXT NOT NULL,              -- JSON object: caller_number, trunk ...
    fired_at REAL NOT NULL,
    resolved_at REAL,
    PRIMARY KEY (fingerprint, fired_at)
);
CREATE INDEX IF NOT EXISTS alert_history_fired ON alert_history(fired_at);
"""

# v5: what actions decided (apply, restore, held), and the numbers an operator holds
_SCHEMA_V5 = """
CREATE TABLE IF NOT EXISTS action_log (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    phase TEXT NOT NULL,              -- apply | restore | held
    caller_number TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    threshold TEXT,
    trunk TEXT,
    fingerprint TEXT,
    reason TEXT,
    command TEXT                      -- JSON list, what ran (or would have)
);
CREATE INDEX IF NOT EXISTS action_log_number ON action_log(caller_number, at);
CREATE INDEX IF NOT EXISTS action_log_at ON action_log(at);
CREATE TABLE IF NOT EXISTS action_holds (
    caller_number TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL
);
"""

# v6: the action log is also the actions' durable queue (a decision to run is a row ``pending`` until
# ``done`` or ``failed``, with its attempts and result); each number's guardrail state; operators' undo
_SCHEMA_V6 = """
ALTER TABLE action_log ADD COLUMN status TEXT NOT NULL DEFAULT 'decided';
ALTER TABLE action_log ADD COLUMN target TEXT;
ALTER TABLE action_log ADD COLUMN context TEXT;     -- JSON: the template fields (never a secret)
ALTER TABLE action_log ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE action_log ADD COLUMN next_attempt_at REAL;
ALTER TABLE action_log ADD COLUMN started_at REAL;
ALTER TABLE action_log ADD COLUMN finished_at REAL;
ALTER TABLE action_log ADD COLUMN result TEXT;
ALTER TABLE action_log ADD COLUMN pid INTEGER;      -- exec: the command's process, while it runs
ALTER TABLE action_log ADD COLUMN pid_start INTEGER;
UPDATE action_log SET status = CASE WHEN phase = 'held' THEN 'held' WHEN dry_run = 1 THEN 'dry-run'
                                    ELSE 'decided' END;
CREATE INDEX IF NOT EXISTS action_log_queue ON action_log(action, id) WHERE status IN ('pending', 'running');
CREATE TABLE IF NOT EXISTS action_state (
    action TEXT NOT NULL,
    caller_number TEXT NOT NULL,
    resting_since REAL,
    restore_due REAL,
    restored_at REAL,
    waiting INTEGER,
    alert_fired_at REAL,
    context TEXT,
    dry_run INTEGER NOT NULL DEFAULT 1,  -- the state of a dry run is never taken for a real one
    PRIMARY KEY (action, caller_number)
);
CREATE TABLE IF NOT EXISTS action_requests (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    request TEXT NOT NULL,            -- undo
    log_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    caller_number TEXT NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    done_at REAL,
    result TEXT
);
"""

ACTION_OPEN = ("pending", "running")


T = TypeVar("T")


class StoreError(RuntimeError):
    pass


# what a write to the store raises when the disk is full, the file system read-only or the file damaged
STORE_ERRORS = (sqlite3.Error, OSError)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    notification_id: str
    notifier: str
    idempotency_key: str
    payload: str
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float
    expires_at: float
    sent_at: float | None
    last_error: str | None
    group_key: str | None = None


class StoreLock:
    """One daemon per store: an exclusive ``flock`` on ``<store>.lock``, which holds the holder's pid. Two
    daemons on one store delivered half their notifications twice (the audit: 2,509 of 4,902). The kernel
    drops the lock with the process, kill -9 included, so a crash never leaves it stale."""

    def __init__(self, store: str | Path) -> None:
        self.path = Path(f"{store}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; StoreError naming the holder's pid when another process has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(f"{str(self.path)[:-5]} is in use by another blockradar daemon (pid {holder}); "
                             f"run one daemon per store") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def held_by_another(self) -> bool:
        """Whether a daemon holds the store now (a look, the lock is not kept)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False


def store_problem(path: str | Path) -> str | None:
    """Why the daemon could not open its store at ``path`` (None: it can), without creating or changing
    anything: an existing file must be a blockradar store this version can read; a new one needs a
    writable directory (or one that can be created)."""
    target = Path(path)
    if target.exists():
        if not target.is_file():
            return f"{target} is not a file"
        try:
            db = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True)
            try:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                db.close()
        except sqlite3.Error as exc:
            return f"cannot read {target}: {exc}"
        if version > SCHEMA_VERSION:
            return f"{target}: schema version {version} is newer than this blockradar ({SCHEMA_VERSION})"
        if not os.access(target, os.R_OK | os.W_OK):
            return f"{target} is not writable"
        return None
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {target}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {target}: {parent} is not writable"
    return None


_ROWS_PER_INSERT = 500  # x 8 columns: well under SQLite's 32,766 parameters


@functools.lru_cache(maxsize=8)
def _insert_outcomes(n: int) -> str:
    return ("INSERT INTO outcomes(at, connector, call_id, caller_number, trunk, category, sip_code, data) VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?)"] * n))


@functools.lru_cache(maxsize=8)
def _upsert_alert_states(n: int) -> str:
    return ("INSERT INTO alert_states(fingerprint, threshold, labels, state, started_at, fired_at, resolved_at, "
            "notified, snapshot, updated_at) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * n) +
            " ON CONFLICT(fingerprint) DO UPDATE SET threshold=excluded.threshold, labels=excluded.labels, "
            "state=excluded.state, started_at=excluded.started_at, fired_at=excluded.fired_at, "
            "resolved_at=excluded.resolved_at, notified=excluded.notified, "
            "snapshot=COALESCE(excluded.snapshot, alert_states.snapshot), updated_at=excluded.updated_at")


@dataclass(frozen=True, slots=True)
class AlertStateRow:
    """One alert's state as ``save_alert_states`` writes it."""

    fingerprint: str
    threshold: str
    labels: dict[str, str]
    state: str
    started_at: float | None
    fired_at: float | None
    resolved_at: float | None
    notified: bool
    snapshot: dict[str, Any] | None

    def encoded(self) -> AlertStateValues:
        """The row as ``save_alert_states`` binds it (labels and snapshot as JSON): made by whoever queues
        it, so the thread that writes only binds."""
        return (self.fingerprint, self.threshold, json.dumps(self.labels), self.state, self.started_at,
                self.fired_at, self.resolved_at, int(self.notified),
                json.dumps(self.snapshot) if self.snapshot is not None else None)


AlertStateValues = tuple[Any, ...]  # AlertStateRow.encoded()
OutcomeRow = tuple[Any, ...]  # (at, connector, call_id, caller_number, trunk, category, sip_code, data JSON)


class Store:
    """The daemon's state on disk. ``path`` may be ``":memory:"`` for tests."""

    ERRORS = STORE_ERRORS  # for the stages the store is injected into (they do not import it)
    AlertStateRow = AlertStateRow

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # told about every write that fails (disk full, read-only, damaged) and every commit that succeeds,
        # so the daemon can say "the store is failing" once per episode and when it is over
        self.on_write_error: Callable[[BaseException], None] | None = None
        self.on_write_ok: Callable[[], None] | None = None
        # called before each transaction this connection begins: the daemon lets its store writer finish
        # what is queued (outcomes, alert states) first, so nothing here lands ahead of them on disk
        self.before_write: Callable[[], object] | None = None
        self._deferred: _Deferred | None = None  # ``write_through``'s transaction, begun at its first write
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self.migrate()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this blockradar ({SCHEMA_VERSION})")
        if version < 1:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA_V1}\n{_SCHEMA_V2}\n{_SCHEMA_V3}\n{_SCHEMA_V4}\n"
                                   f"{_SCHEMA_V5}\n{_SCHEMA_V6}\n"
                                   f"PRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")
            return
        if version < 2:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA_V2}\nPRAGMA user_version=2;\nCOMMIT;")
        if version < 3:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA_V3}\nPRAGMA user_version=3;\nCOMMIT;")
        if version < 4:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA_V4}\nPRAGMA user_version=4;\nCOMMIT;")
        if version < 5:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA_V5}\nPRAGMA user_version=5;\nCOMMIT;")
        if version < 6:
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA_V6}\nPRAGMA user_version=6;\nCOMMIT;")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _tx(self) -> _Tx:
        return _Tx(self)

    def batch(self) -> _Tx:
        """``with store.batch(): ...``: many writes, one transaction (one fsync)."""
        return _Tx(self)

    def write_through(self, work: Callable[[], T]) -> T | None:
        """``work`` in one transaction, begun only at its first write (work that writes nothing touches
        neither the disk nor ``before_write``); when the store refuses (disk full, read-only, damaged),
        the work is done up to the write that failed, its store error is reported (``on_write_error``,
        once) and never raised: what is judged in memory must not wait for the disk. Returns ``work``'s
        result, or None when the store failed under it."""
        outer = self._deferred
        if outer is not None or self._db.in_transaction:
            try:  # inside another transaction (begun or not yet): nobody else reports what fails here
                if outer is not None:
                    return work()
                with self._tx():
                    return work()
            except STORE_ERRORS as exc:
                if outer is None or outer.begun:  # a failing BEGIN was reported where it failed
                    self.report_error(exc)
                return None
        deferred = self._deferred = _Deferred()
        try:
            result = work()
        except STORE_ERRORS as exc:
            self._deferred = None
            if deferred.begun:  # a failing BEGIN was reported where it failed
                self._rollback()
                self.report_error(exc)
            return None
        except BaseException:
            self._deferred = None
            self._rollback()
            raise
        self._deferred = None
        if deferred.begun and self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except STORE_ERRORS as exc:
                self._rollback()
                self.report_error(exc)
                return None
            if self.on_write_ok is not None and self._db.total_changes > deferred.changes:
                self.on_write_ok()
        return result

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (SQLITE_FULL)
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def probe_write(self) -> None:
        """Write (and delete) one page of data: raises while the disk is full or the store read-only."""
        with self._tx():
            self._db.execute("CREATE TABLE IF NOT EXISTS write_probe (data BLOB)")
            self._db.execute("INSERT INTO write_probe VALUES (randomblob(8192))")
            self._db.execute("DELETE FROM write_probe")

    def report_error(self, exc: BaseException) -> None:
        """A write failed (also one whose error a caller chose to survive): tell ``on_write_error``."""
        if self.on_write_error is not None:
            self.on_write_error(exc)

    # -- outcomes ---------------------------------------------------------------------------------
    def add_outcomes(self, items: Iterable[tuple[CallOutcome, Classification | None]]) -> int:
        return self.add_outcome_rows([outcome_row(o, c) for o, c in items])

    def add_outcome_rows(self, rows: list[OutcomeRow]) -> int:
        """Rows made by ``outcome_row`` (the daemon makes each one as its outcome arrives, so a batch write
        is only the insert)."""
        if rows:
            with self._tx():
                # one statement per 500 rows, not one per row: the sqlite3 module lets go of the GIL around
                # every step, and with the ESL thread busy each step then waits to get it back (executemany
                # of 500 rows held the event loop 28 ms in the bench's burst; one statement, about 2)
                for start in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[start:start + _ROWS_PER_INSERT]
                    self._db.execute(_insert_outcomes(len(chunk)), [v for row in chunk for v in row])
        return len(rows)

    def add_outcome(self, outcome: CallOutcome, classification: Classification | None = None) -> None:
        self.add_outcomes([(outcome, classification)])

    def iter_outcomes(self, since: float, until: float | None = None) -> Iterator[CallOutcome]:
        """Stored outcomes with event time >= ``since`` (and < ``until``), oldest first."""
        sql = "SELECT data FROM outcomes WHERE at >= ?"
        args: list[Any] = [since]
        if until is not None:
            sql += " AND at < ?"
            args.append(until)
        sql += " ORDER BY at, id"
        for row in self._db.execute(sql, args):
            yield _outcome_from(json.loads(row[0]))

    def outcome_rows(self, since: float) -> list[dict[str, Any]]:
        """Compact rows for reports: at, connector, caller_number, trunk, category, sip_code."""
        cur = self._db.execute(
            "SELECT at, connector, caller_number, trunk, category, sip_code FROM outcomes WHERE at >= ? "
            "ORDER BY at, id", (since,))
        return [dict(r) for r in cur]

    def report_rows(self, since: float) -> Iterator[dict[str, Any]]:
        """Rows for ``blockradar report``: the compact columns plus phrase, answered and redress."""
        cur = self._db.execute(
            "SELECT at, connector, caller_number, trunk, category, sip_code, "
            "json_extract(data, '$.sip_phrase') AS sip_phrase, json_extract(data, '$.answered') AS answered, "
            "json_extract(data, '$.redress') AS redress FROM outcomes WHERE at >= ? ORDER BY at, id", (since,))
        for row in cur:
            item = dict(row)
            item["answered"] = bool(item["answered"])
            item["redress"] = json.loads(item["redress"]) if item["redress"] else None
            yield item

    def prune_outcomes(self, before: float, limit: int | None = None) -> int:
        """Delete outcomes older than ``before`` (at most ``limit``, oldest first); returns how many."""
        with self._tx():
            if limit is None:
                return self._db.execute("DELETE FROM outcomes WHERE at < ?", (before,)).rowcount
            return self._db.execute("DELETE FROM outcomes WHERE rowid IN (SELECT rowid FROM outcomes WHERE at < ? "
                                    "ORDER BY at LIMIT ?)", (before, limit)).rowcount

    def count_outcomes(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outcomes").fetchone()[0])

    # -- alert states and groups -------------------------------------------------------------------
    def save_alert_state(self, fingerprint: str, *, threshold: str, labels: dict[str, str], state: str,
                         started_at: float | None, fired_at: float | None, resolved_at: float | None,
                         notified: bool, snapshot: dict[str, Any] | None) -> None:
        self.save_alert_states([AlertStateRow(fingerprint, threshold, labels, state, started_at, fired_at,
                                              resolved_at, notified, snapshot)])

    def save_alert_states(self, rows: list[AlertStateRow] | list[AlertStateValues]) -> None:
        """Upsert many alert states (rows, or their ``encoded()`` values) in one statement per 500 (see
        ``add_outcome_rows`` on why few statements); a row without a snapshot keeps the stored one."""
        if not rows:
            return
        now = time.time()
        with self._tx():
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                values: list[Any] = []
                for r in rows[start:start + _ROWS_PER_INSERT]:
                    values += r.encoded() if isinstance(r, AlertStateRow) else r
                    values.append(now)
                self._db.execute(_upsert_alert_states(len(values) // 10), values)

    def load_alert_states(self, state: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM alert_states"
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state,)
        out = []
        for r in self._db.execute(sql + " ORDER BY fingerprint", args):
            row = dict(r)
            row["labels"] = json.loads(row["labels"])
            row["snapshot"] = json.loads(row["snapshot"]) if row["snapshot"] else None
            row["notified"] = bool(row["notified"])
            out.append(row)
        return out

    def delete_alert_state(self, fingerprint: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM alert_states WHERE fingerprint = ?", (fingerprint,))

    def record_alert(self, fingerprint: str, threshold: str, severity: str | None, scope: dict[str, str],
                     fired_at: float, resolved_at: float | None = None) -> None:
        """An alert episode: its firing (``resolved_at`` None), then its resolve (the same row, by fired_at)."""
        with self._tx():
            self._db.execute(
                "INSERT INTO alert_history(fingerprint, threshold, severity, scope, fired_at, resolved_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(fingerprint, fired_at) DO UPDATE SET "
                "resolved_at=excluded.resolved_at",
                (fingerprint, threshold, severity, json.dumps(scope, sort_keys=True), fired_at, resolved_at))

    def alert_history(self, since: float, scope_key: str | None = None, value: str | None = None,
                      limit: int = 1000) -> list[dict[str, Any]]:
        """Alert episodes that fired, or were still firing, after ``since`` (optionally of one scope value),
        newest first."""
        sql = "SELECT * FROM alert_history WHERE (fired_at >= ? OR resolved_at IS NULL OR resolved_at >= ?)"
        args: list[Any] = [since, since]
        if scope_key is not None:
            sql += " AND json_extract(scope, ?) = ?"
            args += [f"$.{scope_key}", value]
        rows = self._db.execute(sql + " ORDER BY fired_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [{**dict(r), "scope": json.loads(r["scope"])} for r in rows]

    # -- actions -------------------------------------------------------------------------------------
    def log_actions(self, decisions: list[dict[str, Any]], states: list[dict[str, Any]] | None = None) -> None:
        """Action decisions (``ActionDecision.to_dict()`` with its ``context``) and the guardrail states they
        changed, in one transaction: a decision to run is queued (``pending``) as it is logged."""
        with self._tx():
            if decisions:
                self._db.executemany(
                    "INSERT INTO action_log(at, action, phase, caller_number, dry_run, threshold, trunk, fingerprint, "
                    "reason, command, status, target, context, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [(d["at"], d["action"], d["phase"], d["caller_number"], int(bool(d["dry_run"])),
                      d.get("threshold"), d.get("trunk"), d.get("fingerprint"), d.get("reason"),
                      json.dumps(d["command"]) if d.get("command") is not None else None,
                      d.get("status") or ("held" if d["phase"] == "held" else "dry-run" if d["dry_run"] else "pending"),
                      d.get("target"), json.dumps(d.get("context") or {}), d["at"]) for d in decisions])
            for st in states or ():
                if st.get("empty"):
                    self._db.execute("DELETE FROM action_state WHERE action = ? AND caller_number = ?",
                                     (st["action"], st["caller_number"]))
                    continue
                self._db.execute(
                    "INSERT OR REPLACE INTO action_state(action, caller_number, resting_since, restore_due, "
                    "restored_at, waiting, alert_fired_at, context, dry_run) VALUES (?,?,?,?,?,?,?,?,?)",
                    (st["action"], st["caller_number"], st.get("resting_since"), st.get("restore_due"),
                     st.get("restored_at"), st.get("waiting"), st.get("alert_fired_at"),
                     json.dumps(st.get("context") or {}), int(bool(st.get("dry_run", True)))))

    def action_log(self, since: float, caller_number: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Decisions since ``since`` (of one number), oldest first."""
        sql, args = "SELECT * FROM action_log WHERE at >= ?", [since]
        if caller_number is not None:
            sql += " AND caller_number = ?"
            args.append(caller_number)
        rows = self._db.execute(sql + " ORDER BY at, id LIMIT ?", (*args, limit)).fetchall()
        return [_action_row(r) for r in rows]

    def action_row(self, log_id: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM action_log WHERE id = ?", (log_id,)).fetchone()
        return _action_row(row) if row is not None else None

    def action_states(self, action: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM action_state", ()
        if action is not None:
            sql, args = sql + " WHERE action = ?", (action,)
        return [{**dict(r), "context": json.loads(r["context"] or "{}")} for r in self._db.execute(sql, args)]

    def action_applies_since(self, action: str, since: float, dry_run: bool) -> list[float]:
        """When the action applied (dry run or not, as it is now), for the hourly cap after a restart."""
        return [r[0] for r in self._db.execute(
            "SELECT at FROM action_log WHERE action = ? AND phase = 'apply' AND at >= ? AND status != 'held' "
            "AND dry_run = ?", (action, since, int(dry_run)))]

    def resting_numbers(self) -> list[dict[str, Any]]:
        """What rests now, per (action, number), with the apply that rested it."""
        rows = self._db.execute(
            "SELECT s.action, s.caller_number, s.resting_since, s.restore_due, a.id, a.at, s.dry_run, a.threshold, "
            "a.status, a.target, a.result FROM action_state s LEFT JOIN action_log a ON a.id = (SELECT max(id) FROM "
            "action_log l WHERE l.action = s.action AND l.caller_number = s.caller_number AND l.phase = 'apply') "
            "WHERE s.resting_since IS NOT NULL ORDER BY s.resting_since").fetchall()
        return [{**dict(r), "dry_run": bool(r["dry_run"])} for r in rows]

    # the queue: a worker per action; each number's rows in order, the numbers side by side
    def action_head(self, action: str) -> dict[str, Any] | None:
        """The next row to run: of each number's oldest open row, one left running (in doubt) first, else
        the one due soonest (a number whose run keeps failing does not hold the others back)."""
        row = self._db.execute(
            "SELECT * FROM action_log WHERE id IN (SELECT min(id) FROM action_log WHERE action = ? AND status IN "
            "('pending', 'running') GROUP BY caller_number) ORDER BY status != 'running', "
            "coalesce(next_attempt_at, 0), id LIMIT 1", (action,)).fetchone()
        return _action_row(row) if row is not None else None

    def action_depth(self, action: str | None = None) -> int:
        sql, args = "SELECT count(*) FROM action_log WHERE status IN ('pending', 'running')", ()
        if action is not None:
            sql, args = sql + " AND action = ?", (action,)
        return int(self._db.execute(sql, args).fetchone()[0])

    def action_queued_names(self) -> set[str]:
        return {r[0] for r in self._db.execute(
            "SELECT DISTINCT action FROM action_log WHERE status IN ('pending', 'running')")}

    def action_started(self, log_id: int, now: float) -> None:
        with self._tx():
            self._db.execute("UPDATE action_log SET status = 'running', attempts = attempts + 1, started_at = ?, "
                             "pid = NULL, pid_start = NULL WHERE id = ?", (now, log_id))

    def action_process(self, log_id: int, pid: int, start_ticks: int | None) -> None:
        with self._tx():
            self._db.execute("UPDATE action_log SET pid = ?, pid_start = ? WHERE id = ?", (pid, start_ticks, log_id))

    def action_retry(self, log_id: int, next_attempt_at: float, result: str) -> None:
        with self._tx():
            self._db.execute("UPDATE action_log SET status = 'pending', next_attempt_at = ?, result = ?, pid = NULL "
                             "WHERE id = ?", (next_attempt_at, result, log_id))

    def action_finished(self, log_id: int, status: str, result: str, now: float) -> None:
        with self._tx():
            self._db.execute("UPDATE action_log SET status = ?, result = ?, finished_at = ?, pid = NULL WHERE id = ?",
                             (status, result, now, log_id))

    def action_request(self, request: str, log_id: int, action: str, caller_number: str, author: str, comment: str,
                       now: float) -> int:
        with self._tx():
            cur = self._db.execute("INSERT INTO action_requests(at, request, log_id, action, caller_number, author, "
                                   "comment) VALUES (?,?,?,?,?,?,?)",
                                   (now, request, log_id, action, caller_number, author, comment))
            return int(cur.lastrowid or 0)

    def action_requests(self, open_only: bool = True) -> list[dict[str, Any]]:
        sql = "SELECT * FROM action_requests" + (" WHERE done_at IS NULL" if open_only else "") + " ORDER BY id"
        return [dict(r) for r in self._db.execute(sql)]

    def action_request_done(self, request_id: int, result: str, now: float) -> None:
        with self._tx():
            self._db.execute("UPDATE action_requests SET done_at = ?, result = ? WHERE id = ?",
                             (now, result, request_id))

    def hold_number(self, caller_number: str, author: str, comment: str, now: float) -> None:
        with self._tx():
            self._db.execute("INSERT OR REPLACE INTO action_holds(caller_number, created_at, author, comment) "
                             "VALUES (?,?,?,?)", (caller_number, now, author, comment))

    def release_number(self, caller_number: str) -> bool:
        with self._tx():
            return self._db.execute("DELETE FROM action_holds WHERE caller_number = ?",
                                    (caller_number,)).rowcount > 0

    def held_numbers(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM action_holds ORDER BY created_at")]

    def save_group(self, key: str, labels: dict[str, str], last_sent_at: float | None, notified_firing: list[str],
                   notified_resolved: list[str]) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO alert_groups(key, labels, last_sent_at, notified_firing, notified_resolved) "
                "VALUES (?,?,?,?,?)",
                (key, json.dumps(labels), last_sent_at, json.dumps(notified_firing), json.dumps(notified_resolved)),
            )

    def load_groups(self) -> list[dict[str, Any]]:
        out = []
        for r in self._db.execute("SELECT * FROM alert_groups ORDER BY key"):
            out.append({"key": r["key"], "labels": json.loads(r["labels"]), "last_sent_at": r["last_sent_at"],
                        "notified_firing": json.loads(r["notified_firing"]),
                        "notified_resolved": json.loads(r["notified_resolved"])})
        return out

    def delete_group(self, key: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM alert_groups WHERE key = ?", (key,))

    # -- silences ---------------------------------------------------------------------------------------
    def add_silence(self, silence: Silence) -> None:
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO silences(id, matchers, starts_at, ends_at, comment, author, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (silence.id, json.dumps([str(m) for m in silence.matchers]), silence.starts_at, silence.ends_at,
                 silence.comment, silence.author, silence.created_at),
            )

    def list_silences(self, *, include_expired: bool = False, now: float | None = None) -> list[Silence]:
        sql = "SELECT * FROM silences"
        args: tuple[Any, ...] = ()
        if not include_expired:
            sql += " WHERE ends_at > ?"
            args = (time.time() if now is None else now,)
        out = []
        for r in self._db.execute(sql + " ORDER BY created_at, id", args):
            matchers = tuple(Matcher.parse(m) for m in json.loads(r["matchers"]))
            out.append(Silence(matchers, r["starts_at"], r["ends_at"], r["comment"], r["author"], r["created_at"],
                               r["id"]))
        return out

    def expire_silence(self, silence_id: str, now: float) -> bool:
        with self._tx():
            cur = self._db.execute("UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
                                   (now, silence_id, now))
            return cur.rowcount > 0

    # -- outbox ---------------------------------------------------------------------------------------
    def outbox_add(self, notification_id: str, entries: Iterable[tuple[str, str, str]], now: float,
                   expires_at: float, group_key: str | None = None) -> list[int]:
        """Queue one notification for several notifiers in one transaction: (notifier, key, payload)."""
        ids = []
        with self._tx():
            for notifier, key, payload in entries:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outbox(notification_id, notifier, idempotency_key, payload, status, "
                    "created_at, next_attempt_at, expires_at, group_key) VALUES (?,?,?,?, 'pending', ?, ?, ?, ?)",
                    (notification_id, notifier, key, payload, now, now, expires_at, group_key),
                )
                if cur.rowcount == 1 and cur.lastrowid:
                    ids.append(int(cur.lastrowid))
        return ids

    def outbox_head(self, notifier: str, *, group_prefix: str | None = None) -> OutboxRow | None:
        """The oldest pending row of a notifier: the only one it may send (delivery is in order); with
        ``group_prefix``, the oldest of those groups (a fleet's daemon sends its self-alerts past a row that
        waits for the fleet's notifier)."""
        if group_prefix is None:
            row = self._db.execute(
                "SELECT * FROM outbox WHERE notifier = ? AND status = 'pending' ORDER BY id LIMIT 1",
                (notifier,)).fetchone()
        else:
            row = self._db.execute(
                "SELECT * FROM outbox WHERE notifier = ? AND status = 'pending' AND substr(group_key, 1, ?) = ? "
                "ORDER BY id LIMIT 1", (notifier, len(group_prefix), group_prefix)).fetchone()
        return OutboxRow(**dict(row)) if row is not None else None

    def outbox_pending_of_group(self, notifier: str, group_key: str, before_id: int) -> list[OutboxRow]:
        """A notifier's pending rows of one alert group older than ``before_id``, oldest first."""
        cur = self._db.execute(
            "SELECT * FROM outbox WHERE notifier = ? AND status = 'pending' AND group_key = ? AND id < ? ORDER BY id",
            (notifier, group_key, before_id))
        return [OutboxRow(**dict(r)) for r in cur]

    def outbox_supersede(self, row_id: int, by_row_id: int, payload: str) -> None:
        """Mark ``row_id`` superseded by ``by_row_id``, whose payload becomes ``payload`` (which tells both)."""
        with self._tx():
            self._db.execute("UPDATE outbox SET status='superseded', last_error=? WHERE id=? AND status='pending'",
                             (f"superseded by row {by_row_id}", row_id))
            self._db.execute("UPDATE outbox SET payload=? WHERE id=?", (payload, by_row_id))

    def outbox_mark_sent(self, row_id: int, now: float) -> None:
        with self._tx():
            self._db.execute("UPDATE outbox SET status='sent', sent_at=?, attempts=attempts+1, last_error=NULL "
                             "WHERE id=?", (now, row_id))

    def outbox_retry(self, row_id: int, next_attempt_at: float, error: str) -> None:
        with self._tx():
            self._db.execute("UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=? WHERE id=?",
                             (next_attempt_at, error[:500], row_id))

    def outbox_finish(self, row_id: int, status: str, error: str) -> None:
        """Give up on a row: ``failed`` (permanent error) or ``expired`` (past its expiry)."""
        with self._tx():
            self._db.execute("UPDATE outbox SET status=?, attempts=attempts+1, last_error=? WHERE id=?",
                             (status, error[:500], row_id))

    def outbox_drop_oldest(self, notifier: str, keep: int) -> int:
        """Bound a notifier's queue: mark its oldest pending rows ``dropped`` so at most ``keep`` remain."""
        with self._tx():
            return self._db.execute(
                "UPDATE outbox SET status='dropped', last_error='outbox full' WHERE id IN ("
                "SELECT id FROM outbox WHERE notifier=? AND status='pending' ORDER BY id "
                "LIMIT max(0, (SELECT count(*) FROM outbox WHERE notifier=? AND status='pending') - ?))",
                (notifier, notifier, keep)).rowcount

    def outbox_rows(self, notifier: str | None = None, status: str | None = None) -> list[OutboxRow]:
        sql = "SELECT * FROM outbox WHERE 1=1"
        args: list[Any] = []
        if notifier is not None:
            sql += " AND notifier = ?"
            args.append(notifier)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        return [OutboxRow(**dict(r)) for r in self._db.execute(sql + " ORDER BY id", args)]

    def outbox_depth(self, notifier: str | None = None) -> int:
        sql = "SELECT count(*) FROM outbox WHERE status = 'pending'"
        args: tuple[Any, ...] = ()
        if notifier is not None:
            sql += " AND notifier = ?"
            args = (notifier,)
        return int(self._db.execute(sql, args).fetchone()[0])

    def prune_outbox(self, before: float) -> int:
        with self._tx():
            return self._db.execute("DELETE FROM outbox WHERE status != 'pending' AND created_at < ?",
                                    (before,)).rowcount


class _Deferred:
    """``Store.write_through``'s transaction: begun (by the first ``_Tx`` inside it) or not yet."""

    __slots__ = ("begun", "changes")

    def __init__(self) -> None:
        self.begun = False
        self.changes = 0


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error) on an autocommit connection; re-entrant. The
    outermost one tells the store's ``on_write_error`` / ``on_write_ok`` how it ended. Inside
    ``write_through`` the first one begins the transaction and ``write_through`` ends it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._db = store._db
        self._outer = False
        self._changes = 0

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            store = self._store
            if store.before_write is not None:
                store.before_write()
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except STORE_ERRORS as exc:
                store.report_error(exc)
                raise
            deferred = store._deferred
            if deferred is not None:
                deferred.begun = True
                deferred.changes = self._db.total_changes
                return
            self._outer = True
            self._changes = self._db.total_changes

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if not self._outer:
            return
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except STORE_ERRORS as error:
                self._store._rollback()
                self._store.report_error(error)
                raise
            if self._store.on_write_ok is not None and self._db.total_changes > self._changes:
                self._store.on_write_ok()  # a commit that wrote something: the store takes writes
            return
        self._store._rollback()
        if isinstance(exc, STORE_ERRORS):
            self._store.report_error(exc)


def outcome_row(outcome: CallOutcome, cls: Classification | None) -> OutcomeRow:
    at = outcome.ended_at if outcome.ended_at is not None else outcome.started_at
    data = outcome.to_dict()
    data["started_ts"] = outcome.started_at
    data["ended_ts"] = outcome.ended_at
    return (at if at is not None else time.time(), outcome.connector, outcome.call_id, outcome.caller_number,
            outcome.trunk, cls.category if cls else None, outcome.sip_code, json.dumps(data, ensure_ascii=False))


def _action_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["dry_run"] = bool(out["dry_run"])
    out["command"] = json.loads(out["command"]) if out.get("command") else None
    out["context"] = json.loads(out["context"]) if out.get("context") else {}
    return out


def _outcome_from(data: dict[str, Any]) -> CallOutcome:
    red = data.get("redress")
    redress = None
    if isinstance(red, dict):
        redress = Redress(red.get("source") or "reason", bool(red.get("conformant")), red.get("url"), red.get("tel"),
                          red.get("email"), red.get("id"), red.get("location"))
    return CallOutcome(
        pbx=data["pbx"], connector=data["connector"], call_id=data["call_id"],
        started_at=data.get("started_ts"), ended_at=data.get("ended_ts"), answered=bool(data.get("answered")),
        talk_s=data.get("talk_s"), caller_number=data.get("caller_number"), caller_name=data.get("caller_name"),
        callee_number=data.get("callee_number"), trunk=data.get("trunk"), sip_code=data.get("sip_code"),
        sip_phrase=data.get("sip_phrase"), reason=data.get("reason"), q850_cause=data.get("q850_cause"),
        pbx_cause=data.get("pbx_cause"), headers=data.get("headers") or {}, call_info=data.get("call_info"),
        redress=redress, caller_number_raw=data.get("caller_number_raw"),
        callee_number_raw=data.get("callee_number_raw"), sip_call_id=data.get("sip_call_id"),
    )
