"""`blockradar run` end to end, as a subprocess: real AMI and ESL protocol servers replaying the
recorded fixtures over loopback, a real SMTP server (aiosmtpd, STARTTLS with a trustme certificate)
and a Slack-like HTTP server that checks the Block Kit payload.

The story of one daemon's life: alerts arrive in Slack and email, grouped, with the carrier's
redress; /metrics and /healthz answer while the PBX link is up and while it is down; SIGHUP with a
broken rule file keeps it running (and pages about it); SIGTERM exits 0 with the outbox drained;
a restart on the same store does not page again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller

import blockradar
from blockradar.store import Store
from blockradar.testing.ami import AmiServer, AmiSession, event_stream
from blockradar.testing.esl import EslServer, EslSession, load_event_frames
from blockradar.testing.ports import free_port
from tests.servers.http_sink import HttpSink, slack_payload_problems

FIXTURES = Path(__file__).parent / "fixtures"
CALLER = "+15557654321"
REDRESS_URL = "https://analytics.example.net/redress"
AMI_SECRET = "ami-s3cret-e2e"
ESL_PASSWORD = "esl-pa55-e2e"




class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd hook
        self.messages.append(envelope.content)
        return "250 OK"


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def eventually(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def write_config(path: Path, *, ami_port: int, esl_port: int, smtp_port: int, slack_url: str, http_port: int,
                 store: Path, rules: Path, ca_file: Path) -> None:
    path.write_text(textwrap.dedent(f"""\
        connectors:
          - {{name: pbx1, type: asterisk, host: 127.0.0.1, port: {ami_port}, username: blockradar,
              secret: "${{AMI_SECRET}}", ping_interval: 1s, ping_timeout: 1s, backoff_initial: 0.2s,
              backoff_max: 1s}}
          - {{name: fs1, type: freeswitch, host: 127.0.0.1, port: {esl_port}, password_file: esl.password,
              backoff_initial: 0.2s, backoff_max: 1s}}
        rules: [default, {rules}]
        alerting: {{group_wait: 1s, group_interval: 2s, repeat_interval: 4h, send_resolved: true}}
        notifiers:
          - {{type: slack, webhook_url: "${{SLACK_WEBHOOK_URL}}"}}
          - {{type: email, host: 127.0.0.1, port: {smtp_port}, starttls: true, ca_file: "{ca_file}",
              from: blockradar@example.com, to: [noc@example.com]}}
        store: {store}
        http: {{listen: "127.0.0.1:{http_port}"}}
        self_health: {{link_down_after: 60s}}
        """))
    (path.parent / "esl.password").write_text(ESL_PASSWORD + "\n")


GOOD_RULES = textwrap.dedent("""\
    version: 1
    rules:
      - name: acme-fraud-403
        source: ACME trunking guide 7.2
        match: {sip_code: 403, header: {name: X-ACME-Case}}
        category: provider_block
        confidence: high
    """)


def start_daemon(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "blockradar", "run", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=config.parent)


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_daemon_lifecycle(tmp_path: Path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port, tls_context=tls, require_starttls=True)
    smtp.start()

    ami_stream = b"".join(event_stream((FIXTURES / "asterisk" / name).read_bytes()) for name in (
        "01-608-rejected.enriched.ami", "02-603plus-network-blocked.enriched.ami",
        "12-183-then-608-rejected.enriched.ami", "07-486-busy-here.ami"))
    esl_frames = load_event_frames(FIXTURES / "freeswitch" / "15-603plus-atis-analytics1.esl",
                                   FIXTURES / "freeswitch" / "01-608-rejected-jwscard.esl",
                                   types=("text/event-plain",))
    rules = tmp_path / "carrier.yaml"
    rules.write_text(GOOD_RULES)
    store = tmp_path / "state.db"
    http_port = free_port()
    config = tmp_path / "blockradar.yaml"
    env = {**os.environ, "AMI_SECRET": AMI_SECRET}
    esl = EslServer(password=ESL_PASSWORD, plain=esl_frames, default=EslSession(heartbeat_every=0.5)).start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        async with AmiServer(username="blockradar", secret=AMI_SECRET,
                             sessions=[AmiSession(stream=ami_stream), AmiSession(stream=b"")]) as ami, \
                HttpSink(slack=True) as slack:
            env["SLACK_WEBHOOK_URL"] = slack.url
            write_config(config, ami_port=ami.port, esl_port=esl.port, smtp_port=smtp_port, slack_url=slack.url,
                         http_port=http_port, store=store, rules=rules, ca_file=ca_file)
            proc = start_daemon(config, env)

            # 1. the alerts arrive in Slack and email, one message per alert group, with redress
            await slack.wait_for(2, timeout=30)
            await eventually(lambda: len(mailbox.messages) >= 2, what="two emails")
            await asyncio.sleep(3)  # group_interval: anything else that would arrive, arrives
            payloads = [r.json for r in slack.requests]
            for payload in payloads:
                assert slack_payload_problems(payload) == []
            texts = [json.dumps(p) for p in payloads]
            assert len(payloads) == 2, texts  # 5 blocked calls from 2 PBXes -> 2 thresholds -> 2 messages
            assert any("number-strong-block" in t for t in texts)
            assert any("number-analytics-blocks" in t for t in texts)
            assert all(CALLER in t for t in texts)
            assert any(REDRESS_URL in t for t in texts)
            subjects = [message_from_bytes(m, policy=policy.default)["Subject"] for m in mailbox.messages]
            assert len(subjects) == 2 and all(s.startswith("[blockradar] ") and CALLER in s for s in subjects)
            bodies = b"".join(mailbox.messages)
            assert REDRESS_URL.encode() in bodies

            # 2. /healthz and /metrics while the links are up
            status, body = http_get(http_port, "/healthz")
            health = json.loads(body)
            assert status == 200 and health["status"] == "ok", health
            states = {c["name"]: c for c in health["connectors"]}
            assert states["pbx1"]["state"] == "connected" and states["fs1"]["state"] == "connected"
            assert states["fs1"]["clock_skewed"] > 0  # recorded hours ago: PBX time replaced by receive time
            # the ESL hand-off's backpressure is visible (the issue 12 lab run found it computed but not shown)
            assert states["fs1"]["pending"] == 0 and states["fs1"]["held_back"] == 0
            assert states["fs1"]["pending_high_water"] >= 1
            status, body = http_get(http_port, "/metrics")
            text = body.decode()
            assert status == 200
            assert metric(text, "blockradar_call_outcomes_total", connector="pbx1", trunk="carrier",
                          category="analytics_block") == 3
            assert metric(text, "blockradar_call_outcomes_total", connector="fs1", trunk="carrier",
                          category="analytics_block") == 2
            assert metric(text, "blockradar_call_outcomes_total", connector="pbx1", category="busy") == 1
            assert metric(text, "blockradar_connector_up", connector="pbx1") == 1
            assert metric(text, "blockradar_alert_transitions_total", threshold="number-strong-block",
                          state="firing") == 1
            assert metric(text, "blockradar_alerts_firing", threshold="number-strong-block") == 1
            assert (metric(text, "blockradar_notifications_total", notifier="slack", result="sent") or 0) >= 2
            assert metric(text, "blockradar_outbox_depth") == 0
            assert metric(text, "blockradar_frames_received_total", connector="fs1") > 0
            assert abs(metric(text, "blockradar_last_frame_timestamp_seconds", connector="fs1") - time.time()) < 60
            assert metric(text, "blockradar_build_info", version=blockradar.__version__) == 1
            assert metric(text, "process_resident_memory_bytes") > 0 and "python_info{" in text
            assert "_created" not in text  # no creation-time twin of every counter
            # legs that are not carrier attempts are counted by reason (these recordings hold carrier legs only)
            assert metric(text, "blockradar_legs_skipped_total", connector="fs1", reason="not_outbound") == 0
            assert metric(text, "blockradar_legs_skipped_total", connector="pbx1", reason="internal_number") == 0
            assert metric(text, "blockradar_numbers_kept_as_given_total", connector="pbx1") == 0
            assert metric(text, "blockradar_window_keys_evicted_total", scope="caller_number", reason="lru") == 0
            assert (metric(text, "blockradar_window_keys", scope="caller_number") or 0) >= 1
            assert CALLER not in text  # no caller numbers in metric labels

            # 3. the Asterisk link goes down: /healthz says 503, metrics say up=0; then it comes back
            await ami.stop_listening()
            ami.drop_all()
            await eventually(lambda: http_get(http_port, "/healthz")[0] == 503, what="healthz 503")
            status, body = http_get(http_port, "/healthz")
            down = {c["name"]: c for c in json.loads(body)["connectors"]}
            assert down["pbx1"]["state"] != "connected" and down["fs1"]["state"] == "connected"
            assert metric(http_get(http_port, "/metrics")[1].decode(), "blockradar_connector_up",
                          connector="pbx1") == 0
            await ami.listen_again()
            await eventually(lambda: http_get(http_port, "/healthz")[0] == 200, what="healthz 200 again")
            assert json.loads(http_get(http_port, "/healthz")[1])["connectors"][0]["reconnects"] >= 1

            # 4. SIGHUP with a broken rule file: still running, old rules kept, a self-alert pages
            rules.write_text("version: 1\nrules:\n  - name: x\n    match: {sip_code: 6xy}\n")
            before = len(slack.requests)
            proc.send_signal(signal.SIGHUP)
            await eventually(lambda: json.loads(http_get(http_port, "/healthz")[1])["last_reload"]["ok"] is False,
                             what="failed reload in /healthz")
            report = json.loads(http_get(http_port, "/healthz")[1])
            assert str(rules) in report["last_reload"]["error"] and ":4:" in report["last_reload"]["error"]
            assert report["rules"]["count"] > 20  # the old rule set still runs
            await slack.wait_for(before + 1, timeout=10)
            assert "config-reload-failed" in json.dumps(slack.requests[-1].json)
            assert proc.poll() is None

            # 5. SIGTERM: exit 0 with the outbox drained
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            output = proc.stdout.read().decode()
            assert AMI_SECRET not in output and ESL_PASSWORD not in output and slack.url not in output
            with Store(store) as db:
                assert db.outbox_depth() == 0
                assert db.count_outcomes() == 6
            sent_before_restart = len(slack.requests)
            mails_before_restart = len(mailbox.messages)

            # 6. restart on the same store (the FreeSWITCH server even replays the same calls): no new page
            rules.write_text(GOOD_RULES)
            proc = start_daemon(config, env)
            await eventually(lambda: _healthz_ok(http_port), what="restarted daemon up")
            await eventually(lambda: esl.connections >= 2, what="fs1 reconnected")
            await asyncio.sleep(4)  # > group_wait + group_interval
            assert len(slack.requests) == sent_before_restart, [json.dumps(r.json)[:200] for r in slack.requests]
            assert len(mailbox.messages) == mails_before_restart
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            proc = None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        esl.stop()
        smtp.stop()


def _healthz_ok(port: int) -> bool:
    try:
        return http_get(port, "/healthz")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize(("text", "line", "key", "words"), [
    ("connectors:\n  - {name: a, type: asterisk, username: u, secret: s, port: 99999}\n", 2, "connectors[0].port",
     "less than or equal to 65535"),
    ("connectors:\n  - {name: a, type: pbx}\n", 2, "connectors[0].type", "'asterisk' or 'freeswitch'"),
    ("connectors:\n  - {name: a, type: asterisk, username: u, secret: '${NOPE_NOT_SET}'}\n", 2,
     "connectors[0].secret", "environment variable NOPE_NOT_SET is not set"),
    ("connectors:\n  - {name: a, type: freeswitch, password_file: /nonexistent/pw}\n", 2,
     "connectors[0].password_file", "cannot read secret file"),
    ("rules: [default]\nthresholds:\n  - {name: t, scope: [caller_number], categories: [x], window: 1h}\n", 3,
     "thresholds[0]", "give exactly one of count or rate"),
    ("notifiers:\n  - {type: slack}\n", 2, "notifiers[0].webhook_url", "required key is missing"),
    ("notifiers:\n  - {type: pager}\n", 2, "notifiers[0].type", "type must be one of"),
    ("alerting: {group_wait: soon}\n", 1, "alerting.group_wait", ""),
    ("storee: /tmp/x.db\n", 1, "storee", "unknown key"),
    ("connectors: [\n", 2, "(document)", "not valid YAML"),
])
def test_bad_config_exits_2_naming_file_line_key(tmp_path: Path, text: str, line: int, key: str, words: str):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    run = subprocess.run([sys.executable, "-m", "blockradar", "run", "--config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    first = run.stderr.splitlines()[0]
    assert first.startswith(f"{config}:{line}:") and f": {key}: " in first and words in first, run.stderr
