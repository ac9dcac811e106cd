"""What the status page shows that lives in the store: per trunk and per calling number, attempts,
answers and blocks by category over the last hour and day, the latest carrier rejections with their
redress contacts, and one number's card (block % by category and trunk, answer rate, talk time, short
calls, the blocking networks, redress contacts, alert history).

Each function opens the store read-only on the calling thread (the page runs them in a worker thread:
a query over a day of calls must never hold the daemon's event loop) and returns plain JSON-ready
data; ``pages`` renders it and the JSON API returns it as it is.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# what counts as "blocked" on the page: the terminating network or your provider refused the call for
# what it thinks of the number (analytics, 603+/608, provider blocks) or callees marked it unwanted (607)
BLOCKED = ("analytics_block", "provider_block", "unwanted")
SHORT_CALL_S = 6.0  # answered calls shorter than this: hang-ups a reputation engine counts against a number
HOUR, DAY = 3600.0, 86400.0
CARD_DAYS = 7  # a number's card covers this many days


@contextmanager
def read_only(path: str | Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=5.0)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def aligned(now: float, step: float, buckets: int) -> float:
    """The start of the first of ``buckets`` buckets of ``step`` seconds, on UTC boundaries of the step,
    the last one being the bucket ``now`` is in (a day chart's last bar is today, labelled today)."""
    return (now // step - (buckets - 1)) * step


def _count(entry: dict[str, Any], category: str | None, n: int) -> None:
    """Add ``n`` calls of ``category`` to a bucket or a total: attempts, by category, answered, blocked."""
    category = category or "unclassified"
    entry["attempts"] += n
    entry["categories"][category] = entry["categories"].get(category, 0) + n
    if category == "answered":
        entry["answered"] += n
    elif category in BLOCKED:
        entry["blocked"] += n


def _series(db: sqlite3.Connection, where: str, args: tuple[Any, ...], since: float, step: float,
            buckets: int) -> list[dict[str, Any]]:
    """Per time bucket from ``since``: attempts, answered, blocked (and by category)."""
    rows = db.execute(
        f"SELECT CAST((at - ?) / ? AS INTEGER) AS b, category, count(*) AS n FROM outcomes "
        f"WHERE at >= ? AND {where} GROUP BY b, category", (since, step, since, *args)).fetchall()
    out = [{"start": since + i * step, "attempts": 0, "answered": 0, "blocked": 0, "categories": {}}
           for i in range(buckets)]
    for row in rows:
        index = row["b"]
        if not 0 <= index < buckets:
            continue
        _count(out[index], row["category"], row["n"])
    return out


def _totals(db: sqlite3.Connection, group: str, since: float, where: str = "1", args: tuple[Any, ...] = (),
            limit: int = 200) -> list[dict[str, Any]]:
    rows = db.execute(
        f"SELECT {group} AS k, category, count(*) AS n FROM outcomes WHERE at >= ? AND {where} "
        f"GROUP BY k, category", (since, *args)).fetchall()
    by_key: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row["k"] if row["k"] is not None else "-"
        entry = by_key.setdefault(key, {"key": key, "attempts": 0, "answered": 0, "blocked": 0, "categories": {}})
        _count(entry, row["category"], row["n"])
    for entry in by_key.values():
        entry["answer_rate"] = _rate(entry["answered"], entry["attempts"])
        entry["block_rate"] = _rate(entry["blocked"], entry["attempts"])
    ordered = sorted(by_key.values(), key=lambda e: (-e["blocked"], -e["attempts"], e["key"]))
    return ordered[:limit]


def _rejections(db: sqlite3.Connection, since: float, where: str = "1", args: tuple[Any, ...] = (),
                limit: int = 20) -> list[dict[str, Any]]:
    """The latest blocked calls, newest first, with the carrier's code, phrase and redress."""
    marks = ",".join("?" * len(BLOCKED))
    rows = db.execute(
        f"SELECT at, caller_number, trunk, category, sip_code, data FROM outcomes WHERE at >= ? AND {where} "
        f"AND category IN ({marks}) ORDER BY at DESC LIMIT ?", (since, *args, *BLOCKED, limit)).fetchall()
    out = []
    for row in rows:
        try:
            data = json.loads(row["data"])
        except ValueError:
            data = {}
        out.append({"at": row["at"], "caller_number": row["caller_number"], "callee_number": data.get("callee_number"),
                    "trunk": row["trunk"], "category": row["category"], "sip_code": row["sip_code"],
                    "sip_phrase": data.get("sip_phrase"), "call_id": data.get("call_id"),
                    "redress": data.get("redress") if isinstance(data.get("redress"), dict) else None})
    return out


def overview(path: str | Path, now: float) -> dict[str, Any]:
    """Per trunk (last hour and day, with series), the numbers with the most blocked calls today, and the
    latest rejections."""
    with read_only(path) as db:
        trunks_day = _totals(db, "trunk", now - DAY)
        trunks_hour = {e["key"]: e for e in _totals(db, "trunk", now - HOUR)}
        series = {}
        for entry in trunks_day[:12]:
            trunk = entry["key"]
            where, args = ("trunk IS NULL", ()) if trunk == "-" else ("trunk = ?", (trunk,))
            series[trunk] = {"hour": _series(db, where, args, aligned(now, 300.0, 12), 300.0, 12),
                             "day": _series(db, where, args, aligned(now, HOUR, 24), HOUR, 24)}
        return {
            "now": now,
            "trunks": [{**entry, "hour": trunks_hour.get(entry["key"]), "series": series.get(entry["key"])}
                       for entry in trunks_day],
            "numbers": _totals(db, "caller_number", now - DAY, limit=25),
            "rejections": _rejections(db, now - DAY),
            "resting": _resting(db),
        }


def number_card(path: str | Path, number: str, now: float) -> dict[str, Any] | None:
    """One calling number over the last ``CARD_DAYS`` days; None when the store has no call from it."""
    since = now - CARD_DAYS * DAY
    with read_only(path) as db:
        first_last = db.execute("SELECT min(at) AS first, max(at) AS last, count(*) AS n FROM outcomes "
                                "WHERE caller_number = ?", (number,)).fetchone()
        if not first_last["n"]:
            return None
        totals = _totals(db, "caller_number", since, "caller_number = ?", (number,))
        summary = totals[0] if totals else {"attempts": 0, "answered": 0, "blocked": 0, "categories": {},
                                            "answer_rate": None, "block_rate": None}
        talk = db.execute(
            "SELECT count(*) AS n, avg(json_extract(data, '$.talk_s')) AS avg_talk, "
            "sum(CASE WHEN json_extract(data, '$.talk_s') < ? THEN 1 ELSE 0 END) AS short FROM outcomes "
            "WHERE caller_number = ? AND at >= ? AND category = 'answered'", (SHORT_CALL_S, number, since)).fetchone()
        days = db.execute("SELECT count(DISTINCT CAST(at / 86400 AS INTEGER)) FROM outcomes WHERE caller_number = ?",
                          (number,)).fetchone()[0]
        networks: dict[str, int] = {}
        contacts: dict[str, dict[str, Any]] = {}
        for row in db.execute("SELECT json_extract(data, '$.redress') AS r FROM outcomes WHERE caller_number = ? "
                              "AND at >= ? AND json_extract(data, '$.redress') IS NOT NULL", (number, since)):
            try:
                redress = json.loads(row["r"])
            except (TypeError, ValueError):
                continue
            if not isinstance(redress, dict):
                continue
            network = redress.get("location") or urllib.parse.urlsplit(redress.get("url") or "").hostname
            if network:
                networks[str(network)] = networks.get(str(network), 0) + 1
            key = "|".join(str(redress.get(k) or "") for k in ("url", "tel", "email"))
            if key.strip("|"):
                contacts.setdefault(key, {k: redress.get(k) for k in ("url", "tel", "email", "id", "location")})
        return {
            "number": number,
            "now": now,
            "days": CARD_DAYS,
            "first_seen": first_last["first"],
            "last_seen": first_last["last"],
            "days_in_rotation": days,
            **{k: summary[k] for k in ("attempts", "answered", "blocked", "categories", "answer_rate", "block_rate")},
            "by_trunk": _totals(db, "trunk", since, "caller_number = ?", (number,)),
            "avg_talk_s": round(talk["avg_talk"], 1) if talk["avg_talk"] is not None else None,
            "short_call_share": _rate(talk["short"] or 0, talk["n"]),
            "blocking_networks": dict(sorted(networks.items(), key=lambda kv: -kv[1])),
            "redress_contacts": list(contacts.values())[:10],
            "series": _series(db, "caller_number = ?", (number,), aligned(now, DAY, CARD_DAYS), DAY, CARD_DAYS),
            "series_day": _series(db, "caller_number = ?", (number,), aligned(now, HOUR, 24), HOUR, 24),
            "series_hour": _series(db, "caller_number = ?", (number,), aligned(now, 300.0, 12), 300.0, 12),
            "rejections": _rejections(db, since, "caller_number = ?", (number,), limit=10),
            "alerts": _alert_history(db, number),
            "actions": _action_history(db, number),
        }


def _alert_history(db: sqlite3.Connection, number: str) -> list[dict[str, Any]]:
    """The number's alert episodes, newest first: each firing and, once over, its resolve (the history
    outlives an alert's state row, which goes once its resolve is announced)."""
    rows = db.execute("SELECT threshold, severity, fired_at, resolved_at FROM alert_history "
                      "WHERE json_extract(scope, '$.caller_number') = ? ORDER BY fired_at DESC LIMIT 20",
                      (number,)).fetchall()
    return [{**dict(row), "state": "firing" if row["resolved_at"] is None else "resolved"} for row in rows]


def _action_history(db: sqlite3.Connection, number: str) -> list[dict[str, Any]]:
    """What the configured actions decided and did for the number (apply, restore, held), newest first."""
    rows = db.execute("SELECT id, at, action, phase, dry_run, reason, command, status, attempts, result, target "
                      "FROM action_log WHERE caller_number = ? ORDER BY at DESC, id DESC LIMIT 20",
                      (number,)).fetchall()
    return [{**dict(row), "dry_run": bool(row["dry_run"]),
             "command": json.loads(row["command"]) if row["command"] else None} for row in rows]


def _resting(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The numbers the actions took out of rotation, oldest first (at most 100)."""
    rows = db.execute("SELECT action, caller_number, resting_since, restore_due, dry_run FROM action_state "
                      "WHERE resting_since IS NOT NULL ORDER BY dry_run, resting_since LIMIT 100").fetchall()
    return [dict(row) for row in rows]
