"""The store writer thread (issue 12): rows, alert states and prunes reach the store in the order they
were queued and in batches, nothing is lost across a failing store, nobody waits for a writer that has
died; and the loop's own transactions (``Store.write_through``) begin only when they write, after the
writer has caught up."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from blockradar.store import AlertStateRow, Store
from blockradar.storewriter import StoreWriter

pytestmark = pytest.mark.timeout(30)


def row(i: int) -> tuple:
    return (1_795_000_000.0 + i, "pbx1", f"call-{i}", f"+1555000{i:04d}", "carrier-a", "answered", 200, "{}")


def stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:  # a reader beside the writer (WAL), in insertion order
        return [call_id for (call_id,) in db.execute("SELECT call_id FROM outcomes ORDER BY id")]


def test_rows_are_written_in_order_and_wait_written_means_written(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    writer = StoreWriter(path)
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
    writer = StoreWriter(path, on_error=errors.append, on_ok=lambda: oks.append(True), retry_s=0.05,
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
    writer = StoreWriter(path)
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


def state(fp: str, state: str = "firing") -> AlertStateRow:
    return AlertStateRow(fp, "strong", {"caller_number": fp}, state, 1.0, 2.0, None, True, {"count": 3})


def test_states_and_rows_are_written_in_the_order_they_were_queued(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    writer = StoreWriter(path)
    writer.start()
    seen: list[tuple[int, int]] = []
    for i in range(300):
        writer.add(row(i))
        writer.save_alert_states([state(f"fp{i}").encoded()])
    assert writer.wait_written(10.0)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT count(*) FROM outcomes").fetchone()[0]
        states = db.execute("SELECT fingerprint, state, snapshot FROM alert_states ORDER BY fingerprint").fetchall()
        seen.append((rows, len(states)))
    assert seen == [(300, 300)]
    assert states[0] == ("fp0", "firing", '{"count": 3}')
    writer.save_alert_states([state("fp0", "resolved").encoded()])  # an upsert, not a second row
    writer.close()
    with Store(path) as store:
        assert [(r["fingerprint"], r["state"]) for r in store.load_alert_states() if r["fingerprint"] == "fp0"] == [
            ("fp0", "resolved")]


def test_many_small_writes_are_committed_together(tmp_path: Path):
    path = tmp_path / "s.db"
    Store(path).close()
    writer = StoreWriter(path)
    writer.start()
    for i in range(2000):  # queued faster than a commit takes: gathered, not one transaction each
        writer.add(row(i))
        time.sleep(0) if i % 50 else time.sleep(0.001)
    assert writer.wait_written(10.0)
    assert stored(path) == [f"call-{i}" for i in range(2000)]
    assert writer.commits < 200, writer.commits  # 2,000 rows in under 200 transactions
    writer.close()


def test_a_prune_deletes_in_chunks_behind_the_rows_queued_meanwhile(tmp_path: Path, caplog,
                                                                    monkeypatch: pytest.MonkeyPatch):
    import blockradar.storewriter as storewriter

    monkeypatch.setattr(storewriter, "PRUNE_ROWS", 100)
    caplog.set_level(logging.INFO, logger="blockradar")
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.add_outcome_rows([row(i) for i in range(450)])  # at 1_795_000_000 + i
    writer = StoreWriter(path)
    writer.start()
    writer.prune(1_795_000_000.0 + 400, outbox_before=0.0)  # the 400 oldest go, 100 a transaction
    for i in range(1000, 1010):
        writer.add(row(i))
    assert writer.wait_written(10.0)
    deadline = time.monotonic() + 10
    while writer.pending and time.monotonic() < deadline:  # the prune's later chunks were queued again
        time.sleep(0.01)
    assert stored(path) == [f"call-{i}" for i in [*range(400, 450), *range(1000, 1010)]]
    assert [r.getMessage() for r in caplog.records if "pruned" in r.getMessage()] == [
        "pruned 400 outcome(s) older than the retention"]
    writer.close()


def test_the_loops_transaction_begins_at_its_first_write_after_the_writer_caught_up(tmp_path: Path):
    path = tmp_path / "s.db"
    store = Store(path)
    writer = StoreWriter(path)
    writer.start()
    caught_up: list[int] = []

    def before_write() -> None:
        writer.wait_written(5.0)
        caught_up.append(len(stored(path)))

    store.before_write = before_write
    assert store.write_through(lambda: "judged in memory") == "judged in memory"
    assert caught_up == []  # nothing written: no wait, no transaction
    for i in range(50):
        writer.add(row(i))

    def work() -> str:
        store.save_group("g", {"threshold": "strong"}, 1.0, ["fp1"], [])
        store.save_group("h", {"threshold": "strong"}, 1.0, ["fp2"], [])
        return "notified"

    assert store.write_through(work) == "notified"
    assert caught_up == [50]  # the writer's rows were on disk before the loop's one transaction began
    assert [g["key"] for g in store.load_groups()] == ["g", "h"]
    writer.close()
    store.close()


def test_a_store_that_refuses_the_loops_transaction_reports_once_and_keeps_the_work(tmp_path: Path):
    store = Store(tmp_path / "s.db")
    errors: list[BaseException] = []
    store.on_write_error = errors.append
    store._db.execute("PRAGMA query_only=1")
    done: list[str] = []

    def work() -> str:
        done.append("judged")
        with pytest.raises(sqlite3.OperationalError):
            store.save_group("g", {}, 1.0, [], [])  # the lifecycle survives a failing write like this
        done.append("notified from memory")
        return "done"

    assert store.write_through(work) == "done"
    assert done == ["judged", "notified from memory"] and len(errors) == 1
    nested = store.write_through(lambda: store.write_through(lambda: store.save_group("g", {}, 1.0, [], [])))
    assert nested is None and len(errors) == 2  # failed inside a nested one: reported once, not raised
    store.close()
