"""The store fails while the daemon runs (issue 12): a full disk (SQLite's own SQLITE_FULL, through
``PRAGMA max_page_count``) and a read-only store (``PRAGMA query_only``). What must hold: one ERROR per
episode, not one per write; /healthz 503 and a ``store-failing`` self-alert delivered straight from
memory; alerts still judged and sent; nothing the PBX reported lost once the disk has room again, and
the recovery said once."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from blockradar.config import load_config
from blockradar.daemon import Daemon
from blockradar.demo.traffic import CallSpec, TrafficBuilder
from blockradar.store import Store
from blockradar.testing import AmiServer, AmiSession
from tests.polling import until
from tests.servers.http_sink import HttpSink

pytestmark = pytest.mark.timeout(90)


BUILDER = TrafficBuilder()  # one builder: every call gets its own ids


def calls(n: int, start: float, prefix: str = "+1555767") -> bytes:
    frames = []
    for i in range(n):
        spec = CallSpec("608", f"{prefix}{i:04d}", "+12125550100", "carrier-a", start + i * 0.05)
        frames += BUILDER.ami_frames(spec)
    return b"".join(frames)


def healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())



async def status_becomes(port: int, status: int, what: str) -> None:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if (await asyncio.to_thread(healthz, port))[0] == status:  # the daemon serves it on this loop
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alert_names(sink: HttpSink) -> list[tuple[str, str]]:
    out = []
    for request in sink.requests:
        body = json.loads(request.body)
        for alert in body["alerts"]:
            out.append((alert["labels"].get("alertname") or alert["labels"].get("caller_number"), alert["state"]))
    return out


@pytest.mark.parametrize("fault", ["disk-full", "read-only"])
async def test_the_store_fails_and_recovers_while_calls_flow(tmp_path: Path, fault: str, caplog):
    caplog.set_level(logging.DEBUG, logger="blockradar")
    store_path = tmp_path / "state.db"
    first, second = 20, 20
    async with AmiServer(username="br", secret="pw", sessions=[AmiSession()]) as ami, HttpSink() as sink:
        config = tmp_path / "blockradar.yaml"
        config.write_text(textwrap.dedent(f"""\
            connectors:
              - {{name: pbx1, type: asterisk, port: {ami.port}, username: br, secret: pw}}
            thresholds:
              - {{name: strong, scope: [caller_number], categories: [analytics_block], confidence: [high],
                  window: 1h, count: 1}}
            alerting: {{group_wait: 0s, group_interval: 1s, repeat_interval: 4h, group_by: [threshold, caller_number]}}
            notifiers:
              - {{type: webhook, url: "{sink.url}"}}
            store: {store_path}
            http: {{listen: "127.0.0.1:0"}}
            """))
        daemon = Daemon(load_config(config))
        await daemon.start()
        try:
            port = daemon.http.bound_port
            await status_becomes(port, 200, "logged in")
            await ami.push(calls(first, time.time()))
            await until(lambda: len(sink.requests) >= first, what="the first alerts")
            assert (await asyncio.to_thread(healthz, port))[0] == 200

            db = daemon.store._db  # the fault, from SQLite itself, on both connections (the store writer's too)
            if fault == "disk-full":
                pages = db.execute("PRAGMA page_count").fetchone()[0]
                for sql in (f"PRAGMA max_page_count={pages}",):
                    db.execute(sql)
                    daemon.writer.run_on_connection(sql)
            else:
                db.execute("PRAGMA query_only=1")
                daemon.writer.run_on_connection("PRAGMA query_only=1")
            caplog.clear()
            await ami.push(calls(second, time.time(), "+1555768"))  # 20 new numbers

            await until(lambda: ("store-failing", "firing") in alert_names(sink), what="the store-failing page")
            status, body = await asyncio.to_thread(healthz, port)
            assert status == 503
            assert body["store"]["ok"] is False and body["store"]["failed_writes"] >= 1
            await until(lambda: daemon.writer.pending > 0, what="outcomes kept in memory")
            # the new numbers' alerts are judged and sent from memory while the store fails
            await until(lambda: sum(1 for name, state in alert_names(sink) if name.startswith("+1555768")
                                    and state == "firing") == second, what="alerts sent from memory")
            await asyncio.sleep(1.5)  # more failed writes: ticks, outcome batches
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            # one ERROR for the episode (and the self-alert's own line), not one per failed write
            assert [r.getMessage()[:60] for r in errors] == [
                f"store {store_path} cannot be written"[:60],
                f"self-alert store-failing on {store_path}"[:60]], [r.getMessage() for r in errors]
            assert not any(r.exc_info for r in caplog.records)  # no traceback, not one
            assert daemon.store_failure["failed_writes"] >= 2
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
            errors_total = [line for line in metrics.splitlines()
                            if line.startswith("blockradar_store_write_errors_total")]
            assert errors_total and float(errors_total[0].split()[-1]) >= 2
            assert 'blockradar_loop_lag_seconds_bucket{le="0.01"}' in metrics

            # room again / writable again: recovery said once, the page resolved, the outcomes written
            fix = "PRAGMA max_page_count=1073741823" if fault == "disk-full" else "PRAGMA query_only=0"
            db.execute(fix)
            daemon.writer.run_on_connection(fix)
            await until(lambda: ("store-failing", "resolved") in alert_names(sink), what="the store-failing resolve")
            await status_becomes(port, 200, "healthz 200")
            await until(lambda: daemon.store.count_outcomes() == first + second, what="every outcome stored")
            recovered = [r.getMessage() for r in caplog.records if "is written again" in r.getMessage()]
            assert len(recovered) == 1
            # what waited in memory during the episode is said (the lab's full disk: "0 kept" read as nothing)
            waited = int(recovered[0].split("up to ")[1].split(" ")[0])
            assert waited >= 1 and recovered[0].endswith(", 0 let go")
        finally:
            await daemon.stop(flush_s=3)
    with Store(store_path) as check:
        stored = {row["caller_number"] for row in check.outcome_rows(0)}
    assert len(stored) == first + second
    firing = [name for name, state in alert_names(sink) if state == "firing" and name.startswith("+1555")]
    assert len(firing) == len(set(firing)) == first + second  # each number paged once, none twice
