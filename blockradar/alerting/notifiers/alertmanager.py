"""Alertmanager notifier: blockradar's alerts posted to Prometheus Alertmanager's API v2, so a team
routes, silences and inhibits them with the Alertmanager it already runs.

``POST <url>/api/v2/alerts`` with one entry per alert of the notification:

* ``labels`` say which alert it is and never change while it lives: ``alertname`` (the threshold,
  or the self-alert's name), ``severity``, ``source: blockradar``, the threshold's own ``labels:``
  and the alert's scope (``caller_number``, ``trunk`` ...). Figures that move with every call
  (counts, trunks seen, SIP codes) are annotations, or Alertmanager would see a new alert each time.
* ``annotations``: ``summary`` (the notification's title for this alert), ``description`` (what
  happened, in the same words as Slack and email), ``what_to_do``, ``redress`` (the carrier's
  contacts) and the figures.
* ``startsAt`` is when it fired; a resolved alert has ``endsAt`` at its resolve time. Alertmanager
  resolves an alert on its own once ``endsAt`` has passed, so a firing one gets ``endsAt`` =
  now + ``ends_after`` and is posted again every ``refresh`` while it fires (what Prometheus does):
  the notifier keeps the alerts it last posted firing (at most ``MAX_KEPT``) and re-posts them.
  If blockradar stops, its alerts resolve in Alertmanager ``ends_after`` later; ``blockradar_up``
  style monitoring of blockradar itself is what says it stopped.
* ``generatorURL``: the alert on blockradar's status page when ``status_url`` is set (the number's
  card for a number alert), else absent.

Alertmanager answers 200 with an empty body; 4xx (a label it refuses) is permanent, 5xx retried.
A notification lists at most ``alerting.max_alerts_listed`` alerts: the unlisted ones of a huge group
are not posted (they are counted in the others' ``unlisted`` annotation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from blockradar.alerting.notifiers import wording
from blockradar.alerting.notifiers.base import (
    AlertDict,
    Notification,
    NotifierConfig,
    NotifyError,
    SecretValue,
    status_page_url,
)
from blockradar.alerting.notifiers.http import HttpPoster
from blockradar.durations import parse_duration
from blockradar.outcome import iso
from blockradar.secret import mask_url

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
MAX_KEPT = 10_000  # firing alerts kept for re-posting; beyond, the oldest are let go (they resolve in AM)
ANNOTATION_LIMIT = 1000  # characters per annotation value


class AlertmanagerConfig(NotifierConfig):
    type: Literal["alertmanager"] = "alertmanager"
    url: SecretValue  # Alertmanager's base URL (http://alertmanager:9093); may carry basic-auth userinfo
    status_url: str | None = None  # blockradar's status page as Alertmanager users reach it, for generatorURL
    refresh: float = Field(default=60.0, gt=0)  # firing alerts are posted again this often
    ends_after: float = Field(default=300.0, gt=0)  # endsAt of a firing alert: now + this
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("refresh", "ends_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


def _iso(value: str | float | None) -> str | None:
    """A snapshot's time (already ISO text) or an epoch, as Alertmanager reads it."""
    return iso(value) if isinstance(value, int | float) else value


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= ANNOTATION_LIMIT else text[:ANNOTATION_LIMIT - 1] + "\u2026"


def am_labels(alert: AlertDict) -> dict[str, str]:
    """The labels that name an alert in Alertmanager (stable while it lives)."""
    labels = dict(alert.get("labels") or {})
    scope = dict(alert.get("scope") or {})
    if alert.get("kind") == "self":
        name = labels.get("alertname") or str(alert.get("threshold") or "blockradar")
    else:
        name = str(alert.get("threshold") or labels.get("threshold") or "blockradar")
    out = {k: str(v) for k, v in labels.items() if k not in ("threshold", "trunk", "connector", "pbx")}
    out.update({k: str(v) for k, v in scope.items()})  # the scope wins: it is what the alert is about
    out["alertname"] = name
    out["severity"] = str(alert.get("severity") or labels.get("severity") or "warning")
    out["source"] = "blockradar"
    return {k: v for k, v in out.items() if v != ""}


