"""Email notifier over SMTP with aiosmtplib: STARTTLS or implicit TLS, optional auth, text + HTML.

The subject says what and where: ``[blockradar] CRITICAL analytics blocks on +15557650003 via
carrier-c``. Header injection is impossible: every network value is made single-line (CR, LF and
other control characters become spaces) before it reaches a header, and the message is built with
``email.message.EmailMessage`` (SMTP policy), which refuses line breaks in headers anyway. The HTML
part escapes everything with ``html.escape``.
"""

from __future__ import annotations

import hashlib
import html
import socket
import ssl
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, ClassVar, Literal

import aiosmtplib
from pydantic import Field, model_validator

from blockradar.alerting.notifiers.base import (
    AlertDict,
    Notification,
    NotifierConfig,
    NotifyError,
    SecretValue,
    network_reason,
    one_line,
    status_page_url,
)
from blockradar.alerting.notifiers.wording import (
    facts,
    redress_line,
    redress_parts,
    sample_line,
    state_line,
    unlisted_line,
)
from blockradar.redress import LINKABLE_URL

SUBJECT_PREFIX = "[blockradar]"
# RFC 5322 allows 998-character lines; folding at 78 made Python start the subject on a continuation line
_POLICY = policy.SMTP.clone(max_line_length=998)


class EmailConfig(NotifierConfig):
    type: Literal["email"] = "email"
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)  # default: 465 with tls, else 587
    starttls: bool = True
    tls: bool = False  # implicit TLS (port 465)
    username: str | None = None
    password: SecretValue | None = None
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    validate_certs: bool = True
    ca_file: str | None = None  # extra CA bundle (a private mail relay)
    timeout: float = Field(default=30.0, gt=0)
    status_url: str | None = None  # blockradar's status page as readers reach it: links to numbers' cards
    max_detailed: int = Field(default=20, ge=1, le=100)  # alerts shown in full; the rest as a list of names

    @model_validator(mode="after")
    def _tls_modes(self) -> EmailConfig:
        for addr in [self.sender, *self.to]:
            if any(c in addr for c in "\r\n,;") or "@" not in addr:
                raise ValueError(f"not a single email address: {addr!r}")
        return self


def subject_of(notification: Notification) -> str:
    return one_line(f"{SUBJECT_PREFIX} {notification.title()}", 200)


def _alert_text(alert: AlertDict) -> list[str]:
    """One alert as text lines: its state, what it watches, the facts for its kind, samples, redress, what to do."""
    o = one_line
    lines = [o(state_line(alert), 300)]
    if alert.get("kind") != "self" and alert.get("description"):
        lines.append(f"  {o(alert.get('description', ''), 300)}")
    lines += [f"  {label}: {o(value, 300)}" for label, value in facts(alert)]
    for sample in alert.get("samples", []):
        lines.append(f"  call {o(sample_line(dict(sample)), 300)}")
    for entry in alert.get("redress", []):
        lines.append(f"  redress: {o(redress_line(entry), 500)}")
    for cat, todo in alert.get("what_to_do", {}).items():
        lines.append(f"  what to do ({o(cat)}): {o(todo, 500)}")
    for action in alert.get("actions", []):
        lines.append(f"  action: {o(action, 300)}")
    return lines


MAX_NAMES = 200  # alerts beyond the detailed ones are listed by name, up to this many


def _names(alerts: list[AlertDict]) -> list[str]:
    return [", ".join(str(v) for v in (a.get("scope") or {}).values()) or str(a.get("threshold", "")) for a in alerts]


def render_text(notification: Notification, max_detailed: int = 20, status_url: str | None = None) -> str:
    lines = [one_line(notification.title(), 300), ""]
    if notification.test:
        lines += ["This is a test message from `blockradar notify-test`; nothing is being blocked.", ""]
    for alert in notification.alerts[:max_detailed]:
        lines += [*_alert_text(alert)]
        card = status_page_url(status_url, alert)
        if card:
            lines.append(f"  on the status page: {card}")
        lines.append("")
    rest = notification.alerts[max_detailed:]
    if rest:
        names = _names(rest)
        shown = ", ".join(one_line(n, 60) for n in names[:MAX_NAMES])
        more = f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
        lines += [f"Also in this message ({len(rest)}): {shown}{more}", ""]
    if unlisted_line(notification):
        lines += [unlisted_line(notification), ""]
    if status_url and (rest or notification.unlisted):
        lines += [f"All of them: {status_page_url(status_url)}", ""]
    lines.append(f"notification id {notification.id}")
    return "\n".join(lines) + "\n"


