"""Log output: human or JSON lines, and known secrets redacted whatever a library logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

from blockradar.logs import setup_logging


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
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["logger"] for r in records] == ["panoramisk.manager", "blockradar.alerting.outbox"]
    assert records[0]["message"] == "Login: Username: br Secret: ********"
    assert "hooks.example" not in json.dumps(records) and "********" in records[1]["exception"]
    assert all(r["level"] in ("info", "error") and r["time"].endswith("Z") for r in records)


def test_human_format(restore_root):
    stream = io.StringIO()
    setup_logging("human", logging.WARNING, stream=stream)
    logging.getLogger("blockradar.daemon").warning("link %s down", "pbx1")
    line = stream.getvalue().strip()
    assert line.endswith("WARNING blockradar.daemon: link pbx1 down")


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
