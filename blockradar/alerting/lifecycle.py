"""The alert lifecycle: pending -> firing -> resolved per (threshold, scope key), grouped,
deduplicated, repeated, silenced and held with Prometheus Alertmanager's meanings, and the one rule
this tool lives by: what the operator is told stays true through every fault.

* An alert is *pending* while its threshold's condition holds for less than ``for``, *firing*
  after. A pending alert whose condition stops holding is dropped silently.
* **Resolving takes evidence of recovery.** A firing alert resolves only when (1) its value has
  stayed below the resolve bound for the threshold's ``keep_firing_for`` (the clear timer), (2) for
  a rate, at least ``min_attempts`` calls were counted for the key since it fired, or no matching
  call is left in the window, and (3) every PBX link the alert rests on (the connectors of its
  matching calls) was up for the whole clear timer and has proved alive (a frame, a Pong, a probe
  answer) after it ran out, and (4) those links have been up for a whole window (a window holding
  a blind stretch, a link down or the daemon not running, is missing the calls of that stretch). A
  link going down stops the clear timer; it starts again from zero once the link is back. An absence
  of data is no evidence of recovery.
* **Labels come from the evidence.** Context labels (``trunk``, ``connector``, ``pbx``, when not in
  the scope) name every value the alert's matching calls had in the window when it fired, sorted and
  comma-joined, never the value of the call that happened to cross the threshold.
* Firing alerts join an *aggregation group* by the values of ``group_by`` labels (default
  ``threshold`` and ``trunk``). A new group is first notified ``group_wait`` after it appeared; after
  that it is looked at every ``group_interval``: it is notified when it holds a firing alert never
  announced, or (with ``send_resolved``) an announced alert that resolved since, and re-notified
  unchanged every ``repeat_interval``. Whether an alert was announced is kept per alert (and in the
  store), so a group never forgets it: an alert already announced is never announced as new again,
  whatever happened to the links, the group or the process in between.
* Every notification carries the group's full current state; each alert in it is marked ``change``:
  ``new``, ``firing`` (announced before) or ``resolved``; a firing alert whose link is down is marked
  ``held`` (its state is frozen until the link is back). A group holding a held alert is not
  repeated.
* Silences (``silences.py``) mute matching alerts; a resolved alert the operator never saw firing
  is not announced as resolved.

Evaluation runs on event time; group timers run on the ``now`` given to ``tick``, so a replay
produces the alerts on the recording's own clock. Links nobody told the lifecycle about (a replay)
are always up and alive.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blockradar.alerting.notifiers.base import AlertDict, Notification, SampleCall, alert_kind
from blockradar.alerting.silences import Silence
from blockradar.classification import Category
from blockradar.detect.evidence import (
    S_CALL_ID,
    S_CALLEE,
    S_CATEGORY,
    S_CODE,
    S_CONFIDENCE,
    S_PHRASE,
    S_REDRESS,
    S_T,
    Summary,
    summarize,
)
from blockradar.detect.thresholds import CLEAR, FIRE, Threshold
from blockradar.detect.windows import KeyWindow
from blockradar.durations import format_duration, parse_duration
from blockradar.outcome import from_iso, iso

log = logging.getLogger(__name__)

PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"
NEW = "new"  # a notification's ``change`` for an alert announced for the first time

CONTEXT_LABELS = ("trunk", "connector", "pbx")
STATES_PER_WRITE = 8  # alert states encoded and handed over between two looks at the clock in a budgeted tick


class AlertingConfig(BaseModel):
    """The ``alerting:`` section of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_by: list[str] = Field(default_factory=lambda: ["threshold", "trunk"])
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    send_resolved: bool = True
    samples: int = Field(default=5, ge=0, le=20)  # sample calls per alert
    # alerts listed in one notification (new first, then resolved, then still firing; most calls first);
    # the rest are counted in it (``Notification.unlisted``) and listed by ``blockradar report``
    max_alerts_listed: int = Field(default=100, ge=1, le=10_000)

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


class Link:
    """What the lifecycle knows of one PBX link: up or down since when, last proof of life."""

    __slots__ = ("alive_at", "since", "up")

    def __init__(self, up: bool, at: float) -> None:
        self.up = up
        self.since = at
        self.alive_at = at if up else float("-inf")