def _html_link(url: str) -> str:
    """A link only for a plain https URL; anything else is shown as escaped text."""
    h = html.escape
    if LINKABLE_URL.fullmatch(url):
        return f'<a href="{h(url, quote=True)}">{h(url)}</a>'
    return h(url)


def _alert_html(alert: AlertDict) -> str:
    h = html.escape
    o = one_line
    parts = [f"<h3>{h(o(state_line(alert), 300))}</h3>"]
    if alert.get("kind") != "self" and alert.get("description"):
        parts.append(f"<p>{h(o(alert.get('description', ''), 300))}</p>")
    rows = "".join(f"<tr><th align=\"left\">{h(label)}</th><td>{h(o(value, 300))}</td></tr>"
                   for label, value in facts(alert))
    parts.append(f"<table>{rows}</table>")
    samples = alert.get("samples", [])
    if samples:
        parts.append("<p>Sample calls:</p><ul>" + "".join(f"<li>{h(o(sample_line(dict(s)), 300))}</li>"
                                                         for s in samples) + "</ul>")
    redress = alert.get("redress", [])
    if redress:
        items = []
        for entry in redress:
            bits = [(_html_link(v) if k == "url" else h(o(v, 200))) for k, v in redress_parts(entry)]
            items.append("<li>" + " | ".join(bits) + "</li>")
        parts.append("<p>Redress (the carrier's contacts):</p><ul>" + "".join(items) + "</ul>")
    for cat, todo in alert.get("what_to_do", {}).items():
        parts.append(f"<p><b>What to do ({h(o(cat))}):</b> {h(o(todo, 500))}</p>")
    actions = alert.get("actions", [])
    if actions:
        parts.append("<p>Actions:</p><ul>" + "".join(f"<li>{h(o(a, 300))}</li>" for a in actions) + "</ul>")
    return "".join(parts)


def render_html(notification: Notification, max_detailed: int = 20, status_url: str | None = None) -> str:
    h = html.escape
    parts = [f"<h2>{h(one_line(notification.title(), 300))}</h2>"]
    if notification.test:
        parts.append("<p><b>This is a test message from blockradar notify-test; nothing is being blocked.</b></p>")
    for alert in notification.alerts[:max_detailed]:
        parts.append(_alert_html(alert))
        card = status_page_url(status_url, alert)
        if card:
            parts.append(f"<p>{_page_link(card, 'Open on the status page')}</p>")
    rest = notification.alerts[max_detailed:]
    if rest:
        items = []
        for alert, name in list(zip(rest, _names(rest), strict=True))[:MAX_NAMES]:
            card = status_page_url(status_url, alert)
            items.append(f"<li>{_page_link(card, one_line(name, 60)) if card else h(one_line(name, 60))}</li>")
        more = f"<p>and {len(rest) - MAX_NAMES} more</p>" if len(rest) > MAX_NAMES else ""
        parts.append(f"<p><b>Also in this message ({len(rest)}):</b></p><ul>{''.join(items)}</ul>{more}")
    if unlisted_line(notification):
        parts.append(f"<p><b>{h(unlisted_line(notification))}</b></p>")
    if status_url and (rest or notification.unlisted):
        parts.append(f"<p>{_page_link(status_page_url(status_url) or '', 'All of them on the status page')}</p>")
    parts.append(f"<p style=\"color:#888\">notification id {h(notification.id)}</p>")
    return "<html><body>" + "".join(parts) + "</body></html>"


