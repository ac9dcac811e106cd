"""The words of a message, shared by every notifier so Slack, email and the console say the same:
category nouns, the title of a notification per alert kind, the names of the daemon's own alerts,
and the marks of what changed in a grouped message.

Everything returned is plain text that may hold network text (numbers, trunk names): each renderer
escapes it for its medium.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from blockradar.durations import format_duration

if TYPE_CHECKING:
    from blockradar.alerting.notifiers.base import AlertDict, Notification

# category -> (one, many)
CATEGORY_NOUNS: dict[str, tuple[str, str]] = {
    "analytics_block": ("analytics block", "analytics blocks"),
    "unwanted": ("unwanted-call mark (607)", "unwanted-call marks (607)"),
    "provider_block": ("provider block", "provider blocks"),
    "identity_failure": ("identity failure", "identity failures"),
    "declined": ("decline", "declines"),
    "forbidden": ("forbidden answer", "forbidden answers"),
    "busy": ("busy answer", "busy answers"),
    "no_answer": ("unanswered call", "unanswered calls"),
    "invalid_number": ("invalid number", "invalid numbers"),
    "network_failure": ("network failure", "network failures"),
    "answered": ("answered call", "answered calls"),
    "rejected_unknown": ("rejection (reason unknown)", "rejections (reason unknown)"),
    "other": ("other failure", "other failures"),
}

# the daemon's own alerts (``selfhealth.py``): alertname -> what it is, as a title says it
SELF_ALERT_NAMES: dict[str, str] = {
    "pbx-link-down": "PBX link down",
    "pbx-auth-failing": "PBX refuses blockradar's login",
    "config-reload-failed": "config reload failed",
    "outcomes-dropped": "calls dropped: blockradar cannot keep up",
    "store-failing": "blockradar cannot write its store",
    "action-failing": "an action cannot change the dialer",
}

CHANGE_WORDS = {"new": "NEW", "firing": "still firing", "resolved": "RESOLVED"}


def category_noun(name: str, count: int = 2) -> str:
    """``analytics blocks`` (``count`` != 1) or ``analytics block``; unknown categories by their name."""
    one, many = CATEGORY_NOUNS.get(name, (name.replace("_", " "), name.replace("_", " ")))
    return one if count == 1 else many


def what_of(alerts: Iterable[AlertDict]) -> str:
    """What a set of alerts counts: the categories that really have calls (``analytics blocks``,
    ``analytics blocks/identity failures``), else what their thresholds watch, else the threshold."""
    alerts = list(alerts)
    seen: list[str] = []
    for alert in alerts:
        seen += [c for c, n in alert.get("categories", {}).items() if n and c not in seen]
    if not seen:
        for alert in alerts:
            seen += [c for c in alert.get("watched", []) if c not in seen]
    if not seen:
        return str(alerts[0].get("threshold", "alert")) if alerts else "alerts"
    return "/".join(category_noun(c) for c in seen)


def trunks_of(alert: AlertDict) -> list[str]:
    """Every trunk the alert's matching calls went through: its label (at firing) and its window now."""
    names = {t for t in (alert.get("labels", {}).get("trunk") or "").split(",") if t}
    names.update(alert.get("trunks", {}))
    return sorted(names)


def self_alert_name(alert: AlertDict) -> str:
    name = alert.get("labels", {}).get("alertname", "")
    return SELF_ALERT_NAMES.get(name, name or str(alert.get("threshold", "self-alert")))


def changes(notification: Notification) -> str:
    """``2 new, 1 resolved`` for a grouped message that mixes; ``still firing`` for a repeat; else ``''``."""
    counts = {"new": 0, "firing": 0, "resolved": 0}
    for alert in notification.alerts:
        change = alert.get("change")
        if change in counts:
            counts[change] += 1
    for change, n in notification.unlisted.items():
        if change in counts:
            counts[change] += n
    present = [change for change, n in counts.items() if n]
    if present == ["firing"]:
        return "still firing"
    if len(present) < 2:
        return ""  # all new, or all resolved: the title says it already
    return ", ".join(f"{counts[c]} {'still firing' if c == 'firing' else c}" for c in present)


def unlisted_line(notification: Notification) -> str:
    """``and 2,400 more alerts in this group not listed here (2,390 new, 10 resolved): blockradar report
    lists them all``; empty when every alert is listed."""
    counts = {c: n for c, n in notification.unlisted.items() if n}
    if not counts:
        return ""
    total = sum(counts.values())
    parts = ", ".join(f"{n:,} {'still firing' if c == 'firing' else c}" for c, n in counts.items())
    return (f"and {total:,} more alert{'s' if total != 1 else ''} in this group not listed here ({parts}): "
            f"`blockradar report` lists them all")


