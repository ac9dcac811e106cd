"""Email notifier against a real SMTP server (aiosmtpd): STARTTLS and implicit TLS with a trustme
certificate, AUTH, text + HTML parts, the subject, and header injection attempts."""

from __future__ import annotations

import ssl
import time
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from blockradar.alerting.notifiers import build_notifier
from blockradar.alerting.notifiers.base import Notification, NotifyError
from blockradar.alerting.notifiers.email import build_message, message_domain
from blockradar.testing.ports import free_port

T0 = 1_700_000_000.0


class Recorder:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.auth_data))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"blockradar" and auth_data.password == b"pa55word"
    return AuthResult(success=ok, handled=False, auth_data=auth_data)  # handled=False: aiosmtpd answers 535




@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def starttls_server(ca):
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=server_context(ca),
                            require_starttls=True, authenticator=authenticator, auth_required=True)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def implicit_tls_server(ca):
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=server_context(ca),
                            authenticator=authenticator, auth_required=True, auth_require_tls=False)
    controller.start()
    yield handler, port
    controller.stop()


def note(**alert):
    base = {"threshold": "number-analytics-blocks", "severity": "critical", "state": "firing", "kind": "number",
            "change": "new", "scope": {"caller_number": "+15557650003"}, "labels": {"trunk": "carrier-c"},
            "trunks": {"carrier-c": 3},
            "categories": {"analytics_block": 3}, "sip_codes": {"603": 3}, "count": 3, "attempts": 4, "rate": 0.75,
            "window_s": 3600.0, "samples": [{"call_id": "c1", "callee": "+12125550100", "code": 603,
                                             "phrase": "Network Blocked", "category": "analytics_block"}],
            "redress": [{"url": "https://redress.example.com/r", "tel": "+18005550100", "id": "BLK-42",
                         "email": "redress@example.com", "location": "LN"}],
            "what_to_do": {"analytics_block": "Stop dialing from this number."}}
    return Notification("g", {"trunk": "carrier-c"}, "firing", [{**base, **alert}], T0)


def email_config(port, ca_file, **kw):
    return {"type": "email", "host": "127.0.0.1", "port": port, "username": "blockradar", "password": "pa55word",
            "from": "blockradar@example.com", "to": ["noc@example.com"], "ca_file": ca_file, "timeout": 10, **kw}


async def test_starttls_with_auth_delivers_text_and_html(starttls_server, ca_file):
    handler, port = starttls_server
    notifier = build_notifier(email_config(port, ca_file, starttls=True))
    await notifier.send(note())
    ((sender, rcpts, raw, auth),) = handler.messages
    assert (sender, rcpts) == ("blockradar@example.com", ["noc@example.com"])
    assert auth.login == b"blockradar"  # authenticated, over TLS (the server requires both)
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "[blockradar] CRITICAL analytics blocks on +15557650003 via carrier-c"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "number-analytics-blocks (critical): NEW" in text
    assert "Matching / attempts: 3 / 4 (75%) in 1h" in text
    assert "Trunks: carrier-c: 3" in text
    assert ("redress: https://redress.example.com/r | tel +18005550100 | email redress@example.com | id BLK-42 | "
            "blocked at LN") in text  # every 603+ contact, the id and location included
    assert "<h2>CRITICAL analytics blocks on +15557650003 via carrier-c</h2>" in html
    assert '<a href="https://redress.example.com/r">' in html and "BLK-42" in html


# aiosmtpd cannot see that the socket itself is TLS-wrapped; the warning does not apply
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_implicit_tls(implicit_tls_server, ca_file):
    handler, port = implicit_tls_server
    notifier = build_notifier(email_config(port, ca_file, tls=True))
    await notifier.send(note())
    assert len(handler.messages) == 1


async def test_wrong_password_is_permanent_and_never_echoed(starttls_server, ca_file):
    _, port = starttls_server
    notifier = build_notifier(email_config(port, ca_file, password="WRONGpa55"))
    with pytest.raises(NotifyError) as info:
        await notifier.send(note())
    assert info.value.retry is False
    assert "WRONGpa55" not in str(info.value)
    assert "WRONGpa55" not in repr(notifier) + repr(notifier.config) + notifier.describe()


