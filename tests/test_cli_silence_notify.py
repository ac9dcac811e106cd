"""`blockradar silence add/list/expire` on a real store, and `blockradar notify-test` as a subprocess
against a local receiver (one notifier OK, one refusing connections)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from click.testing import CliRunner

from blockradar.cli import cli
from blockradar.store import Store
from tests.servers.http_sink import HttpSink

REPO = Path(__file__).resolve().parent.parent


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_silence_add_list_expire(tmp_path):
    db = str(tmp_path / "state.db")
    added = run("silence", "add", "caller_number=+15557650003", "trunk=~carrier-.*", "--for", "2h",
                "--comment", "known campaign", "--author", "ops", "--store", db)
    assert added.exit_code == 0, added.output
    silence_id = added.output.split()[1]
    table = run("silence", "list", "--store", db)
    assert "caller_number=+15557650003 trunk=~carrier-.*" in table.output
    assert "known campaign" in table.output and ("1h59m" in table.output or "2h" in table.output)
    (line,) = run("silence", "list", "--json", "--store", db).output.splitlines()
    item = json.loads(line)
    assert item["id"] == silence_id and item["active"] and item["author"] == "ops"
    assert run("silence", "expire", silence_id, "--store", db).exit_code == 0
    assert run("silence", "list", "--store", db).output.strip() == "no silences"
    assert silence_id in run("silence", "list", "--all", "--store", db).output
    with Store(db) as store:
        assert store.list_silences(include_expired=True)[0].comment == "known campaign"


def test_a_silence_on_a_national_number_mutes_its_e164_form(tmp_path):
    """Alerts carry E.164; an operator types what the PBX shows. Both must be one number."""
    from blockradar.alerting.silences import Matcher

    db = str(tmp_path / "state.db")
    assert run("silence", "add", "caller_number=(555) 765-0003", "callee_number!=405", "--comment", "x",
               "--store", db).exit_code == 0
    config = tmp_path / "blockradar.yaml"
    config.write_text(f"store: {db}\nnumbers: {{default_region: GB}}\n")
    added = run("silence", "add", "caller_number=020 7946 0000", "caller_number=~5557.*", "--comment", "x",
                "--config", str(config))
    assert added.exit_code == 0, added.output
    with Store(db) as store:
        first, second = sorted(store.list_silences(), key=lambda s: s.created_at)
    assert first.matchers == (Matcher("caller_number", "=", "+15557650003"), Matcher("callee_number", "!=", "405"))
    assert first.matches({"caller_number": "+15557650003", "callee_number": "+15551230008"})
    assert second.matchers == (Matcher("caller_number", "=", "+442079460000"),
                               Matcher("caller_number", "=~", "5557.*"))  # a regex is the operator's own
    config.write_text("numbers: {default_region: XX}\n")
    refused = run("silence", "add", "caller_number=1", "--comment", "x", "--config", str(config))
    assert refused.exit_code == 1 and "unknown region 'XX'" in refused.output


def test_silence_rejects_bad_input(tmp_path):
    db = str(tmp_path / "state.db")
    assert run("silence", "add", "no-operator", "--comment", "x", "--store", db).exit_code == 2
    assert run("silence", "add", "a=b", "--for", "soon", "--comment", "x", "--store", db).exit_code == 2
    assert run("silence", "add", "a=~(", "--comment", "x", "--store", db).exit_code == 2
    assert run("silence", "expire", "nope", "--store", db).exit_code == 1


def test_silence_reads_the_store_path_from_the_config(tmp_path):
    db = tmp_path / "from-config.db"
    config = tmp_path / "blockradar.yaml"
    config.write_text(f"store: {db}\n")
    assert run("silence", "add", "trunk=carrier-c", "--comment", "x", "--config", str(config)).exit_code == 0
    with Store(db) as store:
        assert len(store.list_silences()) == 1


async def test_notify_test_reports_each_notifier(tmp_path):
    async with HttpSink(slack=True) as slack, HttpSink() as hook:
        down = HttpSink()
        await down.start()
        dead_port = down.port
        await down.stop()
        config = tmp_path / "blockradar.yaml"
        config.write_text(
            "notifiers:\n"
            "  - {type: slack, webhook_url: '${TEST_SLACK_URL}'}\n"
            f"  - {{type: webhook, url: '{hook.url}', secret_file: '{tmp_path / 'hmac'}'}}\n"
            f"  - {{type: webhook, name: deadhook, url: 'http://127.0.0.1:{dead_port}/SECRETPATH'}}\n"
        )
        (tmp_path / "hmac").write_text("filesecret\n")
        env = {**os.environ, "TEST_SLACK_URL": slack.url, "PYTHONPATH": str(REPO)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "blockradar", "notify-test", "--config", str(config), "--timeout", "10",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 1, (text, err.decode())
    lines = text.splitlines()
    assert lines[0].startswith("OK    slack: slack http://127.0.0.1:")
    assert lines[1].startswith("OK    webhook: webhook http://127.0.0.1:") and "(signed)" in lines[1]
    assert lines[2].startswith("FAIL  deadhook:") and "connection refused" in lines[2]
    assert "SECRETPATH" not in text + err.decode() and "/hook" not in text
    assert slack.problems == []
    assert "TEST" in slack.requests[0].json["text"]
    assert hook.requests[0].json["test"] is True


async def test_a_token_in_the_query_string_is_never_printed(tmp_path):
    """The audit: ``http://host?token=...`` (a query, no path) was printed in full by notify-test and kept in
    the outbox's last_error. The peer echoing the token back in its error body must not leak it either."""
    from tests.servers.http_sink import Reply

    token = "tok3n-S3CRET-value"
    async with HttpSink(path="") as hook:
        hook.default = Reply(status=500, body=f"bad token {token}")
        config = tmp_path / "blockradar.yaml"
        config.write_text(f"notifiers:\n  - {{type: webhook, url: 'http://127.0.0.1:{hook.port}?token={token}'}}\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "blockradar", "notify-test", "--config", str(config), "--timeout", "10",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    text = out.decode() + err.decode()
    assert proc.returncode == 1 and "HTTP 500" in text, text
    assert hook.requests and hook.requests[0].path == "/"  # it was really sent, with its token
    assert token not in text and f"http://127.0.0.1:{hook.port}/********" in text
