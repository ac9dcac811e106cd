"""`blockradar replay` (the issues' exact checks, alerts on the recording's clock) and
`blockradar record` (a live stream saved byte-exact replays to the same outcomes)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from blockradar.connectors.ami_recording import read_ami_recording
from blockradar.connectors.esl_recording import read_esl_recording
from blockradar.recordings import RecordingError, detect_format, read_recording
from blockradar.testing.ami import AmiServer, AmiSession, event_stream
from blockradar.testing.esl import EslServer, load_event_frames

FIXTURES = Path(__file__).parent / "fixtures"
OUTCOME_KEYS = {"kind", "pbx", "connector", "call_id", "caller_number", "callee_number", "trunk", "sip_code",
                "sip_phrase", "reason", "q850_cause", "pbx_cause", "answered", "talk_s", "ended_at", "category",
                "confidence", "rule", "redress", "caller_number_raw", "callee_number_raw", "sip_call_id", "caller_name",
                "call_info", "headers"}
ALERT_KEYS = {"kind", "state", "threshold", "severity", "scope", "count", "attempts", "rate", "window_s",
              "categories", "at", "redress"}


def blockradar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockradar", *args], capture_output=True, text=True, timeout=60)


def lines(run: subprocess.CompletedProcess[str]) -> list[dict]:
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_replay_ami_608():
    records = lines(blockradar("replay", str(FIXTURES / "asterisk/01-608-rejected.ami"), "--json"))
    outcomes = [r for r in records if r["kind"] == "outcome"]
    assert len(outcomes) == 1 and set(outcomes[0]) == OUTCOME_KEYS
    o = outcomes[0]
    assert (o["sip_code"], o["category"], o["caller_number"], o["trunk"]) == (608, "analytics_block",
                                                                              "+15557654321", "carrier")
    assert o["ended_at"].endswith("Z")


def test_replay_esl_atis_603plus():
    records = lines(blockradar("replay", str(FIXTURES / "freeswitch/15-603plus-atis-analytics1.esl"), "--json"))
    outcomes = [r for r in records if r["kind"] == "outcome"]
    assert len(outcomes) == 1
    assert outcomes[0]["category"] == "analytics_block" and outcomes[0]["confidence"] == "high"
    assert outcomes[0]["redress"]["url"] == "https://analytics.example.net/redress"


def national(stream: bytes, plus: bytes, national_prefix: bytes) -> bytes:
    """A real recording with every +1555 number written the way many PBXes write them: the AMI one as
    10 digits, the ESL one as 11 (its event bodies re-framed with their new Content-Length)."""
    if plus == b"+1555":
        return stream.replace(plus, national_prefix)
    out, rest = [], stream
    while rest:
        head, sep, rest = rest.partition(b"\n\n")
        lengths = [int(line.split(b":")[1]) for line in head.split(b"\n") if line.startswith(b"Content-Length:")]
        length = lengths[0] if lengths else 0
        body, rest = rest[:length], rest[length:]
        body = body.replace(plus, national_prefix)
        if length:
            head = b"\n".join(b"Content-Length: %d" % len(body) if line.startswith(b"Content-Length:") else line
                              for line in head.split(b"\n"))
        out.append(head + sep + body)
    return b"".join(out)


@pytest.mark.parametrize(("fixture", "plus", "prefix", "raw_caller"), [
    ("asterisk/02-603plus-network-blocked.enriched.ami", b"+1555", b"555", "5557654321"),
    ("freeswitch/02-603-network-blocked.esl", b"%2B1555", b"1555", "15557654321"),
])
def test_replay_of_national_numbers_gives_e164_outcomes(tmp_path: Path, fixture, plus, prefix, raw_caller):
    original = (FIXTURES / fixture).read_bytes()
    rewritten = national(original, plus, prefix)
    assert plus not in rewritten
    path = tmp_path / Path(fixture).name
    path.write_bytes(rewritten)
    before = [r for r in lines(blockradar("replay", str(FIXTURES / fixture), "--json")) if r["kind"] == "outcome"]
    after = [r for r in lines(blockradar("replay", str(path), "--json")) if r["kind"] == "outcome"]
    assert len(after) == len(before) == 1
    assert after[0]["caller_number"] == before[0]["caller_number"] == "+15557654321"
    assert after[0]["callee_number"] == before[0]["callee_number"]
    assert after[0]["callee_number"].startswith("+1555")
    assert (after[0]["caller_number_raw"], before[0]["caller_number_raw"]) == (raw_caller, None)
    assert after[0]["category"] == before[0]["category"] == "analytics_block"
    # the region decides what a national form means: in GB these digits are not the US number
    elsewhere = lines(blockradar("replay", str(path), "--json", "--region", "GB", "--no-alerts"))
    assert elsewhere[0]["caller_number"] != "+15557654321"
    assert (elsewhere[0]["caller_number_raw"] or elsewhere[0]["caller_number"]) == raw_caller


def test_replay_refuses_an_unknown_region() -> None:
    run = blockradar("replay", str(FIXTURES / "asterisk/01-608-rejected.ami"), "--region", "XX")
    assert run.returncode == 2 and "unknown region 'XX'" in run.stderr


def test_replay_json_recording_and_no_alerts():
    records = lines(blockradar("replay", str(FIXTURES / "freeswitch/05-607-unwanted.json.esl"), "--json",
                               "--no-alerts"))
    assert [(r["kind"], r["category"]) for r in records] == [("outcome", "unwanted")]


def test_replay_alerts_on_the_recordings_clock():
    files = [str(FIXTURES / "asterisk" / f) for f in ("01-608-rejected.ami", "12-183-then-608-rejected.ami",
                                                      "06-403-forbidden-spam.enriched.ami", "07-486-busy-here.ami")]
    records = lines(blockradar("replay", *files, "--json"))
    kinds = [r["kind"] for r in records]
    assert kinds.count("outcome") == 4
    alerts = [r for r in records if r["kind"] == "alert"]
    assert alerts and all(set(a) >= ALERT_KEYS for a in alerts)
    by_name = {a["threshold"]: a for a in reversed(alerts)}  # the first transition of each
    assert by_name["number-strong-block"]["state"] == "firing"
    # after the recording the clock runs on until its alerts resolved, marked as such
    end = next(i for i, r in enumerate(records) if r["kind"] == "recording-end")
    assert all(r["state"] == "resolved" for r in records[end + 1:]) and records[end + 1:]
    assert by_name["number-analytics-blocks"]["count"] == 3  # 608, 183->608, 403 spam
    # alerts fire at the time of the call that crossed the threshold, in the recording's time
    third_block = [r for r in records if r["kind"] == "outcome" and r["category"] == "analytics_block"][2]
    assert by_name["number-analytics-blocks"]["at"] == third_block["ended_at"]
    assert records.index(by_name["number-analytics-blocks"]) > records.index(third_block)


def test_replay_with_config_thresholds(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(textwrap.dedent("""\
        thresholds:
          - {name: any-607, scope: [caller_number], categories: [unwanted], window: 1h, count: 1}
        """))
    records = lines(blockradar("replay", "--config", str(config), str(FIXTURES / "asterisk/05-607-unwanted.ami"),
                               str(FIXTURES / "asterisk/01-608-rejected.ami"), "--json"))
    assert [(r["threshold"], r["state"]) for r in records if r["kind"] == "alert"] == [("any-607", "firing"),
                                                                                       ("any-607", "resolved")]


def test_replay_refuses_what_is_not_a_recording(tmp_path: Path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n")
    run = blockradar("replay", str(junk))
    assert run.returncode == 2 and "not a recorded AMI, ESL or HEP stream" in run.stderr
    assert detect_format(b"Asterisk Call Manager/11.0.0\r\n") == "ami"
    assert detect_format(b"Content-Type: auth/request\n\n") == "esl"
    assert detect_format(b"\x00\x00\x00\x40HEP3\x00\x40") == "hep"
    with pytest.raises(RecordingError):
        read_recording(junk)


def test_replay_table_for_people():
    run = blockradar("replay", str(FIXTURES / "asterisk/02-603plus-network-blocked.enriched.ami"))
    assert run.returncode == 0
    assert "603" in run.stdout and "Network Blocked" in run.stdout and "analytics_block" in run.stdout
    assert run.stdout.splitlines()[0].split()[:3] == ["ENDED", "CALLER", "CALLEE"]


def _config(tmp_path: Path, ami_port: int, esl_port: int) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(f"""\
        connectors:
          - {{name: pbx1, type: asterisk, port: {ami_port}, username: rec, secret: rec-secret}}
          - {{name: fs1, type: freeswitch, port: {esl_port}, password: rec-pass}}
        """))
    return path


async def _wait_size(path: Path, size: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= size:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} did not reach {size} bytes")


async def test_record_ami_then_replay(tmp_path: Path):
    fixture = (FIXTURES / "asterisk/02-603plus-network-blocked.enriched.ami").read_bytes()
    stream = event_stream(fixture)
    esl = EslServer(password="rec-pass").start()
    try:
        async with AmiServer(username="rec", secret="rec-secret", sessions=[AmiSession(stream=stream)]) as ami:
            config = _config(tmp_path, ami.port, esl.port)
            out = tmp_path / "live.ami"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "blockradar", "record", "--config", str(config), "--connector", "pbx1",
                "-o", str(out), stderr=asyncio.subprocess.PIPE)
            await _wait_size(out, len(stream))
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, err
    finally:
        esl.stop()
    data = out.read_bytes()
    assert data.startswith(b"Asterisk Call Manager/") and stream in data
    assert b"rec-secret" not in data and b"rec-secret" not in err
    live = [(o.caller_number, o.callee_number, o.trunk, o.sip_code, o.sip_phrase) for o in read_recording(out).outcomes]
    recorded = [(o.caller_number, o.callee_number, o.trunk, o.sip_code, o.sip_phrase)
                for o in read_ami_recording(fixture).outcomes]
    assert live == recorded == [("+15557654321", "+15551230002", "carrier", 603, "Network Blocked")]


async def test_record_esl_then_replay(tmp_path: Path):
    fixture_path = FIXTURES / "freeswitch/15-603plus-atis-analytics1.esl"
    frames = load_event_frames(fixture_path, types=("text/event-plain",))
    esl = EslServer(password="rec-pass", plain=frames).start()
    try:
        async with AmiServer(username="rec", secret="rec-secret") as ami:
            config = _config(tmp_path, ami.port, esl.port)
            out = tmp_path / "live.esl"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "blockradar", "record", "--config", str(config), "--connector", "fs1",
                "-o", str(out), stderr=asyncio.subprocess.PIPE)
            hangup = [f for f in frames if b"CHANNEL_HANGUP_COMPLETE" in f]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (out.exists() and hangup[0] in out.read_bytes()):
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, err
    finally:
        esl.stop()
    assert b"rec-pass" not in out.read_bytes()[200:] and b"rec-pass" not in err
    live = read_recording(out).outcomes
    recorded = read_esl_recording(fixture_path.read_bytes()).outcomes
    assert [(o.call_id, o.sip_code, o.reason) for o in live] == [(o.call_id, o.sip_code, o.reason) for o in recorded]
    assert live[0].redress is not None and live[0].redress.url == "https://analytics.example.net/redress"


def test_record_unknown_connector(tmp_path: Path):
    config = _config(tmp_path, 1, 2)
    run = blockradar("record", "--config", str(config), "--connector", "nope")
    assert run.returncode == 2 and "no connector 'nope'" in run.stderr and "pbx1, fs1" in run.stderr


def test_replay_reads_as_the_configured_connector_and_says_why_a_leg_did_not_count(tmp_path: Path):
    config = tmp_path / "blockradar.yaml"
    config.write_text(textwrap.dedent("""\
        connectors:
          - {name: pbx1, type: asterisk, username: u, secret: s, trunks: [twilio-*]}
          - {name: pbx2, type: asterisk, username: u, secret: s, trunks: [carr*]}
        """))
    fixture = str(FIXTURES / "asterisk/01-608-rejected.ami")
    records = lines(blockradar("replay", fixture, "--config", str(config), "--legs", "--json", "--no-alerts"))
    assert [(r["kind"], r.get("reason")) for r in records] == [("leg", "not_a_trunk")]
    assert records[0]["trunk"] == "carrier" and "matches none of the trunks patterns" in records[0]["why"]
    records = lines(blockradar("replay", fixture, "--config", str(config), "--connector", "pbx2", "--json",
                               "--no-alerts"))
    assert [(r["kind"], r["trunk"]) for r in records] == [("outcome", "carrier")]
    missing = blockradar("replay", fixture, "--config", str(config), "--connector", "pbx9")
    assert missing.returncode == 2 and "no connector 'pbx9'" in missing.stderr
