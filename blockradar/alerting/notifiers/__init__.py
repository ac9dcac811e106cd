"""Notifiers: one module per channel (slack, email, webhook, console, alertmanager) behind one small protocol.

``build_notifier({"type": "slack", "webhook_url": ...})`` validates a config entry with the
channel's pydantic model and returns the notifier; channel modules are imported only when used.
Every notifier has Apprise-style declarative attributes (``service_name``, ``type``,
``config_model``, ``rate_per_s``) and ``describe()``, a one-line summary with secrets masked.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from blockradar.alerting.notifiers.base import Notification, Notifier, NotifierConfig, NotifyError

__all__ = ["NOTIFIER_TYPES", "Notification", "Notifier", "NotifierConfig", "NotifyError", "build_notifier",
           "build_notifiers", "notifier_class", "notifier_config_model"]

# type -> "module:Class"
NOTIFIER_TYPES: dict[str, str] = {
    "slack": "blockradar.alerting.notifiers.slack:SlackNotifier",
    "email": "blockradar.alerting.notifiers.email:EmailNotifier",
    "webhook": "blockradar.alerting.notifiers.webhook:WebhookNotifier",
    "console": "blockradar.alerting.notifiers.console:ConsoleNotifier",
    "alertmanager": "blockradar.alerting.notifiers.alertmanager:AlertmanagerNotifier",
}


def notifier_class(kind: str) -> Any:
    target = NOTIFIER_TYPES.get(kind)
    if target is None:
        raise ValueError(f"unknown notifier type {kind!r}; use one of {sorted(NOTIFIER_TYPES)}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def notifier_config_model(kind: str) -> type[NotifierConfig] | None:
    """The pydantic config model of a notifier type, or None for an unknown type."""
    if kind not in NOTIFIER_TYPES:
        return None
    model: type[NotifierConfig] = notifier_class(kind).config_model
    return model


def build_notifier(entry: Mapping[str, Any] | NotifierConfig) -> Notifier:
    """A notifier from one ``notifiers:`` entry (a mapping with ``type``) or a validated config."""
    if isinstance(entry, NotifierConfig):
        kind = entry.type  # type: ignore[attr-defined]
        config = entry
    else:
        kind = str(entry.get("type", ""))
        config = notifier_class(kind).config_model.model_validate(dict(entry))
    return notifier_class(kind)(config)


def build_notifiers(entries: Iterable[Mapping[str, Any] | NotifierConfig]) -> list[Notifier]:
    """Notifiers for a list of entries; unnamed ones get their type as name (``slack``, ``slack-2`` ...)."""
    notifiers: list[Notifier] = []
    used: set[str] = set()
    for entry in entries:
        notifier = build_notifier(entry)
        base = notifier.name
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        notifier.name = name
        used.add(name)
        notifiers.append(notifier)
    return notifiers
