"""Webhook notifier (signed JSON, idempotency key) and console notifier, against real receivers."""

from __future__ import annotations

import io

import pytest

from blockradar.alerting.notifiers import build_notifier, build_notifiers
from blockradar.alerting.notifiers.base import Notification, NotifyError
from blockradar.alerting.notifiers.console import ConsoleNotifier
from blockradar.alerting.notifiers.webhook import EVENT_HEADER, IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify
from tests.servers.http_sink import HttpSink, Reply

T0 = 1_700_000_000.0


def note(**alert):
    base = {"threshold": "trunk-block-rate", "severity": "critical", "state": "firing", "scope": {"trunk": "carrier-c"},
            "labels": {"trunk": "carrier-c"}, "categories": {"analytics_block": 5}, "count": 5, "attempts": 50}
    return Notification("g", {"trunk": "carrier-c"}, "firing", [{**base, **alert}], T0)


async def test_signed_json_post_with_idempotency_key():
    async with HttpSink() as sink:
        notifier = build_notifier({"type": "webhook", "url": sink.url, "secret": "sh4red", "name": "ops"})
        n = note()
        await notifier.send(n)
        await notifier.send(n)  # a resend (after a crash) carries the same key
        await notifier.aclose()
    first, second = sink.requests
    assert first.json["alerts"][0]["scope"] == {"trunk": "carrier-c"}
    assert first.json["version"] == 1 and first.json["id"] == n.id
    assert verify("sh4red", first.body, first.headers[SIGNATURE_HEADER])
    assert not verify("other", first.body, first.headers[SIGNATURE_HEADER])
    assert first.headers[IDEMPOTENCY_HEADER] == second.headers[IDEMPOTENCY_HEADER] == f"{n.id}.ops"
    assert first.headers[EVENT_HEADER] == "firing"


async def test_unsigned_when_no_secret():
    async with HttpSink() as sink:
        notifier = build_notifier({"type": "webhook", "url": sink.url})
        await notifier.send(note())
        await notifier.aclose()
    assert SIGNATURE_HEADER not in sink.requests[0].headers


@pytest.mark.parametrize(
    ("reply", "retry", "retry_after"),
    [(Reply(503), True, None), (Reply(429, headers={"Retry-After": "3"}), True, 3.0), (Reply(410), False, None),
     (Reply(408), True, None)],
)
async def test_webhook_errors(reply, retry, retry_after):
    async with HttpSink() as sink:
        sink.script = [reply]
        notifier = build_notifier({"type": "webhook", "url": sink.url + "?token=TOPSECRET", "secret": "HMACSECRET"})
        with pytest.raises(NotifyError) as info:
            await notifier.send(note())
        await notifier.aclose()
    assert (info.value.retry, info.value.retry_after) == (retry, retry_after)
    text = str(info.value) + repr(notifier) + repr(notifier.config) + notifier.describe()
    assert "TOPSECRET" not in text and "HMACSECRET" not in text


async def test_console_output_is_inert():
    out = io.StringIO()
    notifier = ConsoleNotifier(stream=out)
    await notifier.send(note(scope={"caller_number": "+1555\x1b[2J\r\nFAKE LINE"}))
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert "FAKE LINE" in text and "\nFAKE LINE" not in text


def test_unknown_type_and_unique_names():
    with pytest.raises(ValueError, match="unknown notifier type"):
        build_notifier({"type": "pager"})
    names = [n.name for n in build_notifiers([{"type": "console"}, {"type": "console"}, {"type": "webhook",
                                                                                          "url": "http://x/"}])]
    assert names == ["console", "console-2", "webhook"]
