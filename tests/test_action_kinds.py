"""Each kind of action against a real peer over loopback: ``exec`` runs real programs, ``http`` talks to a
local HTTP receiver, ``vicidial`` to a stand-in of VICIdial's non-agent API (tests/servers/vicidial_api.py:
VICIdial itself cannot be installed here; the stand-in answers the documented calls with the documented
words), ``asterisk-db`` to the project's AMI server, whose DBPut/DBDel answers are checked here against
the recording of a real Asterisk 22.10.1 (tests/fixtures/asterisk/actions)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from blockradar.actions.kinds import ActionConfig, ActionFailed, ActionRun, executor_for
from blockradar.testing.ami import AmiServer
from tests.servers.http_sink import HttpSink, Reply
from tests.servers.vicidial_api import CidEntry, VicidialApi

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).parent / "fixtures" / "asterisk" / "actions"
NUMBER = "+17275551212"
CONTEXT = {"caller_number": NUMBER, "caller_digits": "17275551212", "national_number": "7275551212",
           "trunk": "carrier-a", "threshold": "number-strong-block", "severity": "critical", "fingerprint": "fp1",
           "action": "rest"}


def make(**fields):
    return executor_for(TypeAdapter(ActionConfig).validate_python(
        {"name": "rest", "when": ["number-strong-block"], "dry_run": False, **fields}))


def run(phase: str = "apply", key: str = "rest.1", attempt: int = 1) -> ActionRun:
    return ActionRun(key=key, phase=phase, context={**CONTEXT, "phase": phase}, attempt=attempt)


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet, as in a container whose init does not reap, is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# -- exec ----------------------------------------------------------------------------------------------
def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "rest-cid"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_exec_runs_the_program_with_its_arguments_and_a_clean_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BLOCKRADAR_TEST_SECRET", "the daemon's own secret")
    out = tmp_path / "seen.json"
    program = script(tmp_path, f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ), 'cwd': os.getcwd()}}, "
                               f"open({str(out)!r}, 'w')); print('rested', sys.argv[1])")
    executor = make(kind="exec", command=[program, "{caller_number}", "--trunk={trunk}", "{national_number}"],
                    env={"DIALER_DB": "vici"})
    result = await executor.run(run())
    seen = json.loads(out.read_text())
    assert result == f"rested {NUMBER}"
    assert seen["argv"] == [NUMBER, "--trunk=carrier-a", "7275551212"]  # no shell: each template one argument
    assert seen["cwd"] == "/"
    env = seen["env"]
    assert "BLOCKRADAR_TEST_SECRET" not in env and "HOME" not in env
    assert env["BLOCKRADAR_KEY"] == "rest.1" and env["BLOCKRADAR_PHASE"] == "apply" and env["DIALER_DB"] == "vici"
    assert env["BLOCKRADAR_CALLER_NUMBER"] == NUMBER and env["BLOCKRADAR_ATTEMPT"] == "1"
    assert set(env) <= {"PATH", "LANG", "DIALER_DB", "LC_CTYPE"} | {k for k in env if k.startswith("BLOCKRADAR_")}
    # a template cannot smuggle a shell: the value is one argument, whatever it holds
    hostile = {**CONTEXT, "caller_number": "+1555; touch /tmp/pwned-by-blockradar"}
    await executor.run(ActionRun(key="rest.2", phase="apply", context=hostile))
    assert json.loads(out.read_text())["argv"][0] == hostile["caller_number"]
    assert not Path("/tmp/pwned-by-blockradar").exists()


async def test_exec_exit_status_timeout_and_restore(tmp_path: Path):
    temporary = make(kind="exec", command=[script(tmp_path, "print('dialer busy'); sys.exit(75)")])
    with pytest.raises(ActionFailed) as failed:
        await temporary.run(run())
    assert failed.value.retry and "exit 75" in str(failed.value) and "dialer busy" in str(failed.value)
    permanent = make(kind="exec", command=[script(tmp_path, "print('no such CID'); sys.exit(3)")])
    with pytest.raises(ActionFailed) as failed:
        await permanent.run(run())
    assert not failed.value.retry and "exit 3: no such CID" in str(failed.value)
    pidfile = tmp_path / "child.pid"
    slow = make(kind="exec", timeout=0.5, command=[script(
        tmp_path, f"import subprocess; p = subprocess.Popen(['sleep', '30']); open({str(pidfile)!r}, 'w')"
                  f".write(str(p.pid)); time.sleep(30)")])
    started = time.monotonic()
    with pytest.raises(ActionFailed) as failed:
        await slow.run(run())
    assert failed.value.retry and "did not finish within 0.5s" in str(failed.value)
    assert time.monotonic() - started < 10
    grandchild = int(pidfile.read_text())
    await asyncio.sleep(0.2)
    assert not alive(grandchild)  # the whole process group was killed, not just the command
    no_restore = make(kind="exec", command=[script(tmp_path, "pass")])
    assert await no_restore.run(run("restore")) == "no restore_command: nothing to run"


# -- http ----------------------------------------------------------------------------------------------
async def test_http_sends_the_templated_request_with_an_idempotency_key():
    async with HttpSink() as sink:
        executor = make(kind="http", request={
            "method": "POST", "url": sink.url + "/numbers/{caller_number}?trunk={trunk}",
            "headers": {"Authorization": "Bearer tok-SECRET-123"},
            "json": {"number": "{caller_number}", "state": "resting", "why": ["{threshold}"]}},
            restore_request={"method": "DELETE", "url": sink.url + "/numbers/{caller_number}"})
        assert await executor.run(run(key="rest.7")) == "HTTP 200: ok"
        await executor.run(run("restore", key="rest.8"))
        await executor.aclose()
    put, back = sink.requests
    assert put.method == "POST" and put.path == f"/hook/numbers/{NUMBER}" and put.query == {"trunk": "carrier-a"}
    assert put.json == {"number": NUMBER, "state": "resting", "why": ["number-strong-block"]}
    assert put.headers["Authorization"] == "Bearer tok-SECRET-123" and put.headers["Idempotency-Key"] == "rest.7"
    assert back.method == "DELETE" and back.headers["Idempotency-Key"] == "rest.8"
    # what an operator reads never holds the URL's path or a header's value
    words = " ".join(executor.describe("apply", CONTEXT)) + executor.target(CONTEXT)
    assert "SECRET" not in words and "numbers" not in words and "127.0.0.1" in words


async def test_http_says_what_is_retried_and_what_is_not():
    async with HttpSink() as sink:
        executor = make(kind="http", request={"url": sink.url + "?token=SECRET-TOKEN-42"})
        sink.script = [Reply(503, "busy"), Reply(429, "slow down", {"Retry-After": "7"}),
                       Reply(404, "no such number SECRET-TOKEN-42"), Reply(201, "created")]
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(await executor.run(run()))
            except ActionFailed as exc:
                outcomes.append((exc.retry, exc.retry_after, str(exc)))
        await executor.aclose()
    assert outcomes[0][:2] == (True, None) and "HTTP 503" in outcomes[0][2]
    assert outcomes[1][:2] == (True, 7.0)
    assert outcomes[2][0] is False and "HTTP 404" in outcomes[2][2] and "SECRET" not in outcomes[2][2]
    assert outcomes[3] == "HTTP 201: created"
    gone = make(kind="http", request={"url": f"http://127.0.0.1:{sink.port}/x"}, timeout=2)
    with pytest.raises(ActionFailed) as failed:
        await gone.run(run())
    assert failed.value.retry and "connection refused" in str(failed.value)
    await gone.aclose()


# -- vicidial ------------------------------------------------------------------------------------------
async def test_vicidial_rests_and_restores_a_cid_group_entry():
    async with VicidialApi(groups={"NATIONAL": [CidEntry("727", "7275551212"), CidEntry("727", "7275551313")]},
                           campaigns={"OUTB1": "7275551212"}) as api:
        executor = make(kind="vicidial", url=api.url, user="6666", password="api-pass-1234", cid_group_id="NATIONAL")
        result = await executor.run(run())
        assert result.startswith("SUCCESS: update_cid_group_entry CID GROUP ENTRIES HAVE BEEN UPDATED") and \
            result.endswith("|1")
        assert [e.active for e in api.groups["NATIONAL"]] == ["N", "Y"]
        assert executor.target(CONTEXT) == "in VICIdial CID group NATIONAL"
        await executor.run(run("restore"))
        assert [e.active for e in api.groups["NATIONAL"]] == ["Y", "Y"]
        first = api.requests[0]
        assert {k: first[k] for k in ("function", "stage", "cid_group_id", "areacode", "outbound_cid", "active",
                                      "source")} == {
            "function": "update_cid_group_entry", "stage": "UPDATE", "cid_group_id": "NATIONAL", "areacode": "727",
            "outbound_cid": "7275551212", "active": "N", "source": "blockradar"}
        assert "api-pass-1234" not in " ".join(executor.describe("apply", CONTEXT))
        # a campaign dialling from one number: its CID becomes the fallback, and comes back
        campaign = make(kind="vicidial", url=api.url, user="6666", password="api-pass-1234", campaign_id="OUTB1",
                        fallback_cid="7275550000")
        await campaign.run(run())
        assert api.campaigns["OUTB1"] == "7275550000"
        await campaign.run(run("restore"))
        assert api.campaigns["OUTB1"] == "7275551212"
        # refusals are permanent, with VICIdial's words and never the password
        for bad in (make(kind="vicidial", url=api.url, user="6666", password="wrong", cid_group_id="NATIONAL"),
                    make(kind="vicidial", url=api.url, user="6666", password="api-pass-1234", cid_group_id="NOPE"),
                    make(kind="vicidial", url=api.url, user="6666", password="api-pass-1234", cid_group_id="NATIONAL",
                         areacode="813")):
            with pytest.raises(ActionFailed) as failed:
                await bad.run(run())
            assert not failed.value.retry and "wrong" not in str(failed.value), str(failed.value)
            await bad.aclose()
        assert "CID GROUP DOES NOT EXIST" in str(failed.value) or "no entry 7275551212 (areacode 813)" in str(
            failed.value)
        api.fail_with = [503]  # the web server in trouble: tried again
        with pytest.raises(ActionFailed) as failed:
            await executor.run(run())
        assert failed.value.retry and "HTTP 503" in str(failed.value)
        await executor.aclose()
        await campaign.aclose()


def test_vicidial_config_needs_one_setup():
    with pytest.raises(ValueError, match="give cid_group_id"):
        make(kind="vicidial", url="http://x/vicidial/non_agent_api.php", user="u", password="p")
    with pytest.raises(ValueError, match="campaign_id needs fallback_cid"):
        make(kind="vicidial", url="http://x/vicidial/non_agent_api.php", user="u", password="p", campaign_id="C1")


# -- asterisk-db ---------------------------------------------------------------------------------------
def client_side(session: Path) -> list[bytes]:
    """What the lab's client sent, chunk by chunk, from a ``### C->S`` / ``### S->C`` session file."""
    chunks, current = [], None
    for line in session.read_bytes().split(b"\n"):
        if line.startswith(b"### "):
            if current is not None:
                chunks.append(current)
            current = b"" if line.startswith(b"### C->S") else None
        elif current is not None:
            current += line + b"\n"
    if current is not None:
        chunks.append(current)
    return [c.rstrip(b"\n") + b"\n" for c in chunks]