async def test_untrusted_certificate_is_refused(starttls_server):
    _, port = starttls_server
    notifier = build_notifier(email_config(port, None))  # the system CAs do not know our test CA
    with pytest.raises(NotifyError) as info:
        await notifier.send(note())
    assert info.value.retry is True


async def test_server_down_is_retryable(ca_file):
    notifier = build_notifier(email_config(free_port(), ca_file))
    with pytest.raises(NotifyError) as info:
        await notifier.send(note())
    assert info.value.retry


@pytest.mark.parametrize(
    "hostile",
    [
        "Network Blocked\r\nBcc: victim@example.net",
        "x\nSubject: you won\n\nbody",
        "x\rX-Injected: 1",
        "<script>alert(1)</script>",
    ],
)
async def test_header_injection_is_impossible(starttls_server, ca_file, hostile):
    handler, port = starttls_server
    alert = {"scope": {"caller_number": hostile}, "labels": {"trunk": hostile},
             "samples": [{"call_id": hostile, "callee": hostile, "code": 603, "phrase": hostile,
                          "category": "analytics_block"}]}
    notifier = build_notifier(email_config(port, ca_file))
    await notifier.send(note(**alert))
    ((_, rcpts, raw, _),) = handler.messages
    assert rcpts == ["noc@example.com"]
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert msg.get_all("Subject") and len(msg.get_all("Subject")) == 1
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    assert msg["Subject"].startswith("[blockradar] CRITICAL analytics blocks on ")
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html


def test_message_headers_come_only_from_config():
    cfg = build_notifier(email_config(25, None)).config
    msg = build_message(cfg, note(scope={"caller_number": "a\r\nBcc: x@y"}))
    assert set(msg.keys()) == {"Subject", "From", "To", "Date", "Message-ID", "X-Blockradar-Notification",
                               "MIME-Version", "Content-Type", "In-Reply-To", "References", "Auto-Submitted",
                               "X-Auto-Response-Suppress"}


def test_a_message_holds_up_in_a_mail_client():
    """A UTC date with +0000, a Message-ID at a real host, marked automatic, and the firing and the
    resolved of one group threaded under one reference (a different group: a different thread)."""
    cfg = build_notifier(email_config(25, None)).config
    firing = build_message(cfg, note())
    resolved_note = note(state="resolved", change="resolved", resolved_at="2026-11-30T02:00:00.000Z")
    resolved_note.status = "resolved"
    resolved = build_message(cfg, resolved_note)
    other = note()
    other.group_key = "{caller_number='+15550000000'}"
    elsewhere = build_message(cfg, other)
    assert firing["Date"].endswith("+0000")
    assert abs(parsedate_to_datetime(firing["Date"]).timestamp() - time.time()) < 60
    host = firing["Message-ID"].rsplit("@", 1)[1].rstrip(">")
    assert host == message_domain(cfg) and "." in host and host != "blockradar"
    assert firing["Auto-Submitted"] == "auto-generated"
    assert firing["Message-ID"] != resolved["Message-ID"]
    assert firing["References"] == resolved["References"] == firing["In-Reply-To"]
    assert elsewhere["References"] != firing["References"]


def test_a_huge_group_is_a_message_of_bounded_size_with_links_to_the_status_page():
    cfg = build_notifier({**email_config(25, None), "status_url": "https://radar.example.net/",
                          "max_detailed": 5}).config
    big = note()
    template = big.alerts[0]
    big.alerts = [{**template, "scope": {"caller_number": f"+1555700{i:04d}"}} for i in range(100)]
    big.unlisted = {"new": 400}
    msg = build_message(cfg, big)
    text = msg.get_body(("plain",)).get_content()
    html_part = msg.get_body(("html",)).get_content()
    assert len(msg.as_bytes()) < 120_000  # was 549 KB for 500 numbers
    assert text.count("on the status page: https://radar.example.net/numbers/") == 5
    assert "Also in this message (95): +15557000005, +15557000006" in text
    assert "All of them: https://radar.example.net/" in text
    assert '<a href="https://radar.example.net/numbers/+15557000099">+15557000099</a>' in html_part


@pytest.mark.parametrize("addr", ["noc@example.com\r\nBcc: x@y", "a@b.c, d@e.f", "nobody"])
def test_addresses_are_single_and_clean(addr):
    with pytest.raises(ValueError):
        build_notifier(email_config(25, None, to=[addr]))