def am_annotations(alert: AlertDict, notification: Notification) -> dict[str, str]:
    single = Notification(group_key=notification.group_key, group_labels=notification.group_labels,
                          status=str(alert.get("state") or notification.status), alerts=[alert],
                          created_at=notification.created_at, id=notification.id, test=notification.test)
    out = {
        "summary": wording.title(single),
        "description": "; ".join(f"{label}: {value}" for label, value in wording.facts(alert)),
    }
    todo = alert.get("what_to_do") or {}
    if todo:
        out["what_to_do"] = " ".join(dict.fromkeys(todo.values()))
    redress = [wording.redress_line(entry) for entry in alert.get("redress") or []]
    if redress:
        out["redress"] = "; ".join(redress)
    if alert.get("actions"):
        out["actions"] = "; ".join(alert.get("actions") or [])
    for key in ("count", "attempts", "rate", "sip_codes", "trunks", "resolve_rule"):
        value = alert.get(key)  # type: ignore[misc]
        if value not in (None, {}, ""):
            out[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if notification.unlisted:
        out["unlisted"] = json.dumps(notification.unlisted, sort_keys=True)
    return {k: _text(v) for k, v in out.items()}


class AlertmanagerNotifier:
    service_name: ClassVar[str] = "Prometheus Alertmanager (API v2)"
    type: ClassVar[str] = "alertmanager"
    config_model: ClassVar[type[AlertmanagerConfig]] = AlertmanagerConfig
    default_rate_per_s: ClassVar[float | None] = None

    def __init__(self, config: AlertmanagerConfig, *, clock: Any = time.time) -> None:
        self.config = config
        self.name = config.name or "alertmanager"
        self.rate_per_s = config.rate_per_s or self.default_rate_per_s
        self._http = HttpPoster("alertmanager", config.timeout)
        self._now = clock
        self._firing: OrderedDict[tuple[tuple[str, str], ...], dict[str, Any]] = OrderedDict()
        self._refresher: asyncio.Task[None] | None = None
        self.refreshed = 0  # posts made by the refresher

    @property
    def endpoint(self) -> str:
        return self.config.url.reveal().rstrip("/") + API_PATH

    def describe(self) -> str:
        return f"{self.name}: alertmanager {mask_url(self.config.url.reveal())}"

    def __repr__(self) -> str:
        return f"AlertmanagerNotifier({self.describe()!r})"

    def generator_url(self, alert: AlertDict) -> str | None:
        return status_page_url(self.config.status_url, alert)

    def payload(self, notification: Notification) -> list[dict[str, Any]]:
        """What ``send`` posts (and keeps for the refresher)."""
        now = self._now()
        entries = []
        for alert in notification.alerts:
            entry: dict[str, Any] = {"labels": am_labels(alert), "annotations": am_annotations(alert, notification)}
            started = alert.get("fired_at") or alert.get("started_at")
            if started:
                entry["startsAt"] = _iso(started)
            if alert.get("state") == "resolved":
                entry["endsAt"] = _iso(alert.get("resolved_at")) or _iso(now)
            else:
                entry["endsAt"] = _iso(now + self.config.ends_after)
            generator = self.generator_url(alert)
            if generator:
                entry["generatorURL"] = generator
            entries.append(entry)
        return entries

    async def send(self, notification: Notification) -> None:
        entries = self.payload(notification)
        if not entries:
            return
        await self._post(entries)
        if notification.test:
            return
        for alert, entry in zip(notification.alerts, entries, strict=True):
            key = tuple(sorted(entry["labels"].items()))
            self._firing.pop(key, None)
            if alert.get("state") != "resolved":  # kept (the newest last) to be posted again while it fires
                self._firing[key] = entry
        while len(self._firing) > MAX_KEPT:
            self._firing.popitem(last=False)
        self._start_refresher()

    async def _post(self, entries: list[dict[str, Any]]) -> None:
        body = json.dumps(entries, ensure_ascii=False).encode()
        headers = {**self.config.headers, "Content-Type": "application/json"}
        await self._http.post(self.endpoint, where=self.describe(), data=body, headers=headers)

    def _start_refresher(self) -> None:
        if self._firing and (self._refresher is None or self._refresher.done()):
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever(),
                                                                      name=f"{self.name}: refresh")

    async def _refresh_forever(self) -> None:
        """Post the firing alerts again every ``refresh`` with a later ``endsAt``, while there are any."""
        while self._firing:
            await asyncio.sleep(self.config.refresh)
            ends = _iso(self._now() + self.config.ends_after)
            entries = [{**entry, "endsAt": ends} for entry in self._firing.values()]
            if not entries:
                return
            try:
                await self._post(entries)
                self.refreshed += 1
            except NotifyError as exc:  # the next refresh tries again; ends_after covers a few misses
                log.warning("%s: refreshing %d firing alert(s) failed: %s", self.name, len(entries), exc)

    async def aclose(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._http.aclose()