def title(notification: Notification) -> str:
    """``CRITICAL analytics blocks on +15557650003 via carrier-c``, ``WARNING analytics blocks on 40
    numbers via carrier-c (3 new, 1 resolved)``, ``RESOLVED ...``, ``CRITICAL PBX link down: pbx1``."""
    prefix = "TEST " if notification.test else ""
    state = "RESOLVED " if notification.status == "resolved" else ""
    alerts = notification.firing or notification.alerts
    if not alerts:
        return f"{prefix}{state}no alerts"
    severity = "" if state else notification.severity().upper() + " "
    if all(a.get("kind") == "self" for a in alerts):
        subjects = sorted({", ".join(a.get("scope", {}).values()) for a in alerts})
        names = sorted({self_alert_name(a) for a in alerts})
        return f"{prefix}{state}{severity}{'/'.join(names)}: {', '.join(subjects)}"
    scopes = {tuple(a.get("scope", {}).items()) for a in alerts}
    group_trunk = notification.group_labels.get("trunk")
    if len(scopes) == 1:
        scope = dict(next(iter(scopes)))
        if set(scope) == {"trunk"}:
            on = f" on trunk {scope['trunk']}"
        else:
            on = f" on {', '.join(scope.values()) or '-'}"
            if "trunk" not in scope:
                trunks = sorted({t for a in alerts for t in trunks_of(a)})
                if trunks:
                    on += f" via {', '.join(trunks)}"
    else:
        kinds = {k for a in alerts for k in a.get("scope", {})}
        noun = {frozenset({"caller_number"}): "numbers", frozenset({"trunk"}): "trunks"}.get(frozenset(kinds), "scopes")
        on = f" on {len(scopes)} {noun}"
        if group_trunk:
            on += f" via {group_trunk.replace(',', ', ')}"
    text = f"{prefix}{state}{severity}{what_of(alerts)}{on}"
    change = changes(notification)
    return f"{text} ({change})" if change else text


# -- the body of one alert, per kind ----------------------------------------------------------------

def _counts(counts: dict[str, int], noun: Callable[[str], str] = str) -> str:
    return ", ".join(f"{noun(k)}: {v}" for k, v in counts.items()) or "-"


def _window(alert: AlertDict) -> str:
    return format_duration(float(alert.get("window_s") or 0))


def _lasted(start: str | None, end: str | None) -> str:
    try:
        seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except ValueError:
        return "-"
    return format_duration(max(0, round(seconds)))


def state_line(alert: AlertDict) -> str:
    """``number-strong-block (warning): NEW``; ``... still firing, held: a PBX link it rests on is down``."""
    change = alert.get("change") or alert.get("state", "")
    words = CHANGE_WORDS.get(str(change), str(change))
    if alert.get("held"):
        words += ", held: a PBX link it rests on is down, so it can neither resolve nor repeat until it is back"
    name = self_alert_name(alert) if alert.get("kind") == "self" else alert.get("threshold", "")
    return f"{name} ({alert.get('severity', '')}): {words}"


def facts(alert: AlertDict) -> list[tuple[str, str]]:
    """(label, value) pairs that say what happened, for the alert's kind and state."""
    kind = alert.get("kind")
    resolved = alert.get("state") == "resolved"
    scope = alert.get("scope", {})
    if kind == "self":
        subject = ", ".join(f"{k} {v}" for k, v in scope.items()) or "-"
        out = [("What", str(alert.get("detail") or alert.get("description") or "-")), ("Where", subject),
               ("Since", str(alert.get("started_at") or "-"))]
        if resolved:
            out.append(("Resolved", str(alert.get("resolved_at") or "-")))
        return out
    out = [("Number" if kind == "number" else "Scope",
            ", ".join(scope.values()) if kind == "number" else ", ".join(f"{k}={v}" for k, v in scope.items()))]
    if "trunk" not in scope:
        trunks = alert.get("trunks") or {}
        out.append(("Trunks", _counts(trunks) if trunks else ", ".join(trunks_of(alert)) or "-"))
    rate = alert.get("rate")
    figures = (f"{alert.get('count', 0)} / {alert.get('attempts', 0)}" + (f" ({rate:.0%})" if rate is not None else "")
               + f" in {_window(alert)}")
    if resolved:
        out += [
            ("Cleared", f"at {alert.get('resolved_at') or '-'}: {figures} now"),
            ("Resolve rule", str(alert.get("resolve_rule") or "-")),
            ("Firing for", f"{_lasted(alert.get('fired_at'), alert.get('resolved_at'))} "
                           f"(since {alert.get('fired_at') or '-'})"),
            ("Last matching call", str(alert.get("last_seen") or "-")),
        ]
        return out
    out += [
        ("Matching / attempts", figures),
        ("Categories", _counts(alert.get("categories", {}), lambda c: category_noun(c))),
        ("SIP codes", _counts(alert.get("sip_codes", {}))),
        ("First / last seen", f"{alert.get('first_seen') or '-'} / {alert.get('last_seen') or '-'}"),
        ("Firing since", str(alert.get("fired_at") or "-")),
    ]
    return out


def redress_parts(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """The contacts of one redress entry (ATIS-1000099 603+ / RFC 8688 jwscard), in the order to try them."""
    return [(key, str(entry[key])) for key in ("url", "tel", "email", "id", "location") if entry.get(key)]


def redress_line(entry: dict[str, Any]) -> str:
    labels = {"url": "", "tel": "tel ", "email": "email ", "id": "id ", "location": "blocked at "}
    return " | ".join(labels[k] + v for k, v in redress_parts(entry))


def sample_line(sample: dict[str, Any]) -> str:
    return (f"{sample.get('call_id', '')} to {sample.get('callee') or '-'}: {sample.get('code') or '-'} "
            f"{sample.get('phrase') or ''}".rstrip())