def _page_link(url: str, label: str) -> str:
    """A link to our own status page (its URL comes from the config, not the network; still escaped)."""
    h = html.escape
    if url.startswith(("https://", "http://")):
        return f'<a href="{h(url, quote=True)}">{h(label)}</a>'
    return h(label)


def message_domain(config: EmailConfig) -> str:
    """The host part of our Message-IDs: this machine's fully qualified name when it has one, else the
    sender's domain (never a made-up name a spam filter would frown on)."""
    fqdn = socket.getfqdn()
    if "." in fqdn and not fqdn.startswith("localhost") and not fqdn.endswith(".localdomain"):
        return fqdn
    return config.sender.rsplit("@", 1)[-1].strip(">").strip() or "localhost"


def thread_id(group_key: str, domain: str) -> str:
    """The Message-ID every message of an alert group refers to: firing, repeats and resolved of one
    group (one number, one trunk) thread together in any mail client."""
    return f"<blockradar.group.{hashlib.sha256(group_key.encode()).hexdigest()[:24]}@{domain}>"


def build_message(config: EmailConfig, notification: Notification) -> EmailMessage:
    msg = EmailMessage(policy=_POLICY)
    domain = message_domain(config)
    msg["Subject"] = subject_of(notification)
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Date"] = format_datetime(datetime.now(UTC))  # "+0000": the time is known to be UTC (RFC 5322 3.3)
    msg["Message-ID"] = make_msgid(domain=domain)
    if not notification.test:
        msg["In-Reply-To"] = thread_id(notification.group_key, domain)
        msg["References"] = thread_id(notification.group_key, domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, no loops
    msg["X-Auto-Response-Suppress"] = "All"  # the same for Exchange
    msg["X-Blockradar-Notification"] = notification.id
    msg.set_content(render_text(notification, config.max_detailed, config.status_url))
    msg.add_alternative(render_html(notification, config.max_detailed, config.status_url), subtype="html")
    return msg


class EmailNotifier:
    service_name: ClassVar[str] = "Email (SMTP)"
    type: ClassVar[str] = "email"
    config_model: ClassVar[type[EmailConfig]] = EmailConfig
    default_rate_per_s: ClassVar[float] = 0.5

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.name = config.name or "email"
        self.rate_per_s = config.rate_per_s or self.default_rate_per_s

    def describe(self) -> str:
        c = self.config
        mode = "tls" if c.tls else ("starttls" if c.starttls else "plain")  # implicit TLS wins over STARTTLS
        auth = f" as {c.username} (password ********)" if c.username else ""
        return f"{self.name}: email via {c.host}:{self._port()} ({mode}){auth} to {', '.join(c.to)}"

    def __repr__(self) -> str:
        return f"EmailNotifier({self.describe()!r})"

    def _port(self) -> int:
        return self.config.port or (465 if self.config.tls else 587)

    def _tls_context(self) -> ssl.SSLContext | None:
        c = self.config
        if not (c.tls or c.starttls):
            return None
        ctx = ssl.create_default_context(cafile=c.ca_file)
        if not c.validate_certs:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def send(self, notification: Notification) -> None:
        c = self.config
        msg = build_message(c, notification)
        kwargs: dict[str, Any] = {
            "hostname": c.host,
            "port": self._port(),
            "use_tls": c.tls,
            "start_tls": c.starttls if not c.tls else False,
            "timeout": c.timeout,
            "tls_context": self._tls_context(),
        }
        if c.username:
            kwargs["username"] = c.username
            kwargs["password"] = c.password.reveal() if c.password else ""
        try:
            # serialized here: aiosmtplib would re-fold with its own 78-column policy
            await aiosmtplib.send(msg.as_bytes(policy=_POLICY), sender=c.sender, recipients=c.to, **kwargs)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise NotifyError(f"email: authentication refused ({exc.code})", retry=False) from None
        except aiosmtplib.SMTPRecipientsRefused:
            raise NotifyError("email: every recipient was refused", retry=False) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise NotifyError(f"email: SMTP {exc.code} {one_line(exc.message, 120)}", retry=exc.code < 500) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise NotifyError(f"email: cannot reach {c.host}:{self._port()}: {network_reason(exc)}") from None