async def replay_client(port: int, chunks: list[bytes], secret: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = await reader.readline()
    for chunk in chunks:
        writer.write(chunk.replace(b"<redacted>", secret.encode()))
        await writer.drain()
        await asyncio.sleep(0.05)
    received += await asyncio.wait_for(reader.read(), 5)  # until Logoff closes it
    writer.close()
    return received


def response_words(raw: bytes) -> list[tuple[str, str]]:
    """(Response, Message) of each response frame of a recording."""
    out = []
    for frame in raw.split(b"\r\n\r\n"):
        fields = dict(line.split(": ", 1) for line in frame.decode().split("\r\n") if ": " in line)
        if "Response" in fields:
            out.append((fields["Response"], fields.get("Message", "")))
    return out


async def test_asterisk_db_puts_and_deletes_through_its_own_ami_user():
    real = response_words((FIXTURES / "ami-db.raw").read_bytes())
    denied = response_words((FIXTURES / "ami-db-denied.raw").read_bytes())
    async with AmiServer(username="blockradar", secret="monitor-pw",
                         write_users={"blockradar-actions": "act-pw"}) as ami:
        executor = make(kind="asterisk-db", port=ami.port, username="blockradar-actions", secret="act-pw",
                        value="{action} {threshold}")
        assert await executor.run(run()) == "DBPut blockradar-rest/17275551212: Updated database successfully"
        assert ami.astdb == {"blockradar-rest/17275551212": "rest number-strong-block"}
        assert executor.target(CONTEXT) == "in Asterisk's database (blockradar-rest/17275551212)"
        assert await executor.run(run("restore")) == "DBDel blockradar-rest/17275551212: Key deleted successfully"
        assert ami.astdb == {}
        # a second restore (a retry after a crash): the entry is gone, the number is back: done
        assert "no entry (the number is back already)" in await executor.run(run("restore"))
        # the read-only monitoring user may not write: permanent
        monitor = make(kind="asterisk-db", port=ami.port, username="blockradar", secret="monitor-pw")
        with pytest.raises(ActionFailed) as failed:
            await monitor.run(run())
        assert not failed.value.retry and "Permission denied" in str(failed.value)
        wrong = make(kind="asterisk-db", port=ami.port, username="blockradar-actions", secret="nope")
        ami.auth_fail_delay = 0.05
        with pytest.raises(ActionFailed) as failed:
            await wrong.run(run())
        assert not failed.value.retry and "login as blockradar-actions refused" in str(failed.value)
        assert "nope" not in str(failed.value)
        records = [(r.username, r.action, r.response) for r in ami.db_actions]
        assert records == [("blockradar-actions", "DBPut", "Success"), ("blockradar-actions", "DBDel", "Success"),
                           ("blockradar-actions", "DBDel", "Error"), ("blockradar", "DBPut", "Error")]
        # the server answers what the lab's client sent to a real Asterisk 22.10.1 with Asterisk's words
        ours = await replay_client(ami.port, client_side(FIXTURES / "ami-db.session.txt"), "act-pw")
        assert response_words(ours) == real and len(real) == 6, (response_words(ours), real)
        assert b"Event: DBGetResponse" in ours and b"Event: DBGetComplete" in ours
        ours = await replay_client(ami.port, client_side(FIXTURES / "ami-db-denied.session.txt"), "monitor-pw")
        assert response_words(ours) == denied and ("Error", "Permission denied") in denied
        port = ami.port
    down = make(kind="asterisk-db", port=port, username="blockradar-actions", secret="act-pw", timeout=2)
    with pytest.raises(ActionFailed) as failed:
        await down.run(run())
    assert failed.value.retry and "cannot connect: connection refused" in str(failed.value)


def test_asterisk_db_keys_stay_on_one_line():
    executor = make(kind="asterisk-db", username="u", secret="s")
    hostile = {**CONTEXT, "threshold": "x\r\nAction: Command\r\nCommand: core stop now"}
    verb, entry, value = executor.describe("apply", hostile)
    assert "\r" not in value and "\n" not in value and verb == "DBPut" and entry == "blockradar-rest/17275551212"


def test_an_orphaned_command_is_told_from_its_zombie_and_from_a_stranger():
    """After kill -9 the restarted daemon waits for its orphaned command while it runs; a zombie (an init
    that does not reap) or a pid taken by another process since does not hold the run back."""
    import subprocess

    from blockradar.actions.kinds.exec import process_start_ticks

    child = subprocess.Popen(["sleep", "0.2"])
    ticks = process_start_ticks(child.pid)
    assert ticks is not None and ticks != process_start_ticks(os.getpid())  # another process, another start
    time.sleep(0.5)  # it ended; unreaped, it is a zombie
    assert process_start_ticks(child.pid) is None
    child.wait()
    assert process_start_ticks(child.pid) is None


async def test_http_never_keeps_a_header_value_a_peer_echoes():
    async with HttpSink() as sink:
        executor = make(kind="http", request={"url": sink.url, "headers": {"Authorization": "Bearer s3cr3t-CRM-123"}})
        sink.script = [Reply(401, "invalid credentials: Bearer s3cr3t-CRM-123")]
        with pytest.raises(ActionFailed) as failed:
            await executor.run(run())
        await executor.aclose()
    assert "s3cr3t" not in str(failed.value) and "HTTP 401" in str(failed.value)
