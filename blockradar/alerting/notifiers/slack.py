"""Slack incoming-webhook notifier: Block Kit built with ``slack_sdk.models.blocks``, posted with aiohttp.

Every piece of text that came from the network (caller names, numbers, SIP phrases, call ids,
redress values, labels) is escaped for mrkdwn (``&``, ``<``, ``>``), so ``<!channel>`` cannot ping
and ``<https://evil|click>`` cannot forge a link. Redress URLs become links only when they are
plain ``https`` URLs without any character that could end or split a Slack link. Block Kit limits
(50 blocks, 150-character header, 10 fields of 2000, 3000-character texts, 10 context elements)
are respected by truncation. 429 answers are retried after their ``Retry-After``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from slack_sdk.models.blocks import (
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from blockradar.alerting.notifiers.base import (
    AlertDict,
    Notification,
    NotifierConfig,
    SecretValue,
    one_line,
    status_page_url,
)
from blockradar.alerting.notifiers.http import HttpPoster
from blockradar.alerting.notifiers.wording import facts, redress_parts, state_line, unlisted_line
from blockradar.redress import LINKABLE_URL
from blockradar.secret import mask_url

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_TEXT = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
MAX_CONTEXT = 10
MAX_ALERTS_DETAILED = 8


class SlackConfig(NotifierConfig):
    type: Literal["slack"] = "slack"
    webhook_url: SecretValue
    status_url: str | None = None  # blockradar's status page as readers reach it: a link to each number's card


def mrkdwn_escape(text: Any) -> str:
    """Escape network text for Slack mrkdwn (and plain_text): &, <, > become entities; one line."""
    return one_line(text, 1000).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def safe_link(url: str | None, label: str) -> str:
    """A Slack link when ``url`` is a plain https URL, else the escaped text (never a forged link)."""
    if url and LINKABLE_URL.fullmatch(url) and "|" not in url and ">" not in url and "<" not in url:
        return f"<{url}|{mrkdwn_escape(label)}>"
    return mrkdwn_escape(url or label)


def page_link(url: str | None, label: str) -> str | None:
    """A link to our status page (its base from the config; the number in it is URL-quoted)."""
    if url and url.startswith(("https://", "http://")) and not any(c in url for c in "|<> "):
        return f"<{url}|{mrkdwn_escape(label)}>"
    return None


MAX_NAMES = 40  # alerts beyond the detailed ones are listed by name, up to this many


def _field(title: str, value: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=_cut(f"*{title}*\n{value}", MAX_FIELD))


def alert_blocks(alert: AlertDict, status_url: str | None = None) -> list[Any]:
    e = mrkdwn_escape
    resolved = alert.get("state") == "resolved"
    icon = ":white_check_mark:" if resolved else (":pause_button:" if alert.get("held") else ":rotating_light:")
    head = f"{icon} *{e(state_line(alert))}*"
    if alert.get("kind") != "self" and alert.get("description"):
        head += f"\n{e(alert.get('description', ''))}"
    card = page_link(status_page_url(status_url, alert), "Open on the status page")
    if card:
        head += f"\n{card}"
    fields = [_field(label, e(value)) for label, value in facts(alert)]
    blocks: list[Any] = [SectionBlock(text=MarkdownTextObject(text=_cut(head, MAX_TEXT)), fields=fields[:MAX_FIELDS])]
    samples = alert.get("samples", [])
    if samples:
        lines = [f"`{e(s.get('call_id', ''))}` to {e(s.get('callee') or '-')}: {e(s.get('code') or '-')} "
                 f"{e(s.get('phrase') or '')}" for s in samples[:5]]
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_cut("Sample calls:\n" + "\n".join(lines),
                                                                           MAX_TEXT))]))
    redress = alert.get("redress", [])
    if redress:
        labels = {"tel": "tel ", "email": "email ", "id": "id ", "location": "blocked at "}
        parts = []
        for entry in redress[:5]:
            bits = [safe_link(value, "redress request") if key == "url" else labels[key] + e(value)
                    for key, value in redress_parts(entry)]
            parts.append(" | ".join(bits))
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut("*Redress:* " + "\n".join(parts), MAX_TEXT))))
    todo = alert.get("what_to_do", {})
    if todo:
        elements = [MarkdownTextObject(text=_cut(f"*{e(k)}:* {e(v)}", MAX_TEXT)) for k, v in todo.items()]
        blocks.append(ContextBlock(elements=elements[:MAX_CONTEXT]))
    actions = alert.get("actions", [])
    if actions:
        blocks.append(SectionBlock(text=MarkdownTextObject(
            text=_cut("*Actions:* " + "\n".join(e(a) for a in actions[:5]), MAX_TEXT))))
    return blocks


def build_payload(notification: Notification, status_url: str | None = None) -> dict[str, Any]:
    """The webhook JSON body: fallback ``text`` plus ``blocks`` (dicts, validated by slack_sdk)."""
    title = notification.title()
    blocks: list[Any] = [HeaderBlock(text=PlainTextObject(text=_cut(mrkdwn_escape(title), MAX_HEADER)))]
    if notification.test:
        blocks.append(SectionBlock(text=MarkdownTextObject(
            text="*This is a test message from `blockradar notify-test`; nothing is being blocked.*")))
    alerts = notification.alerts
    shown = 0
    for alert in alerts[:MAX_ALERTS_DETAILED]:
        more = alert_blocks(alert, status_url)
        if len(blocks) + len(more) + 4 > MAX_BLOCKS:
            break
        blocks.append(DividerBlock())
        blocks.extend(more)
        shown += 1
    rest = alerts[shown:]
    if rest:
        names: list[str] = []
        room = MAX_TEXT - 100  # whole names (and whole links) only: a cut one would be a broken link
        for alert in rest[:MAX_NAMES]:
            name = ", ".join(str(v) for v in (alert.get("scope") or {}).values()) or str(alert.get("threshold", ""))
            shown_name = page_link(status_page_url(status_url, alert), name) or mrkdwn_escape(name)
            if len(shown_name) + 2 > room:
                break
            room -= len(shown_name) + 2
            names.append(shown_name)
        beyond = f" and {len(rest) - len(names)} more" if len(rest) > len(names) else ""
        blocks.append(SectionBlock(text=MarkdownTextObject(
            text=_cut(f"*and {len(rest)} more:* {', '.join(names)}{beyond}", MAX_TEXT))))
    if unlisted_line(notification):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut(mrkdwn_escape(unlisted_line(notification)),
                                                                     MAX_TEXT))))
    overview = page_link(status_page_url(status_url), "All of them on the status page")
    if overview and (rest or notification.unlisted):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=overview)))
    group = ", ".join(f"{mrkdwn_escape(k)}={mrkdwn_escape(v)}" for k, v in notification.group_labels.items() if v)
    blocks.append(ContextBlock(elements=[MarkdownTextObject(
        text=_cut(f"blockradar | group {group or '-'} | {len(alerts)} alert(s) | id {notification.id}", MAX_TEXT))]))
    return {"text": _cut(mrkdwn_escape(title), MAX_TEXT), "blocks": [b.to_dict() for b in blocks[:MAX_BLOCKS]]}


class SlackNotifier:
    service_name: ClassVar[str] = "Slack"
    type: ClassVar[str] = "slack"
    config_model: ClassVar[type[SlackConfig]] = SlackConfig
    default_rate_per_s: ClassVar[float] = 1.0  # Slack allows about one message per second per webhook

    def __init__(self, config: SlackConfig) -> None:
        self.config = config
        self.name = config.name or "slack"
        self.rate_per_s = config.rate_per_s or self.default_rate_per_s
        # Slack answers 200 "ok" on success; anything else is an error, even another 2xx
        self._http = HttpPoster("slack", config.timeout, accept=lambda status: status == 200)

    def describe(self) -> str:
        return f"{self.name}: slack {mask_url(self.config.webhook_url.reveal())}"

    def __repr__(self) -> str:
        return f"SlackNotifier({self.describe()!r})"

    async def send(self, notification: Notification) -> None:
        await self._http.post(self.config.webhook_url.reveal(), where=self.describe(),
                              json=build_payload(notification, self.config.status_url))

    async def aclose(self) -> None:
        await self._http.aclose()
