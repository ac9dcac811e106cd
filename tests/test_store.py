"""The SQLite store: schema version, outcomes with retention, alert states, groups, silences, outbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blockradar.alerting.silences import Matcher, Silence
from blockradar.outcome import CallOutcome
from blockradar.store import SCHEMA_VERSION, Store, StoreError

T0 = 1_700_000_000.0
REASON = 'SIP;cause=603;text="v=analytics1;url=https://redress.example.com/r;tel=+18005550100"'


def outcome(i, **kw):
    return CallOutcome(pbx="ast", connector="pbx1", call_id=f"c{i}", started_at=T0 + i - 5, ended_at=T0 + i,
                       caller_number="+15557650003", caller_name="Ünïcode <x>", callee_number="+12125550100",
                       trunk="carrier-c", sip_code=603, sip_phrase="Network Blocked", reason=REASON,
                       headers={"X-Test": "1"}, **kw)


def test_schema_is_versioned_and_a_newer_file_is_refused(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_outcomes_round_trip_in_event_time_order_with_retention(tmp_path):
    with Store(tmp_path / "s.db") as store:
        originals = [outcome(i) for i in (3, 1, 2)]
        store.add_outcomes((o, None) for o in originals)
        back = list(store.iter_outcomes(since=T0 + 2))
        assert [o.call_id for o in back] == ["c2", "c3"]
        assert back[1] == originals[0]  # every field, redress included
        assert back[1].redress is not None and back[1].redress.conformant
        assert store.prune_outcomes(before=T0 + 2) == 1
        assert store.count_outcomes() == 2


def test_alert_states_and_groups_persist(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.save_alert_state("t|k=v", threshold="t", labels={"k": "v"}, state="firing", started_at=T0,
                               fired_at=T0, resolved_at=None, notified=True, snapshot={"count": 3})
        store.save_alert_state("t|k=v", threshold="t", labels={"k": "v"}, state="firing", started_at=T0,
                               fired_at=T0, resolved_at=None, notified=True, snapshot=None)  # keeps the snapshot
        store.save_group("g", {"threshold": "t"}, T0 + 30, ["t|k=v"], [])
    with Store(path) as store:
        (row,) = store.load_alert_states("firing")
        assert row["snapshot"] == {"count": 3} and row["notified"] is True and row["labels"] == {"k": "v"}
        assert store.load_groups()[0]["notified_firing"] == ["t|k=v"]
        store.delete_alert_state("t|k=v")
        store.delete_group("g")
        assert store.load_alert_states() == [] and store.load_groups() == []


def test_silences_add_list_expire(tmp_path):
    with Store(tmp_path / "s.db") as store:
        s = Silence((Matcher.parse("caller_number=+15557650003"), Matcher.parse("trunk=~carrier-.*")), T0, T0 + 7200,
                    "campaign", "ops", T0)
        store.add_silence(s)
        assert store.list_silences(now=T0 + 1) == [s]
        assert store.expire_silence(s.id, T0 + 10)
        assert not store.expire_silence(s.id, T0 + 20)
        assert store.list_silences(now=T0 + 11) == []
        assert store.list_silences(include_expired=True)[0].ends_at == T0 + 10


def test_outbox_rows_lifecycle(tmp_path):
    with Store(tmp_path / "s.db") as store:
        ids = store.outbox_add("n1", [("slack", "n1.slack", "{}"), ("email", "n1.email", "{}")], T0, T0 + 100)
        assert len(ids) == 2
        assert store.outbox_add("n1", [("slack", "n1.slack", "{}")], T0, T0 + 100) == []  # idempotent
        assert store.outbox_depth() == 2
        row = store.outbox_head("slack")
        store.outbox_retry(row.id, T0 + 5, "HTTP 500")
        assert store.outbox_head("slack").next_attempt_at == T0 + 5  # the head waits: the endpoint is paused
        store.outbox_mark_sent(row.id, T0 + 6)
        email = store.outbox_head("email")
        store.outbox_finish(email.id, "failed", "auth refused")
        assert store.outbox_depth() == 0
        assert [(r.status, r.attempts) for r in store.outbox_rows()] == [("sent", 2), ("failed", 1)]


def test_a_version_1_store_is_migrated_and_its_queue_keeps_its_groups(tmp_path):
    path = tmp_path / "v1.db"
    from blockradar.store import _SCHEMA_V1

    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V1 + "PRAGMA user_version=1;")
    db.execute("INSERT INTO outbox(notification_id, notifier, idempotency_key, payload, status, created_at, "
               "next_attempt_at, expires_at) VALUES ('n1', 'slack', 'n1.slack', ?, 'pending', 1, 1, 2)",
               ('{"group_key": "{threshold=\'x\'}", "alerts": []}',))
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 6
        indexes = {name for (name,) in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"outbox_order", "outcomes_caller"} <= indexes  # v2's and v3's
        (row,) = store.outbox_rows()
        assert row.group_key == "{threshold='x'}"
        assert store.outbox_head("slack").id == row.id


def test_a_version_5_action_log_becomes_the_actions_queue(tmp_path: Path):
    """Schema 6: a v5 store's decisions keep their meaning (dry runs and holds were never to run), and the
    new tables (guardrail state, undo requests) exist."""
    import sqlite3

    from blockradar import store as module

    path = tmp_path / "v5.db"
    db = sqlite3.connect(path)
    db.executescript(f"{module._SCHEMA_V1}\n{module._SCHEMA_V2}\n{module._SCHEMA_V3}\n{module._SCHEMA_V4}\n"
                     f"{module._SCHEMA_V5}\nPRAGMA user_version=5;")
    db.executemany("INSERT INTO action_log(at, action, phase, caller_number, dry_run) VALUES (?,?,?,?,?)",
                   [(1.0, "rest", "apply", "+15557650001", 1), (2.0, "rest", "held", "+15557650002", 1)])
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.schema_version() == 6
        assert [(r["phase"], r["status"], r["attempts"]) for r in store.action_log(0)] == [
            ("apply", "dry-run", 0), ("held", "held", 0)]
        assert store.action_depth() == 0 and store.action_states() == [] and store.action_requests() == []
