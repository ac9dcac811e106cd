"""The outcome writer thread (issue 12): rows reach the store in order and in batches, nothing is lost
across a failing store, and nobody waits for a writer that has died."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from blockradar.outcomewriter import OutcomeWriter
from blockradar.store import Store

pytestmark = pytest.mark.timeout(30)


def row(i: int) -> tuple:
    return (1_795_000_000.0 + i, "pbx1", f"call-{i}", f"+1555000{i:04d}", "carrier-a", "answered", 200, "{}")


def stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:  # a reader beside the writer (WAL), in insertion order
        return [call_id for (call_id,) in db.execute("SELECT call_id FROM outcomes ORDER BY id")]


def test_rows_are_written_in_order_and_wait_written_means_written(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    writer = OutcomeWriter(path)
    writer.start()
    for i in range(1200):
        writer.add(row(i))
    assert writer.wait_written(10.0)
    assert stored(path) == [f"call-{i}" for i in range(1200)]
    writer.close()
    assert not writer.alive


def test_a_full_disk_keeps_the_rows_and_writes_them_once_it_has_room(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    errors: list[BaseException] = []
    oks: list[bool] = []
    writer = OutcomeWriter(path, on_error=errors.append, on_ok=lambda: oks.append(True), retry_s=0.05,
                           max_unstored=300)
    writer.start()
    with sqlite3.connect(path) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    writer.run_on_connection(f"PRAGMA max_page_count={pages}")
    for i in range(400):  # more than max_unstored: the oldest 100 are let go, counted
        writer.add(row(i))
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert errors and isinstance(errors[0], sqlite3.OperationalError)
    assert not writer.wait_written(0.2)  # it does not pretend
    assert writer.failing and writer.pending <= 300
    writer.run_on_connection("PRAGMA max_page_count=1073741823")
    deadline = time.monotonic() + 10
    while (writer.failing or writer.pending) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not writer.failing and writer.pending == 0 and writer.wait_written(1.0)
    assert oks == [True]  # recovery said once
    calls = stored(path)
    assert len(calls) + writer.dropped == 400 and writer.dropped >= 100
    assert calls == sorted(calls, key=lambda c: int(c.split("-")[1]))  # in order, the newest kept
    writer.close()


def test_nobody_waits_for_a_writer_that_died(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    writer = OutcomeWriter(path)
    writer.start()
    writer.run_on_connection("THIS IS NOT SQL")  # an unexpected error in its thread: it stops, said in the log
    deadline = time.monotonic() + 5
    while writer.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not writer.alive
    writer.add(row(1))
    started = time.monotonic()
    assert writer.wait_written(5.0) is False
    assert time.monotonic() - started < 1.0
