"""Slack notifier against a local receiver that checks Block Kit: shape, limits, escaping, errors."""

from __future__ import annotations

import json
import re

import pytest

from blockradar.alerting.lifecycle import AlertingConfig
from blockradar.alerting.notifiers import build_notifier
from blockradar.alerting.notifiers.base import Notification, NotifyError
from blockradar.alerting.notifiers.slack import build_payload, mrkdwn_escape, safe_link
from blockradar.detect.pipeline import Pipeline
from blockradar.outcome import CallOutcome
from blockradar.ruleset import load_ruleset
from tests.servers.http_sink import HttpSink, Reply, slack_payload_problems

T0 = 1_700_000_000.0
HOSTILE_NAME = "<!channel> <https://evil.example|click here> & <@U123>"
HOSTILE_PHRASE = "Network Blocked <!here|x> <https://evil.example|verify your account>"
HOSTILE_REASON = ('SIP;cause=603;text="v=analytics1;url=https://evil.example/a|click>here;tel=+18005550100"')


def text_values(node):
    """Every "text" string anywhere in a Block Kit structure."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "text" and isinstance(v, str)] + [
            t for k, v in node.items() if not (k == "text" and isinstance(v, str)) for t in text_values(v)]
    if isinstance(node, list):
        return [t for v in node for t in text_values(v)]
    return []


@pytest.fixture(scope="module")
def rules():
    return load_ruleset()


def alert_notifications(rules, n_numbers=1, **kw):
    p = Pipeline(rules, alerting=AlertingConfig(group_wait=0, group_by=["trunk"]))
    for i in range(n_numbers):
        for j in range(3):
            p.process(CallOutcome(pbx="ast", connector="pbx1", call_id=f"<!channel>-{i}-{j}", ended_at=T0 + j,
                                  caller_number=f"+1555765{i:04d}", caller_name=HOSTILE_NAME,
                                  callee_number="+12125550100", trunk=kw.get("trunk", "carrier-c"), sip_code=603,
                                  sip_phrase=kw.get("phrase", "Network Blocked"), reason=kw.get("reason")))
    return p.tick(T0 + 10)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<https://evil|click>", "&lt;https://evil|click&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt;", "&amp;lt;"),  # already-escaped text cannot smuggle a bracket back
        ("line\nbreak", "line break"),
    ],
)
def test_mrkdwn_escape(text, escaped):
    assert mrkdwn_escape(text) == escaped


@pytest.mark.parametrize(
    ("url", "is_link"),
    [
        ("https://redress.example.com/r?id=1", True),
        ("https://evil.example/a|click", False),
        ("https://evil.example/a>x", False),
        ("javascript:alert(1)", False),
        ("http://plain.example", False),
    ],
)
def test_only_plain_https_urls_become_links(url, is_link):
    out = safe_link(url, "redress")
    assert out.startswith("<https://") is is_link
    assert out.count("<") == (1 if is_link else 0)


async def test_an_alert_reaches_slack_as_valid_block_kit(rules):
    (note,) = alert_notifications(rules, reason='SIP;cause=603;text="v=analytics1;url=https://redress.example.com/r"')
    async with HttpSink(slack=True) as sink:
        notifier = build_notifier({"type": "slack", "webhook_url": sink.url})
        await notifier.send(note)
        await notifier.aclose()
    (req,) = sink.requests
    assert sink.problems == []
    blocks = req.json["blocks"]
    assert blocks[0]["type"] == "header"
    assert "analytics blocks on +15557650000 via carrier-c" in blocks[0]["text"]["text"]
    text = json.dumps(blocks)
    assert "<https://redress.example.com/r|redress request>" in text
    assert "Sample calls" in text and "What" not in text[:0]


async def test_hostile_network_text_is_inert(rules):
    notes = alert_notifications(rules, phrase=HOSTILE_PHRASE, reason=HOSTILE_REASON)
    async with HttpSink(slack=True) as sink:
        notifier = build_notifier({"type": "slack", "webhook_url": sink.url})
        for note in notes:
            await notifier.send(note)
        await notifier.aclose()
    assert sink.problems == []
    for req in sink.requests:
        texts = [req.json["text"], *text_values(req.json["blocks"])]
        for text in texts:
            assert "<!" not in text and "<@" not in text  # no channel/user mention can form
            assert "<https://evil" not in text  # no forged link
            # the only raw "<" allowed opens one of our own, validated links
            assert text.count("<") == text.count("<https://redress")
        joined = " ".join(texts)
        assert "&lt;!channel&gt;" in joined  # the call id is shown, escaped
        assert "&lt;https://evil.example|verify your account&gt;" in joined


def test_many_alerts_stay_within_block_kit_limits(rules):
    (note,) = alert_notifications(rules, n_numbers=60)
    assert len(note.alerts) >= 60
    payload = build_payload(note)
    assert slack_payload_problems(payload) == []
    assert "more:" in json.dumps(payload["blocks"][-2])


def test_a_huge_group_names_a_bounded_list_and_links_to_the_status_page(rules):
    (note,) = alert_notifications(rules, n_numbers=60)
    note.unlisted = {"new": 440}
    payload = build_payload(note, status_url="http://radar.example.net:9464/")
    assert slack_payload_problems(payload) == []
    text = json.dumps(payload["blocks"])
    detailed = text.count("|Open on the status page>")
    assert 1 <= detailed <= 8  # the detailed ones link to their cards
    listed = re.findall(r"<http://radar\.example\.net:9464/numbers/\+\d+\|\+\d+>", text)
    # a bounded list of whole names (no link cut in half), then a count
    assert 30 <= len(listed) <= 40 and f"and {60 - detailed - len(listed)} more" in text
    assert text.count("<http://radar.example.net:9464/numbers/") == text.count("|Open on the status page>") + len(
        listed)
    assert "<http://radar.example.net:9464/|All of them on the status page>" in text
    assert len(text) < 40_000


def test_long_header_is_cut_to_150():
    note = Notification("g", {}, "firing", [{"threshold": "x" * 400, "severity": "critical", "state": "firing",
                                             "scope": {"trunk": "y" * 300}, "labels": {}}], T0)
    assert slack_payload_problems(build_payload(note)) == []


@pytest.mark.parametrize(
    ("reply", "retry", "retry_after"),
    [
        (Reply(429, "rate_limited", {"Retry-After": "7"}), True, 7.0),
        (Reply(500, "oops"), True, None),
        (Reply(404, "no_service"), False, None),
        (Reply(400, "invalid_payload"), False, None),
    ],
)
async def test_errors_say_whether_to_retry(reply, retry, retry_after, rules):
    (note,) = alert_notifications(rules)
    async with HttpSink() as sink:
        sink.script = [reply]
        notifier = build_notifier({"type": "slack", "webhook_url": sink.url + "/T000/B000/SECRETTOKEN"})
        with pytest.raises(NotifyError) as info:
            await notifier.send(note)
        await notifier.aclose()
    assert info.value.retry is retry
    assert info.value.retry_after == retry_after
    assert "SECRETTOKEN" not in str(info.value)


async def test_secrets_never_print(rules):
    notifier = build_notifier({"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B0/SECRETTOKEN"})
    for text in (repr(notifier), notifier.describe(), repr(notifier.config), str(notifier.config.model_dump()),
                 notifier.config.model_dump_json()):
        assert "SECRETTOKEN" not in text
    assert "hooks.slack.com" in notifier.describe()
    unreachable = build_notifier({"type": "slack", "webhook_url": "http://127.0.0.1:1/SECRETTOKEN"})
    with pytest.raises(NotifyError) as info:
        await unreachable.send(alert_notifications(rules)[0])
    await unreachable.aclose()
    assert "SECRETTOKEN" not in str(info.value) and info.value.retry