class Alert:
    """One (threshold, scope key)."""

    __slots__ = (
        "attempts",
        "calls_since_fire",
        "clear_since",
        "connectors",
        "due_at",
        "evaluated_at",
        "final",
        "fingerprint",
        "fired_at",
        "group",
        "key",
        "kw",
        "labels",
        "last_seen",
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
        self.clear_since: float | None = None  # below the resolve bound, on observed time, since
        self.calls_since_fire = 0  # outcomes counted for its key since it fired (the pipeline counts them)
        self.connectors: set[str] = set()  # the PBX links its matching calls came through
        self.last_seen: float | None = None  # the newest matching call ever shown
        self.due_at = float("inf")  # when ``Pipeline.tick`` must look at it again (``AlertLifecycle.schedule``)


class AlertGroup:
    __slots__ = ("alerts", "key", "labels", "last_sent_at", "next_flush")

    def __init__(self, key: str, labels: dict[str, str], next_flush: float) -> None:
        self.key = key
        self.labels = labels
        self.alerts: dict[str, Alert] = {}
        self.next_flush = next_flush
        self.last_sent_at: float | None = None


def fingerprint_of(threshold: str, scope: Mapping[str, str]) -> str:
    return threshold + "|" + "|".join(f"{k}={v}" for k, v in scope.items())


# Given a stored alert row: its threshold, scope key and window in the running pipeline, or None
# when the threshold is no longer configured (see ``finish_restore``).
Reopen = Callable[[Mapping[str, Any]], "tuple[Threshold, Any, KeyWindow] | None"]


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
        save_states: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.config = config or AlertingConfig()
        self.emit = emit
        self.categories = dict(categories or {})
        self.store = store
        self.on_transition = on_transition
        # where changed alert states go (``Store.AlertStateRow`` lists): the store itself, or the daemon's
        # store writer, which writes them on its own thread behind the outcomes they rest on
        self.save_states = save_states or (store.save_alert_states if store is not None else None)
        self.groups: dict[str, AlertGroup] = {}
        self.silences: list[Silence] = []
        self.links: dict[str, Link] = {}
        self.down_connectors: set[str] = set()  # mirror of the links that are down (the daemon's fast check)
        self.pending_or_firing = 0
        self.transitions = {FIRING: 0, RESOLVED: 0}
        self.notifications = 0
        self._restored: dict[str, dict[str, Any]] = {}
        self._dirty: dict[str, tuple[Alert, AlertDict | None]] = {}
        self._rules: dict[str, str] = {}  # threshold name -> its resolve rule in words
        # earliest group timer: kept exact when a group is created, recomputed (None) only after
        # something moved or removed a timer, so next_due() is O(1) per outcome in the daemon's sink
        self._next_due: float | None = None
        self._next_due_stale = False
        # when each live alert must be judged again without a new call (``Pipeline.tick`` pops them): a
        # heap of (due, seq, alert), stale entries skipped; ``_sweep``: every live alert, once (a link came
        # back, a restore), in slices
        self._due: list[tuple[float, int, Alert]] = []
        self._seq = itertools.count()
        self._sweep: deque[Alert] = deque()
        self.sweep_requested = False
        if store is not None:
            self.reload_silences(now=0.0)

    # -- evaluation results (called by the pipeline) --------------------------------------
    def open(self, th: Threshold, key: Any, kw: KeyWindow, t: float, matching: int, attempts: int) -> Alert:
        """The condition of ``th`` became true for ``key`` at event time ``t``."""
        scope = _scope_dict(th.scope, key)
        labels = {"threshold": th.name, "severity": th.severity, **th.config.labels, **scope}
        fp = fingerprint_of(th.name, scope)
        alert = Alert(th, key, scope, labels, fp, kw, t)
        alert.matching, alert.attempts = matching, attempts
        th.active[key] = alert
        self.pending_or_firing += 1
        self.schedule(alert, t)
        restored = self._restored.pop(fp, None)
        if restored is not None:
            self._adopt(alert, restored, t)
        elif th.for_s <= 0:
            self._take_context(alert, th)
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
                self._take_context(alert, th)
                self._fire(alert, t)
                self.schedule(alert, t)
            return
        if alert.state != FIRING:
            return
        if verdict != CLEAR or self.blind(alert):
            alert.clear_since = None  # still bad, or not watched: the clear timer starts again later
            return
        if alert.clear_since is None:
            alert.clear_since = t
            self.schedule(alert, t)  # its clear timer now runs: ``Pipeline.tick`` works out when it may end
        if self._may_resolve(alert, th, t, matching):
            self._resolve(alert, t)

    def _may_resolve(self, alert: Alert, th: Threshold, t: float, matching: int) -> bool:
        clear_since = alert.clear_since
        assert clear_since is not None
        back = self.links_back_at(alert)
        if back > clear_since:  # a link came back after the value fell: the clear timer starts then
            alert.clear_since = clear_since = back
        clear_until = clear_since + th.keep_firing_s
        if t < clear_until:
            return False
        if th.is_rate and matching and alert.calls_since_fire < th.min_attempts:
            return False  # too few calls since it fired to say the rate really fell
        if back + th.window_s > t:
            return False  # the window still holds a blind stretch (a link down, the daemon not running)
        return self.alive_since(alert, clear_until)

    def _take_context(self, alert: Alert, th: Threshold) -> None:
        """Context labels from the evidence: every trunk, connector and PBX of the matching calls."""
        kw = alert.kw
        if kw is None or kw.evidence is None:
            return
        trunks, connectors, pbxes, alert.last_seen = kw.evidence.context(
            kw.head, th.window_buckets, th.categories, th.confidences, th.codes)
        labels = alert.labels
        for name, values in zip(CONTEXT_LABELS, (trunks, connectors, pbxes), strict=True):
            if values and name not in labels:
                labels[name] = ",".join(sorted(values))
        alert.connectors |= connectors

    def _fire(self, alert: Alert, t: float, *, announce: bool = True) -> None:
        alert.state = FIRING
        alert.fired_at = t
        alert.clear_since = None
        alert.calls_since_fire = 0
        self.transitions[FIRING] += 1
        group = self._group_for(alert, t)
        old = group.alerts.get(alert.fingerprint)
        if old is not None and old is not alert and old.notified:
            # flapped back before its resolve was announced: the operator still sees it firing
            alert.notified = True
        group.alerts[alert.fingerprint] = alert
        alert.group = group
        if self.store is None and (self.on_transition is None or not announce):
            return  # nobody to hand a snapshot to: do not render one (group flushes render their own)
        snap = self.snapshot(alert)
        self._save(alert, snap)
        if announce and self.on_transition is not None:
            self.on_transition(alert, snap)

    def _adopt(self, alert: Alert, row: Mapping[str, Any], t: float) -> None:
        """A stored firing alert came back while the windows were rebuilt: keep its identity (labels,
        so its group), its times and whether it was announced; never page for it again."""
        alert.labels = {**row.get("labels", {}), **alert.labels}
        alert.started_at = row.get("started_at") or t
        alert.notified = bool(row.get("notified"))
        alert.connectors.update(_split(row.get("labels", {}).get("connector")))
        alert.last_seen = from_iso((row.get("snapshot") or {}).get("last_seen"))
        self._fire(alert, row.get("fired_at") or t, announce=False)

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

    # -- silences -----------------------------------------------------------------------------------
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

    # -- PBX links: what a resolve must rest on ----------------------------------------------------------
    def connector_down(self, name: str, at: float = float("-inf")) -> None:
        """This connector is blind from ``at``: alerts on its data neither resolve nor repeat until it is back."""
        link = self.links.get(name)
        if link is None:
            self.links[name] = Link(False, at)
        elif link.up:
            link.up, link.since = False, at
        self.down_connectors.add(name)

    def connector_up(self, name: str, at: float = float("-inf")) -> None:
        link = self.links.get(name)
        if link is None:
            self.links[name] = Link(True, at)
        elif not link.up:
            link.up, link.since = True, at
            link.alive_at = max(link.alive_at, at)
            self.request_sweep()  # alerts held on it may now clear
        self.down_connectors.discard(name)

    def link_alive(self, name: str, at: float) -> None:
        """The PBX behind this connector proved alive at ``at`` (a frame, a Pong, a probe answer)."""
        link = self.links.get(name)
        if link is not None and link.up and at > link.alive_at:
            link.alive_at = at

    def adopt_announced(self, other: AlertLifecycle) -> None:
        """Take over which alerts another lifecycle announced and when its groups were last sent (a fleet's
        reload rebuilds a new one while the old one goes on telling)."""
        told = {a.fingerprint for g in other.groups.values() for a in g.alerts.values() if a.notified}
        for group in self.groups.values():
            old = other.groups.get(group.key)
            if old is not None and old.last_sent_at is not None:
                group.last_sent_at = max(group.last_sent_at or old.last_sent_at, old.last_sent_at)
            for alert in group.alerts.values():
                if alert.fingerprint in told:
                    alert.notified = True

    def adopt_links(self, other: AlertLifecycle) -> None:
        """Take over what another lifecycle knew of the links (a reload builds a new one)."""
        for name, link in other.links.items():
            copy = Link(link.up, link.since)
            copy.alive_at = link.alive_at
            self.links[name] = copy
        self.down_connectors = set(other.down_connectors)

    def _connectors(self, alert: Alert) -> set[str]:
        kw = alert.kw
        if kw is not None and kw.evidence is not None:
            alert.connectors |= kw.evidence.connectors
        return alert.connectors

    def blind(self, alert: Alert) -> bool:
        """True while a link the alert rests on is down: its state is held."""
        if not self.down_connectors:
            return False
        return not self.down_connectors.isdisjoint(self._connectors(alert))

    def links_back_at(self, alert: Alert) -> float:
        """When the last of the links the alert rests on came (back) up; -inf when none is tracked."""
        links = self.links
        back = float("-inf")
        if links:
            for name in self._connectors(alert):
                link = links.get(name)
                if link is not None and link.since > back:
                    back = link.since
        return back

    def alive_since(self, alert: Alert, t: float) -> bool:
        """Every link the alert rests on is up and proved alive at or after ``t``."""
        links = self.links
        if not links:
            return True
        for name in self._connectors(alert):
            link = links.get(name)
            if link is not None and (not link.up or link.alive_at < t):
                return False
        return True

    # -- when to look again ------------------------------------------------------------------------
    def schedule(self, alert: Alert, at: float) -> None:
        """Judge ``alert`` again at ``at`` (event time), whatever was planned before."""
        alert.due_at = at
        heapq.heappush(self._due, (at, next(self._seq), alert))

    def request_sweep(self) -> None:
        """Judge every live alert at the next tick (a link came back, alerts were restored)."""
        self.sweep_requested = True

    def _live(self, alert: Alert) -> bool:
        th = alert.threshold
        return th is not None and th.active.get(alert.key) is alert

    def pop_due(self, now: float) -> Alert | None:
        """The next live alert to judge at ``now``: swept ones first, then due ones; None when none is."""
        sweep = self._sweep
        while sweep:
            alert = sweep.popleft()
            if self._live(alert):
                return alert
        due = self._due
        while due and due[0][0] <= now:
            at, _, alert = heapq.heappop(due)
            if at == alert.due_at and self._live(alert):
                alert.due_at = float("inf")
                return alert
        return None

    def start_sweep(self, alerts: Iterable[Alert]) -> None:
        self.sweep_requested = False
        self._sweep.extend(alerts)

    def due_pending(self, now: float) -> bool:
        """Alerts are waiting to be judged at ``now`` (a tick cut short by its time budget)."""
        return bool(self._sweep) or self.sweep_requested or bool(self._due and self._due[0][0] <= now)

    # -- timers ----------------------------------------------------------------------------------
    def tick(self, now: float, deadline: float | None = None) -> list[Notification]:
        """Flush every group whose timer is due at ``now``; returns what was emitted. With a ``deadline``
        (``time.perf_counter()``), stop after the flush that passes it; ``groups_due(now)`` then says
        more are waiting (the daemon goes on at once, in another slice of the event loop)."""
        sent: list[Notification] = []
        if self.store is None:
            self._flush_due_groups(now, deadline, sent)
            return sent

        def flush() -> None:
            self.flush_state(deadline)
            self._flush_due_groups(now, deadline, sent)
            self.flush_state(deadline)

        self.store.write_through(flush)  # a failing store: the notifications go out all the same
        return sent

    def _flush_due_groups(self, now: float, deadline: float | None, sent: list[Notification]) -> None:
        for group in [g for g in self.groups.values() if g.next_flush <= now]:
            notification = self._flush(group, now)
            if notification is not None:
                sent.append(notification)
            if deadline is not None and time.perf_counter() >= deadline:
                break
        self._next_due_stale = True

    @property
    def state_pending(self) -> bool:
        """Alert states wait to be written (a budgeted tick wrote only some)."""
        return bool(self._dirty)

    def groups_due(self, now: float) -> bool:
        due = self.next_due()
        return due is not None and due <= now

    def _flush(self, group: AlertGroup, now: float) -> Notification | None:
        cfg = self.config
        # a group may hold tens of thousands of alerts (a flood of spoofed numbers): one pass in comprehensions,
        # silences and links looked at only when some are active or down
        members = list(group.alerts.values())
        if any(s.active(now) for s in self.silences):
            members = [a for a in members if self.silenced_by(a.labels, now) is None]
        firing = [a for a in members if a.state == FIRING]
        resolved = [a for a in members if a.state == RESOLVED and a.notified] if cfg.send_resolved else []
        held = {a.fingerprint for a in firing if self.blind(a)} if self.down_connectors else set()
        due = (
            any(not a.notified for a in firing)
            or bool(resolved)
            or (bool(firing) and not held and group.last_sent_at is not None
                and now - group.last_sent_at >= cfg.repeat_interval)
        )
        notification: Notification | None = None
        if due:
            unlisted: dict[str, int] = {}
            listed_firing, listed_resolved = firing, resolved
            if len(firing) + len(resolved) > cfg.max_alerts_listed:
                listed_firing, listed_resolved, unlisted = _listed(firing, resolved, cfg.max_alerts_listed)
            alerts: list[AlertDict] = []
            for alert in listed_firing:
                snap = self.snapshot(alert)
                snap["change"] = FIRING if alert.notified else NEW
                snap["held"] = alert.fingerprint in held
                alerts.append(snap)
            for alert in listed_resolved:
                snap = AlertDict(**(alert.final or self.snapshot(alert)))  # type: ignore[typeddict-item]
                snap["change"] = RESOLVED
                alerts.append(snap)
            notification = Notification(
                group_key=group.key,
                group_labels=dict(group.labels),
                status=FIRING if firing else RESOLVED,
                alerts=alerts,
                created_at=now,
                unlisted=unlisted,
            )
            dirty = self._dirty if self.store is not None else None
            for alert in firing:  # the group's row (saved below, with the notification) names them announced
                if not alert.notified:
                    alert.notified = True
                    if dirty is not None:  # ``_save(alert, None)``, inline
                        entry = dirty.get(alert.fingerprint)
                        if entry is None or entry[0] is not alert:
                            dirty[alert.fingerprint] = (alert, None if entry is None else entry[1])

            group.last_sent_at = now
            self.notifications += 1
            self.emit(notification)
        for fp, alert in list(group.alerts.items()):
            if alert.state == RESOLVED:  # announced now, never seen firing, muted, or not to be announced
                del group.alerts[fp]
                if self.store is not None:
                    self._dirty.pop(fp, None)
                    self._persist(self.store.delete_alert_state, fp)
        group.next_flush = now + cfg.group_interval
        self._next_due_stale = True
        if not group.alerts:
            del self.groups[group.key]
            if self.store is not None:
                self._persist(self.store.delete_group, group.key)
        elif self.store is not None and notification is not None:
            self._persist(self.store.save_group, group.key, group.labels, group.last_sent_at,
                          sorted(a.fingerprint for a in firing), [])
        return notification

    def _persist(self, write: Callable[..., Any], *args: Any) -> None:
        """A store write the alerts do not depend on now: a failing disk must not stop notifications."""
        try:
            write(*args)
        except self.store.ERRORS as exc:  # type: ignore[union-attr]
            self.store.report_error(exc)  # type: ignore[union-attr]

    def next_due(self) -> float | None:
        """When the next group timer is due (for a daemon that sleeps until then)."""
        if self._next_due_stale:
            self._next_due = min((g.next_flush for g in self.groups.values()), default=None)
            self._next_due_stale = False
        return self._next_due

    # -- content ----------------------------------------------------------------------------------
    def _summary(self, alert: Alert, th: Threshold) -> Summary:
        kw = alert.kw
        if kw is None:
            return Summary()
        return summarize(kw.evidence, kw.head, th.window_buckets, th.categories, th.confidences, th.codes)

    def snapshot(self, alert: Alert) -> AlertDict:
        """The content of an alert, JSON-ready; every figure covers the whole window."""
        th = alert.threshold
        if th is None:
            return alert.final or AlertDict(fingerprint=alert.fingerprint, state=alert.state)
        cfg = th.config
        kw = alert.kw
        if kw is not None:  # the counters as they are now (another threshold may have moved the key on)
            alert.matching, alert.attempts = th.values(kw.totals)
        summary = self._summary(alert, th)
        if summary.last_seen is not None and (alert.last_seen is None or summary.last_seen > alert.last_seen):
            alert.last_seen = summary.last_seen
        resolved = alert.state == RESOLVED
        samples: list[SampleCall] = []
        redress: list[dict[str, Any]] = []
        if kw is not None and kw.evidence is not None:
            horizon = (kw.head - th.window_buckets + 1) * th.bucket_s  # start of the window's oldest bucket
            cats, conf, codes = th.categories, th.confidences, th.codes
            seen_contacts: set[tuple[str, ...]] = set()
            for s in reversed(kw.evidence.samples):  # newest first
                if s[S_T] < horizon or s[S_CATEGORY] not in cats:
                    continue
                if (conf is not None and s[S_CONFIDENCE] not in conf) or (codes is not None and s[S_CODE] not in codes):
                    continue
                if not resolved and len(samples) < self.config.samples:
                    samples.append(SampleCall(call_id=s[S_CALL_ID], callee=s[S_CALLEE], code=s[S_CODE],
                                              phrase=s[S_PHRASE], category=s[S_CATEGORY], at=iso(s[S_T])))
                red = s[S_REDRESS]
                if red is not None and red.contacts() and red.contacts() not in seen_contacts and len(redress) < 10:
                    seen_contacts.add(red.contacts())
                    redress.append(red.to_dict())
        rate = alert.matching / alert.attempts if alert.attempts else None
        what = {} if resolved else {name: self.categories[name].what_to_do for name in cfg.categories
                                    if name in self.categories and self.categories[name].what_to_do}
        return AlertDict(
            fingerprint=alert.fingerprint,
            threshold=th.name,
            kind=alert_kind(alert.scope),
            description=th.description,
            severity=th.severity,
            state=alert.state,
            labels=dict(alert.labels),
            scope=dict(alert.scope),
            count=alert.matching,
            attempts=alert.attempts,
            rate=round(rate, 4) if rate is not None else None,
            window_s=th.window_s,
            categories=summary.categories,
            watched=list(cfg.categories),
            sip_codes=summary.codes,
            trunks=summary.trunks,
            connectors=summary.connectors,
            first_seen=iso(summary.first_seen),
            last_seen=iso(alert.last_seen),
            started_at=iso(alert.started_at),
            fired_at=iso(alert.fired_at),
            resolved_at=iso(alert.resolved_at),
            samples=samples,
            redress=redress,
            what_to_do=what,
            resolve_rule=self._resolve_rule(th),
        )

    def _resolve_rule(self, th: Threshold) -> str:
        rule = self._rules.get(th.name)
        if rule is None:
            rule = self._rules[th.name] = _resolve_rule(th)
        return rule

    # -- persistence ------------------------------------------------------------------------------
    def _save(self, alert: Alert, snap: AlertDict | None) -> None:
        """Mark an alert's state for writing; ``flush_state`` writes all marked ones in one transaction."""
        if self.store is None:
            return
        previous = self._dirty.get(alert.fingerprint)
        if snap is None and previous is not None:
            snap = previous[1]
        self._dirty[alert.fingerprint] = (alert, snap)

    def flush_state(self, deadline: float | None = None) -> None:
        """Write the alert states changed since the last flush (called by ``tick``), the oldest first; with
        a ``deadline`` (``time.perf_counter()``) only until it passes (a flood opens thousands of alerts a
        second: their snapshots are written over several slices of the loop; ``state_pending`` says some
        wait)."""
        if self.store is None or not self._dirty:
            return
        if deadline is None:
            self._flush_states(deadline)
            return
        while self._dirty and time.perf_counter() < deadline:
            self._flush_states(STATES_PER_WRITE)

    def _flush_states(self, limit: int | None) -> None:
        assert self.store is not None
        if limit is None or len(self._dirty) <= limit:
            dirty, self._dirty = self._dirty, {}
        else:
            dirty = {}
            for fp in list(itertools.islice(self._dirty, limit)):
                dirty[fp] = self._dirty.pop(fp)
        try:
            self._write_states(dirty)
        except self.store.ERRORS as exc:  # the disk is full or read-only: kept for the next flush (reported)
            for fp, entry in dirty.items():
                self._dirty.setdefault(fp, entry)
            self.store.report_error(exc)

    def _write_states(self, dirty: dict[str, tuple[Alert, AlertDict | None]]) -> None:
        assert self.store is not None and self.save_states is not None
        self.save_states([
            self.store.AlertStateRow(
                fp, alert.threshold.name if alert.threshold else alert.labels.get("threshold", ""), alert.labels,
                alert.state, alert.started_at, alert.fired_at, alert.resolved_at, alert.notified, snap)
            for fp, (alert, snap) in dirty.items()])

    def restore(self) -> None:
        """Load what a previous run knew (groups, firing alerts, resolves not yet announced), before a
        rebuild. Then the pipeline replays stored outcomes: an alert that fires again adopts its stored
        state (no second page); ``finish_restore`` keeps the others firing until evidence says otherwise.
        """
        if self.store is None:
            return
        for row in self.store.load_groups():
            group = AlertGroup(row["key"], row["labels"], row["last_sent_at"] or 0.0)
            group.last_sent_at = row["last_sent_at"]
            self.groups[group.key] = group
            self._next_due_stale = True
        # alerts a group announced (its row is written with each notification, in its transaction) are
        # announced, whether or not their own row was written with the flag before the process ended
        announced = {fp for row in self.store.load_groups() for fp in row.get("notified_firing") or ()}
        rows = self.store.load_alert_states(FIRING)
        for row in rows:
            if row["fingerprint"] in announced:
                row["notified"] = True
        # resolved and written, but the process ended before its group announced it: announced after the
        # restart, once (or, if its calls make it fire again in the rebuild, it continues as announced)
        rows += [row for row in self.store.load_alert_states(RESOLVED) if row["notified"]]
        self._restored = {row["fingerprint"]: row for row in rows}

    def finish_restore(self, now: float, reopen: Reopen | None = None) -> None:
        """After the rebuild: a stored firing alert that did not fire again (its calls were not all in the
        store, or time passed) stays firing on its (re-created) window and resolves only by the rules
        above, once its links are back; one whose threshold is gone is resolved, saying why."""
        for row in self._restored.values():
            if row["state"] == RESOLVED:
                self._restore_resolved(row, now, resolved_at=row.get("resolved_at") or now)
                continue
            found = reopen(row) if reopen is not None else None
            if found is None:
                self._restore_resolved(row, now, resolved_at=now)
                continue
            th, key, kw = found
            fp = row["fingerprint"]
            alert = Alert(th, key, _scope_dict(th.scope, key), dict(row.get("labels") or {}), fp, kw,
                          row.get("started_at") or now)
            alert.matching, alert.attempts = th.values(kw.totals)
            th.active[key] = alert
            self.pending_or_firing += 1
            self._adopt(alert, row, now)
        self._restored = {}
        for group in self.groups.values():  # restored groups: look at them at the next tick
            group.next_flush = min(group.next_flush, now)
        self._next_due_stale = True
        for key in [k for k, g in self.groups.items() if not g.alerts]:
            del self.groups[key]
            if self.store is not None:
                self.store.delete_group(key)
        self.flush_state()

    def _restore_resolved(self, row: Mapping[str, Any], now: float, *, resolved_at: float) -> None:
        fp = row["fingerprint"]
        snap = dict(row.get("snapshot") or {})
        alert = Alert(None, None, dict(snap.get("scope") or {}), dict(row.get("labels") or {}), fp, None,
                      row.get("started_at") or now)
        alert.fired_at = row.get("fired_at")
        alert.notified = bool(row.get("notified"))
        alert.state = RESOLVED
        alert.resolved_at = resolved_at
        snap.update(state=RESOLVED, resolved_at=iso(resolved_at), fingerprint=fp, samples=[], what_to_do={})
        alert.final = AlertDict(**snap)  # type: ignore[typeddict-item]
        group = self._group_for(alert, now)
        group.alerts.setdefault(fp, alert)
        self._save(alert, alert.final)


def _listed(firing: list[Alert], resolved: list[Alert], limit: int) -> tuple[list[Alert], list[Alert], dict[str, int]]:
    """The ``limit`` alerts a notification lists (new ones first, then resolves, then those still firing; most
    matching calls first), each list in its group order, and how many of each change are left out."""
    new = [a for a in firing if not a.notified]
    told = [a for a in firing if a.notified] if len(new) < limit else []
    by_calls = operator.attrgetter("matching")
    chosen = set(map(id, heapq.nlargest(limit, new, key=by_calls)))
    room = limit - len(chosen)
    if room > 0:
        chosen.update(map(id, heapq.nlargest(room, resolved, key=by_calls)))
        room = limit - len(chosen)
    if room > 0:
        chosen.update(map(id, heapq.nlargest(room, told, key=by_calls)))
    unlisted = {
        NEW: sum(1 for a in new if id(a) not in chosen),
        RESOLVED: sum(1 for a in resolved if id(a) not in chosen),
        FIRING: len(firing) - len(new) - sum(1 for a in told if id(a) in chosen),
    }
    return ([a for a in firing if id(a) in chosen], [a for a in resolved if id(a) in chosen],
            {change: n for change, n in unlisted.items() if n})


def _split(value: str | None) -> set[str]:
    return {part for part in (value or "").split(",") if part}


def _scope_dict(fields: Iterable[str], key: Any) -> dict[str, str]:
    fields = tuple(fields)
    if len(fields) == 1:
        return {fields[0]: str(key)}
    return {f: str(v) for f, v in zip(fields, key, strict=True)}


def _resolve_rule(th: Threshold) -> str:
    """When this threshold's alert resolves, in words (for the message and the README's rule)."""
    cfg = th.config
    keep = format_duration(th.keep_firing_s) if th.keep_firing_s else ""
    hold = f" for {keep}" if keep else ""
    if th.is_rate:
        return (f"below {th.resolve_bound:.1%} of the attempts (at least {th.min_attempts}) in "
                f"{format_duration(cfg.window)}{hold}, after {th.min_attempts} calls since it fired")
    return f"below {th.resolve_bound:g} in {format_duration(cfg.window)}{hold}"


def alert_event(snap: AlertDict) -> dict[str, Any]:
    """The JSON line ``blockradar replay`` prints for a transition (pass it ``on_transition``'s snapshot)."""
    state = snap.get("state")
    return {
        "kind": "alert",
        "state": state,
        "threshold": snap.get("threshold"),
        "severity": snap.get("severity"),
        "scope": snap.get("scope", {}),
        "labels": snap.get("labels", {}),
        "count": snap.get("count"),
        "attempts": snap.get("attempts"),
        "rate": snap.get("rate"),
        "window_s": snap.get("window_s"),
        "categories": snap.get("categories", {}),
        "sip_codes": snap.get("sip_codes", {}),
        "trunks": snap.get("trunks", {}),
        "at": snap.get("resolved_at") if state == RESOLVED else snap.get("fired_at"),
        "redress": snap.get("redress", []),
    }
