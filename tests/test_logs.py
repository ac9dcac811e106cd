"""Log output: human or JSON lines, and known secrets redacted whatever a library logs."""

from __future__ import annotations

import calendar
import io
import json
import logging
import os
import re
import time

import pytest

from blockradar.logs import LabelledLog, LineBudget, fields, setup_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_and_redaction(restore_root):
    stream = io.StringIO()
    setup_logging("json", logging.INFO, stream=stream, secrets=["hunter2-secret", "https://hooks.example/T/B/X"])
    log = logging.getLogger("panoramisk.manager")
    log.info("Login: Username: br Secret: %s", "hunter2-secret")
    try:
        raise RuntimeError("posting to https://hooks.example/T/B/X failed")
    except RuntimeError:
        logging.getLogger("blockradar.alerting.outbox").exception("send failed")
    logging.getLogger("panoramisk").debug("message interpreted: caller +15551234567")  # held at INFO
    about = fields(connector="pbx1", caller_number="+15551230000", call_id=None)
    logging.getLogger("blockradar.daemon").info("alert fired", extra=about)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["log.logger"] for r in records] == ["panoramisk.manager", "blockradar.alerting.outbox",
                                                  "blockradar.daemon"]
    assert records[0]["message"] == "Login: Username: br Secret: ********"
    assert "hooks.example" not in json.dumps(records) and "********" in records[1]["error.stack_trace"]
    assert all(r["log.level"] in ("info", "error") and re.fullmatch(TIMESTAMP, r["@timestamp"]) for r in records)
    assert all(r["service.name"] == "blockradar" and r["process.pid"] == os.getpid() for r in records)
    assert records[2]["labels"] == {"connector": "pbx1", "caller_number": "+15551230000"}
    assert "labels" not in records[0]


def test_json_lines_name_the_error(restore_root):
    stream = io.StringIO()
    setup_logging("json", logging.INFO, stream=stream)
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        logging.getLogger("blockradar.store").exception("write failed")
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["error.type"] == "OSError" and "No space left" in record["error.message"]
    assert record["error.stack_trace"].startswith("Traceback")


TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_human_format_is_in_utc(restore_root, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "America/New_York")  # the server's zone does not show: alerts and the store use UTC
    time.tzset()
    try:
        stream = io.StringIO()
        setup_logging("human", logging.WARNING, stream=stream)
        before = time.time()
        logging.getLogger("blockradar.daemon").warning("link %s down", "pbx1")
        line = stream.getvalue().strip()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert line.endswith("WARNING blockradar.daemon: link pbx1 down")
    stamp = line.split(" ", 1)[0]
    assert re.fullmatch(TIMESTAMP, stamp)
    assert abs(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - before) < 5


def test_under_systemd_each_line_carries_its_journal_priority(restore_root, tmp_path, monkeypatch: pytest.MonkeyPatch):
    with open(tmp_path / "journal", "w+") as journal:  # stands in for the journal's stream socket
        stat = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        setup_logging("human", logging.INFO, stream=journal)
        log = logging.getLogger("blockradar.daemon")
        log.info("started")
        log.warning("slow")
        log.error("store failing")
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("tick failed")
        journal.flush()
        lines = (tmp_path / "journal").read_text().splitlines()
    assert [line[:3] for line in lines[:3]] == ["<6>", "<4>", "<3>"]
    assert all(line.startswith("<3>") for line in lines[3:]) and len(lines) > 4  # the traceback's lines too
    other = io.StringIO()  # not the journal's stream: no prefixes
    setup_logging("human", logging.INFO, stream=other)
    logging.getLogger("blockradar.daemon").error("plain")
    assert not other.getvalue().startswith("<")


def test_what_gevent_would_print_goes_through_logging(capfd, caplog):
    """A greenlet dying in the ESL thread's hub: one log record (in the log format), nothing raw on stderr."""
    import threading

    import gevent

    from blockradar.connectors.freeswitch import log_gevent_errors

    def boom() -> None:
        raise ValueError("from a greenlet")

    def thread_main() -> None:
        hub = gevent.get_hub()
        log_gevent_errors(hub, "fs-test")
        try:
            gevent.spawn(boom).join(timeout=5)
        finally:
            hub.destroy(destroy_loop=True)

    with caplog.at_level(logging.ERROR, logger="blockradar"):
        worker = threading.Thread(target=thread_main)
        worker.start()
        worker.join(timeout=10)
    assert not worker.is_alive()
    records = [r for r in caplog.records if "(gevent)" in r.getMessage()]
    assert [r.getMessage() for r in records] == ["fs-test: ValueError in Greenlet (gevent)"]
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError
    assert "Traceback" not in capfd.readouterr().err


def test_a_storm_of_lines_is_its_first_lines_and_a_count():
    budget = LineBudget(limit=3, period_s=10.0)
    taken = [budget.take(100.0 + i * 0.01) for i in range(50)]
    assert taken == [True] * 3 + [False] * 47
    assert budget.held_back(105.0) == 0  # the period is not over: nothing to say yet
    assert budget.held_back(110.5) == 47 and budget.held_back(111.0) == 0
    assert budget.take(111.0)  # a new period


def test_a_connectors_lines_carry_its_name_and_pbx(restore_root):
    stream = io.StringIO()
    setup_logging("json", logging.INFO, stream=stream)
    log = LabelledLog(logging.getLogger("blockradar.connectors.asterisk"), {"connector": "pbx1", "pbx": "asterisk"})
    log.warning("%s: link lost", "pbx1")
    log.info("call ended", extra=fields(call_id="c-1", caller_number="+15557650003"))
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["labels"] == {"connector": "pbx1", "pbx": "asterisk"} and first["message"] == "pbx1: link lost"
    assert second["labels"] == {"connector": "pbx1", "pbx": "asterisk", "call_id": "c-1",
                                "caller_number": "+15557650003"}
