"""The alert lifecycle: pending -> firing -> resolved per (threshold, scope key), grouped,
deduplicated, repeated, silenced and inhibited with Prometheus Alertmanager's meanings.

* An alert is *pending* while its threshold's condition holds for less than ``for``, *firing*
  after, *resolved* once the value falls below the resolve bound (hysteresis). A pending alert
  whose condition stops holding is dropped silently.
* Firing alerts join an *aggregation group* by the values of ``group_by`` labels (default
  ``threshold`` and ``trunk``, so 40 numbers blocked on one trunk in one burst are one message).
  A new group is first notified ``group_wait`` after it appeared; after that the group is looked
  at every ``group_interval``: it is notified when it holds a firing alert not notified before, or
  (with ``send_resolved``) an alert that resolved since, and it is re-notified unchanged every
  ``repeat_interval``.
* Silences (``silences.py``) mute matching alerts; a resolved alert the operator never saw firing
  is not announced as resolved.
* Inhibition: while a connector is down (``connector_down``), alerts labelled with it are held:
  not notified, and not resolved (an absence of data is no evidence of recovery).

Labels of an alert: ``threshold``, ``severity``, the scope fields, the threshold's own labels,
and as context (when not in the scope) ``trunk``, ``connector`` and ``pbx`` of the outcome that
raised it. Evaluation runs on event time; group timers run on the ``now`` given to ``tick``, so a
replay produces the alerts on the recording's own clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blockradar.alerting.notifiers.base import AlertDict, Notification, SampleCall
from blockradar.alerting.silences import Silence
from blockradar.classification import Category
from blockradar.detect.thresholds import CLEAR, FIRE, Threshold
from blockradar.detect.windows import KeyWindow
from blockradar.durations import parse_duration
from blockradar.outcome import CallOutcome, iso

log = logging.getLogger(__name__)

PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"

CONTEXT_LABELS = ("trunk", "connector", "pbx")


class AlertingConfig(BaseModel):
    """The ``alerting:`` section of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_by: list[str] = Field(default_factory=lambda: ["threshold", "trunk"])
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    send_resolved: bool = True
    samples: int = Field(default=5, ge=0, le=20)  # sample calls per alert

    @field_validator("group_wait", "group_interval", "repeat_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("group_interval", "repeat_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value


# An evidence entry, recorded by the pipeline per matching outcome (a tuple: cheap, no object):
# (t, category, confidence, sip_code, sip_phrase, call_id, callee_number, redress)
EV_T, EV_CATEGORY, EV_CONFIDENCE, EV_CODE, EV_PHRASE, EV_CALL_ID, EV_CALLEE, EV_REDRESS = range(8)


class Alert:
    """One (threshold, scope key)."""

    __slots__ = (
        "attempts",
        "evaluated_at",
        "final",
        "fingerprint",
        "fired_at",
        "group",
        "key",
        "kw",
        "labels",
        "matching",
        "notified",
        "resolved_at",
        "scope",
        "started_at",
        "state",
        "threshold",
    )

    def __init__(self, threshold: Threshold | None, key: Any, scope: dict[str, str], labels: dict[str, str],
                 fingerprint: str, kw: KeyWindow | None, t: float) -> None:
        self.threshold = threshold
        self.key = key
        self.scope = scope
        self.labels = labels
        self.fingerprint = fingerprint
        self.kw = kw
        self.state = PENDING
        self.started_at = t
        self.fired_at: float | None = None
        self.resolved_at: float | None = None
        self.evaluated_at = t
        self.matching = 0
        self.attempts = 0
        self.notified = False  # an operator has been told it fires
        self.group: AlertGroup | None = None
        self.final: AlertDict | None = None  # frozen content once resolved


class AlertGroup:
    __slots__ = ("alerts", "key", "labels", "last_sent_at", "next_flush", "notified_firing", "notified_resolved")

    def __init__(self, key: str, labels: dict[str, str], next_flush: float) -> None:
        self.key = key
        self.labels = labels
        self.alerts: dict[str, Alert] = {}
        self.next_flush = next_flush
        self.last_sent_at: float | None = None
        self.notified_firing: frozenset[str] = frozenset()
        self.notified_resolved: frozenset[str] = frozenset()


def fingerprint_of(threshold: str, scope: Mapping[str, str]) -> str:
    return threshold + "|" + "|".join(f"{k}={v}" for k, v in scope.items())


class AlertLifecycle:
    """Owns every alert and group; turns evaluations into notifications via ``emit``."""

    def __init__(
        self,
        config: AlertingConfig | None = None,
        *,
        emit: Callable[[Notification], None],
        categories: Mapping[str, Category] | None = None,
        store: Any | None = None,
        on_transition: Callable[[Alert, AlertDict], None] | None = None,
    ) -> None:
        self.config = config or AlertingConfig()
        self.emit = emit
        self.categories = dict(categories or {})
        self.store = store
        self.on_transition = on_transition
        self.groups: dict[str, AlertGroup] = {}
        self.silences: list[Silence] = []
        self.down_connectors: set[str] = set()
        self.pending_or_firing = 0
        self.transitions = {FIRING: 0, RESOLVED: 0}
        self.notifications = 0
        self._restored: dict[str, dict[str, Any]] = {}
        self._dirty: dict[str, tuple[Alert, AlertDict | None]] = {}
        # earliest group timer: kept exact when a group is created, recomputed (None) only after
        # something moved or removed a timer, so next_due() is O(1) per outcome in the daemon's sink
        self._next_due: float | None = None
        self._next_due_stale = False
        if store is not None:
            self.reload_silences(now=0.0)

    # -- evaluation results (called by the pipeline) --------------------------------------
    def open(self, th: Threshold, key: Any, kw: KeyWindow, t: float, matching: int, attempts: int,
             outcome: CallOutcome | None) -> Alert:
        """The condition of ``th`` became true for ``key`` at event time ``t``."""
        scope = _scope_dict(th.scope, key)
        labels = {"threshold": th.name, "severity": th.severity, **th.config.labels, **scope}
        if outcome is not None:
            for name in CONTEXT_LABELS:
                if name not in labels:
                    value = getattr(outcome, name, None)
                    if value is not None:
                        labels[name] = str(value)
        fp = fingerprint_of(th.name, scope)
        alert = Alert(th, key, scope, labels, fp, kw, t)
        alert.matching, alert.attempts = matching, attempts
        th.active[key] = alert
        self.pending_or_firing += 1
        restored = self._restored.pop(fp, None)
        if restored is not None:
            alert.labels = {**restored.get("labels", {}), **labels}
            alert.started_at = restored.get("started_at") or t
            alert.notified = bool(restored.get("notified"))
            self._fire(alert, restored.get("fired_at") or t, announce=False)
        elif th.for_s <= 0:
            self._fire(alert, t)
        return alert

    def update(self, alert: Alert, t: float, matching: int, attempts: int, verdict: int) -> None:
        """A new evaluation of a live alert at time ``t``."""
        if t > alert.evaluated_at:
            alert.evaluated_at = t
        alert.matching, alert.attempts = matching, attempts
        th = alert.threshold
        assert th is not None
        if alert.state == PENDING:
            if verdict != FIRE:
                del th.active[alert.key]
                self.pending_or_firing -= 1
            elif t - alert.started_at >= th.for_s:
                self._fire(alert, t)
        elif alert.state == FIRING and verdict == CLEAR and not self.inhibited(alert):
            self._resolve(alert, t)

    def _fire(self, alert: Alert, t: float, *, announce: bool = True) -> None:
        alert.state = FIRING
        alert.fired_at = t
        self.transitions[FIRING] += 1
        group = self._group_for(alert, t)
        old = group.alerts.get(alert.fingerprint)
        if old is not None and old is not alert and old.notified:
            # flapped back before its group was flushed: the operator still sees it as firing
            alert.notified = alert.notified or alert.fingerprint in group.notified_firing
        group.alerts[alert.fingerprint] = alert
        alert.group = group
        if self.store is None and (self.on_transition is None or not announce):
            return  # nobody to hand a snapshot to: do not render one (group flushes render their own)
        snap = self.snapshot(alert)
        self._save(alert, snap)
        if announce and self.on_transition is not None:
            self.on_transition(alert, snap)

    def _resolve(self, alert: Alert, t: float) -> None:
        th = alert.threshold
        if th is not None:
            th.active.pop(alert.key, None)
        self.pending_or_firing -= 1
        alert.state = RESOLVED
        alert.resolved_at = t
        self.transitions[RESOLVED] += 1
        alert.final = self.snapshot(alert)
        self._save(alert, alert.final)
        if self.on_transition is not None:
            self.on_transition(alert, alert.final)

    def _group_for(self, alert: Alert, t: float) -> AlertGroup:
        labels = {name: alert.labels.get(name, "") for name in self.config.group_by}
        key = "{" + ",".join(f"{k}={v!r}" for k, v in labels.items()) + "}"
        group = self.groups.get(key)
        if group is None:
            group = AlertGroup(key, labels, t + self.config.group_wait)
            self.groups[key] = group
            if not self._next_due_stale and (self._next_due is None or group.next_flush < self._next_due):
                self._next_due = group.next_flush
        return group

    def active_alerts(self) -> list[Alert]:
        return [a for g in self.groups.values() for a in g.alerts.values() if a.state == FIRING]

    # -- silences and inhibition -------------------------------------------------------------
    def add_silence(self, silence: Silence) -> Silence:
        if self.store is not None:
            self.store.add_silence(silence)
        self.silences.append(silence)
        return silence

    def expire_silence(self, silence_id: str, now: float) -> bool:
        found = False
        for i, s in enumerate(self.silences):
            if s.id == silence_id and s.ends_at > now:
                self.silences[i] = Silence(s.matchers, s.starts_at, now, s.comment, s.author, s.created_at, s.id)
                found = True
        if self.store is not None:
            found = self.store.expire_silence(silence_id, now) or found
        return found

    def reload_silences(self, now: float | None = None) -> None:
        """Re-read silences from the store (the CLI writes them there while the daemon runs)."""
        if self.store is not None:
            self.silences = list(self.store.list_silences(now=now))

    def silenced_by(self, labels: Mapping[str, str], now: float) -> Silence | None:
        for s in self.silences:
            if s.active(now) and s.matches(labels):
                return s
        return None

    def connector_down(self, name: str) -> None:
        """Hold alerts that depend on this connector's data until ``connector_up``."""
        self.down_connectors.add(name)

    def connector_up(self, name: str) -> None:
        """Release the alerts held for this connector: a group that was looked at while they were held
        is due again when they would have been (fired + group_wait), not a whole group_interval later."""
        if name not in self.down_connectors:
            return
        self.down_connectors.discard(name)
        wait = self.config.group_wait
        for group in self.groups.values():
            due = [(a.fired_at if a.fired_at is not None else a.started_at) + wait
                   for a in group.alerts.values() if a.labels.get("connector") == name]
            if due:
                group.next_flush = min(group.next_flush, min(due))
                self._next_due_stale = True

    def inhibited(self, alert: Alert) -> bool:
        return bool(self.down_connectors) and alert.labels.get("connector") in self.down_connectors

    # -- timers ----------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Notification]:
        """Flush every group whose timer is due at ``now``; returns what was emitted."""
        sent: list[Notification] = []
        if self.store is None:
            for group in list(self.groups.values()):
                if group.next_flush <= now:
                    notification = self._flush(group, now)
                    if notification is not None:
                        sent.append(notification)
            self._next_due_stale = True
            return sent
        with self.store.batch():
            self.flush_state()
            for group in list(self.groups.values()):
                if group.next_flush <= now:
                    notification = self._flush(group, now)
                    if notification is not None:
                        sent.append(notification)
            self.flush_state()
        self._next_due_stale = True
        return sent

    def _flush(self, group: AlertGroup, now: float) -> Notification | None:
        cfg = self.config
        firing: list[Alert] = []
        resolved: list[Alert] = []
        for alert in group.alerts.values():
            if self.inhibited(alert) or self.silenced_by(alert.labels, now) is not None:
                continue
            if alert.state == FIRING:
                firing.append(alert)
            elif alert.state == RESOLVED and alert.notified and cfg.send_resolved:
                resolved.append(alert)
        firing_fps = frozenset(a.fingerprint for a in firing)
        resolved_fps = frozenset(a.fingerprint for a in resolved)
        due = (
            not firing_fps <= group.notified_firing
            or (cfg.send_resolved and not resolved_fps <= group.notified_resolved)
            or (
                bool(firing_fps)
                and group.last_sent_at is not None
                and now - group.last_sent_at >= cfg.repeat_interval
            )
        )
        notification: Notification | None = None
        if due and (firing or resolved):
            alerts = [self.snapshot(a) for a in firing] + [a.final or self.snapshot(a) for a in resolved]
            notification = Notification(
                group_key=group.key,
                group_labels=dict(group.labels),
                status=FIRING if firing else RESOLVED,
                alerts=alerts,
                created_at=now,
            )
            for alert in firing:
                alert.notified = True
            group.notified_firing = firing_fps
            group.notified_resolved = resolved_fps
            group.last_sent_at = now
            self.notifications += 1
            self.emit(notification)
        elif not firing_fps and group.notified_firing:
            group.notified_firing = frozenset()  # all cleared without a notice (send_resolved off)
        for fp, alert in list(group.alerts.items()):
            if alert.state == RESOLVED and not self.inhibited(alert):
                del group.alerts[fp]
                if self.store is not None:
                    self._dirty.pop(fp, None)
                    self.store.delete_alert_state(fp)
        group.next_flush = now + cfg.group_interval
        self._next_due_stale = True
        if not group.alerts:
            del self.groups[group.key]
            if self.store is not None:
                self.store.delete_group(group.key)
        elif self.store is not None and notification is not None:
            self.store.save_group(group.key, group.labels, group.last_sent_at, sorted(group.notified_firing),
                                  sorted(group.notified_resolved))
            for alert in firing:
                self._save(alert, None)
        return notification

    def next_due(self) -> float | None:
        """When the next group timer is due (for a daemon that sleeps until then)."""
        if self._next_due_stale:
            self._next_due = min((g.next_flush for g in self.groups.values()), default=None)
            self._next_due_stale = False
        return self._next_due

    # -- content ----------------------------------------------------------------------------------
    def snapshot(self, alert: Alert) -> AlertDict:
        """The content of an alert, JSON-ready."""
        th = alert.threshold
        if th is None:
            return alert.final or AlertDict(fingerprint=alert.fingerprint, state=alert.state)
        kw = alert.kw
        categories = th.breakdown(kw.totals) if kw is not None else {}
        codes: dict[str, int] = {}
        samples: list[SampleCall] = []
        redress: list[dict[str, Any]] = []
        seen_contacts: set[tuple[str, ...]] = set()
        first_seen: float | None = None
        last_seen: float | None = None
        horizon = alert.evaluated_at - th.window_s
        conf = th.config.confidence
        codes_filter = th.config.sip_codes
        for ev in (kw.evidence or ()) if kw is not None else ():
            if ev[EV_T] <= horizon or ev[EV_CATEGORY] not in th.categories:
                continue
            if conf is not None and ev[EV_CONFIDENCE] not in conf:
                continue
            if codes_filter is not None and ev[EV_CODE] not in codes_filter:
                continue
            code = str(ev[EV_CODE]) if ev[EV_CODE] is not None else "none"
            codes[code] = codes.get(code, 0) + 1
            if first_seen is None or ev[EV_T] < first_seen:
                first_seen = ev[EV_T]
            if last_seen is None or ev[EV_T] > last_seen:
                last_seen = ev[EV_T]
            samples.append(SampleCall(call_id=ev[EV_CALL_ID], callee=ev[EV_CALLEE], code=ev[EV_CODE],
                                      phrase=ev[EV_PHRASE], category=ev[EV_CATEGORY], at=iso(ev[EV_T])))
            red = ev[EV_REDRESS]
            if red is not None and red.contacts() and red.contacts() not in seen_contacts:
                seen_contacts.add(red.contacts())
                redress.append(red.to_dict())
        samples = samples[-self.config.samples :] if self.config.samples else []
        samples.reverse()  # newest first
        rate = alert.matching / alert.attempts if alert.attempts else None
        what = {name: self.categories[name].what_to_do for name in th.config.categories
                if name in self.categories and self.categories[name].what_to_do}
        return AlertDict(
            fingerprint=alert.fingerprint,
            threshold=th.name,
            description=th.config.describe(),
            severity=th.severity,
            state=alert.state,
            labels=dict(alert.labels),
            scope=dict(alert.scope),
            count=alert.matching,
            attempts=alert.attempts,
            rate=round(rate, 4) if rate is not None else None,
            window_s=th.window_s,
            categories=categories,
            sip_codes=codes,
            first_seen=iso(first_seen),
            last_seen=iso(last_seen),
            started_at=iso(alert.started_at),
            fired_at=iso(alert.fired_at),
            resolved_at=iso(alert.resolved_at),
            samples=samples,
            redress=redress[:10],
            what_to_do=what,
        )

    # -- persistence ------------------------------------------------------------------------------
    def _save(self, alert: Alert, snap: AlertDict | None) -> None:
        """Mark an alert's state for writing; ``flush_state`` writes all marked ones in one transaction."""
        if self.store is None:
            return
        previous = self._dirty.get(alert.fingerprint)
        if snap is None and previous is not None:
            snap = previous[1]
        self._dirty[alert.fingerprint] = (alert, snap)

    def flush_state(self) -> None:
        """Write the alert states changed since the last flush (called by ``tick``)."""
        if self.store is None or not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        with self.store.batch():
            for fp, (alert, snap) in dirty.items():
                self.store.save_alert_state(
                    fp,
                    threshold=alert.threshold.name if alert.threshold else alert.labels.get("threshold", ""),
                    labels=alert.labels,
                    state=alert.state,
                    started_at=alert.started_at,
                    fired_at=alert.fired_at,
                    resolved_at=alert.resolved_at,
                    notified=alert.notified,
                    snapshot=snap,
                )

    def restore(self) -> None:
        """Load what a previous run notified (groups) and which alerts fired, before a rebuild.

        Then the pipeline replays stored outcomes: an alert that fires again adopts its stored
        state (no second page); ``finish_restore`` resolves the ones that did not come back.
        """
        if self.store is None:
            return
        for row in self.store.load_groups():
            group = AlertGroup(row["key"], row["labels"], row["last_sent_at"] or 0.0)
            group.last_sent_at = row["last_sent_at"]
            group.notified_firing = frozenset(row["notified_firing"])
            group.notified_resolved = frozenset(row["notified_resolved"])
            self.groups[group.key] = group
            self._next_due_stale = True
        rows = self.store.load_alert_states(FIRING)
        # resolved and written, but killed before the group announced it: announce it after the restart
        announced_firing = {fp for g in self.groups.values() for fp in g.notified_firing - g.notified_resolved}
        rows += [row for row in self.store.load_alert_states(RESOLVED)
                 if row["notified"] and row["fingerprint"] in announced_firing]
        self._restored = {row["fingerprint"]: row for row in rows}

    def finish_restore(self, now: float) -> None:
        for fp, row in self._restored.items():
            snap = dict(row.get("snapshot") or {})
            alert = Alert(None, None, dict(snap.get("scope") or {}), dict(row.get("labels") or {}), fp, None,
                          row.get("started_at") or now)
            alert.fired_at = row.get("fired_at")
            alert.notified = bool(row.get("notified"))
            alert.state = RESOLVED
            alert.resolved_at = row.get("resolved_at") or now
            snap.update(state=RESOLVED, resolved_at=iso(alert.resolved_at), fingerprint=fp)
            alert.final = AlertDict(**snap)  # type: ignore[typeddict-item]
            group = self._group_for(alert, now)
            group.alerts.setdefault(fp, alert)
            self._save(alert, alert.final)
        self._restored = {}
        for group in self.groups.values():  # restored groups: look at them at the next tick
            group.next_flush = min(group.next_flush, now)
        self._next_due_stale = True
        for key in [k for k, g in self.groups.items() if not g.alerts]:
            del self.groups[key]
            if self.store is not None:
                self.store.delete_group(key)
        self.flush_state()


def _scope_dict(fields: Iterable[str], key: Any) -> dict[str, str]:
    fields = tuple(fields)
    if len(fields) == 1:
        return {fields[0]: str(key)}
    return {f: str(v) for f, v in zip(fields, key, strict=True)}


def alert_event(snap: AlertDict) -> dict[str, Any]:
    """The JSON line ``blockradar replay`` prints for a transition (pass it ``on_transition``'s snapshot)."""
    state = snap.get("state")
    return {
        "kind": "alert",
        "state": state,
        "threshold": snap.get("threshold"),
        "severity": snap.get("severity"),
        "scope": snap.get("scope", {}),
        "count": snap.get("count"),
        "attempts": snap.get("attempts"),
        "rate": snap.get("rate"),
        "window_s": snap.get("window_s"),
        "categories": snap.get("categories", {}),
        "sip_codes": snap.get("sip_codes", {}),
        "at": snap.get("resolved_at") if state == RESOLVED else snap.get("fired_at"),
        "redress": snap.get("redress", []),
    }
