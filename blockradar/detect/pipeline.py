"""The one path every outcome takes, shared by ``run``, ``replay`` and ``demo``:
outcome -> classify -> windows -> thresholds -> alert lifecycle -> notifications (into the outbox).

Thresholds are grouped by (scope, bucket size): each group shares one :class:`WindowSet` whose
columns are the distinct *signals* its thresholds count (a category, optionally narrowed to
confidences or SIP codes), so ten thresholds on ``caller_number`` cost one counter update per
outcome, not ten. A threshold is looked at only when its window holds a matching outcome or an
alert is live for the key. Everything is driven by event time (``ended_at``, else ``started_at``,
else the newest event time seen, counted in ``untimed``); ``tick(now)`` advances live alerts and group timers.

Per matching outcome the key's evidence (``evidence.py``) counts its category, confidence, SIP
code, trunk and connector in the same time bucket as the counters, and keeps it as a sample (the
last ``evidence_max``): an alert's figures (per category, per SIP code, per trunk, first and last
seen) therefore cover its whole window and add up to its matching count; only the sample calls and
redress contacts are a bounded list.
"""

from __future__ import annotations

import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from blockradar.alerting.lifecycle import FIRING, PENDING, Alert, AlertingConfig, AlertLifecycle
from blockradar.alerting.notifiers.base import AlertDict, Notification
from blockradar.classification import Category, Classification
from blockradar.detect.evidence import EXPIRED, KeyEvidence
from blockradar.detect.thresholds import DEFAULT_THRESHOLDS, Threshold, ThresholdConfig
from blockradar.detect.windows import DEFAULT_MAX_KEYS, KeyWindow, WindowSet
from blockradar.outcome import CallOutcome

EVICT_EVERY = 4096  # outcomes between idle-key sweeps
EVICT_PER_SLICE = 5000  # idle keys let go per tick slice when the tick has a time budget
LOOK_AGAIN_S = 1.0  # an alert whose resolve waits on a link's proof of life is looked at this often
SILENCE_RELOAD_S = 5.0


class Classifier(Protocol):
    categories: dict[str, Category]

    def classify(self, outcome: CallOutcome) -> Classification: ...


Signal = tuple[str, tuple[str, ...] | None, tuple[int, ...] | None]  # category, confidences, codes
# what the hot loop unpacks per threshold:
# (threshold, active, offsets, attempts_at, is_rate, bound, min_attempts, resolve_bound)
ThresholdPlan = tuple[Threshold, dict[Any, Alert], tuple[int, ...], int, bool, float, int, float]


class ThresholdGroup:
    """Thresholds sharing a scope and a bucket size, and their WindowSet."""

    __slots__ = ("cols_by_cat", "filtered_by_cat", "getter", "multi", "scope", "thresholds",
                 "touched_by_cat", "untouched", "windows")

    def __init__(self, scope: tuple[str, ...], bucket_s: float, configs: list[tuple[int, ThresholdConfig]],
                 max_keys: int, late_tolerance_s: float) -> None:
        self.scope = scope
        self.multi = len(scope) > 1
        self.getter = operator.attrgetter(*scope)
        signals: list[Signal] = []
        windows: list[float] = []
        for _, cfg in configs:
            if cfg.window not in windows:
                windows.append(cfg.window)
            for cat in cfg.categories:
                sig: Signal = (cat, tuple(cfg.confidence) if cfg.confidence else None,
                               tuple(cfg.sip_codes) if cfg.sip_codes else None)
                if sig not in signals:
                    signals.append(sig)
        columns = 1 + len(signals)
        self.windows = WindowSet(bucket_s, windows, columns, max_keys=max_keys, late_tolerance_s=late_tolerance_s)
        cols: dict[str, list[int]] = {}
        filtered: dict[str, list[tuple[int, tuple[str, ...] | None, tuple[int, ...] | None]]] = {}
        for col, (cat, conf, codes) in enumerate(signals, start=1):
            if conf is None and codes is None:
                cols.setdefault(cat, []).append(col)
            else:
                filtered.setdefault(cat, []).append((col, conf, codes))
        self.cols_by_cat = {cat: tuple(c) for cat, c in cols.items()}
        self.filtered_by_cat = filtered
        self.thresholds: list[Threshold] = []
        for index, cfg in configs:
            w = windows.index(cfg.window)
            offsets = []
            names = []
            for cat in cfg.categories:
                sig = (cat, tuple(cfg.confidence) if cfg.confidence else None,
                       tuple(cfg.sip_codes) if cfg.sip_codes else None)
                offsets.append(w * columns + 1 + signals.index(sig))
                names.append(cat)
            self.thresholds.append(Threshold(index, cfg, w * columns, tuple(offsets), tuple(names),
                                             self.windows.window_length_buckets(w)))
        # An outcome that adds to a threshold's signals may make it fire; one that does not can only
        # lower a rate or lift the attempts over min_attempts, which matters only for rate thresholds
        # and for counts with a min_attempts. Live alerts of the others are re-judged by tick().
        def plan(ths: Iterable[Threshold]) -> tuple[ThresholdPlan, ...]:
            return tuple((th, th.active, th.offsets, th.attempts_at, th.is_rate, th.bound, th.min_attempts,
                          th.resolve_bound)
                         for th in ths)

        self.touched_by_cat = {cat: plan(th for th in self.thresholds if cat in th.categories or th.is_rate
                                         or th.min_attempts > 1)
                               for cat in {s[0] for s in signals}}
        self.untouched = plan(th for th in self.thresholds if th.is_rate or th.min_attempts > 1)

    def key_of(self, outcome: CallOutcome) -> Any:
        key = self.getter(outcome)
        if self.multi and None in key:
            return None
        return key

    def columns_for(self, category: str, cls: Classification, outcome: CallOutcome) -> tuple[int, ...]:
        cols = self.cols_by_cat.get(category, ())
        extra = self.filtered_by_cat.get(category)
        if extra:
            more = tuple(col for col, conf, codes in extra
                         if (conf is None or cls.confidence in conf) and (codes is None or outcome.sip_code in codes))
            if more:
                cols = cols + more
        return cols


class Pipeline:
    """Classify, count, judge and alert. Not thread-safe: one event loop drives it."""

    def __init__(
        self,
        classifier: Classifier,
        thresholds: Sequence[ThresholdConfig] | None = None,
        alerting: AlertingConfig | None = None,
        *,
        emit: Callable[[Notification], None] | None = None,
        store: Any | None = None,
        on_transition: Callable[[Alert, AlertDict], None] | None = None,
        save_states: Callable[[list[Any]], None] | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
        late_tolerance_s: float = 5.0,
        evidence_max: int = 10,
        keep_notifications: int = 1000,
    ) -> None:
        configs = list(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        names = [c.name for c in configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"threshold names must be unique: {dupes}")
        self.classifier = classifier
        self._classify = classifier.classify
        self.thresholds = configs
        by_group: dict[tuple[tuple[str, ...], float], list[tuple[int, ThresholdConfig]]] = {}
        for index, cfg in enumerate(configs):
            by_group.setdefault((tuple(cfg.scope), cfg.bucket_s), []).append((index, cfg))
        self.groups = [ThresholdGroup(scope, bucket, items, max_keys, late_tolerance_s)
                       for (scope, bucket), items in by_group.items()]
        self._windows_of = {th.index: g.windows for g in self.groups for th in g.thresholds}
        self.behind = False  # a budgeted tick left due work for the next slice
        self._plan = [(g.getter, g.multi, g.cols_by_cat, g.filtered_by_cat, g.windows.add, g.touched_by_cat,
                       g.untouched, g.windows.bucket_s, g.windows.n_buckets, g) for g in self.groups]
        self.notifications: deque[Notification] = deque(maxlen=keep_notifications)
        self.notifications_dropped = 0
        self._emit = emit or self._keep
        self.lifecycle = AlertLifecycle(alerting, emit=self._emit, categories=classifier.categories, store=store,
                                        on_transition=on_transition, save_states=save_states)
        self.evidence_max = evidence_max
        self.watermark = 0.0
        self.processed = 0
        self.untimed = 0
        self._since_evict = 0
        self._silences_loaded_at = 0.0

    def _keep(self, notification: Notification) -> None:
        if len(self.notifications) == self.notifications.maxlen:
            self.notifications_dropped += 1
        self.notifications.append(notification)

    # -- the hot path ----------------------------------------------------------------------------
    def process(self, outcome: CallOutcome, cls: Classification | None = None) -> Classification:
        """Classify one outcome (unless ``cls`` says how: a fleet's other daemon classified it), count it,
        judge the thresholds it touches, and return its class."""
        if cls is None:
            cls = self._classify(outcome)
        t = outcome.ended_at
        if t is None or not -1e11 < t < 1e11:  # also NaN and infinities: never trusted as event time
            t = outcome.started_at
            if t is None or not -1e11 < t < 1e11:
                self.untimed += 1
                t = self.watermark
        if t > self.watermark:
            self.watermark = t
        self.processed += 1
        category = cls.category
        lifecycle = self.lifecycle
        for getter, multi, cols_by_cat, filtered_by_cat, add, touched_by_cat, untouched, bucket_s, n_buckets, group \
                in self._plan:
            key = getter(outcome)
            if key is None or (multi and None in key):
                continue
            cols = cols_by_cat.get(category, ())
            if category in filtered_by_cat:
                cols = group.columns_for(category, cls, outcome)
            kw = add(key, t, cols)
            if kw is None:
                continue
            if cols:
                ev = kw.evidence
                if ev is None or ev is EXPIRED:
                    kw.evidence = ev = KeyEvidence(self.evidence_max)
                confidence = cls.confidence
                code = outcome.sip_code
                trunk = outcome.trunk
                ev.add((int(t // bucket_s), category, confidence, code, trunk, outcome.connector, outcome.pbx), t,
                       (t, category, confidence, code, outcome.sip_phrase, outcome.call_id, outcome.callee_number,
                        outcome.redress, trunk), kw.head - n_buckets + 1)
                todo = touched_by_cat[category]
            elif kw.evidence is None:
                continue  # nothing matching ever counted for this key: no threshold can fire or clear
            else:
                ev = kw.evidence
                oldest = ev.oldest
                if oldest is not None and oldest <= kw.head - n_buckets and ev.stale(kw.head - n_buckets + 1):
                    kw.evidence = EXPIRED  # out of every window: let it go (memory follows live evidence)
                todo = untouched
            totals = kw.totals
            for th, active, offsets, attempts_at, is_rate, bound, min_attempts, resolve_bound in todo:
                if len(offsets) == 1:
                    matching = totals[offsets[0]]
                else:
                    matching = 0
                    for off in offsets:
                        matching += totals[off]
                alert = active.get(key) if active else None
                if alert is None:
                    if not matching:
                        continue
                    attempts = totals[attempts_at]
                    if attempts < min_attempts:
                        continue
                    if (matching >= bound * attempts) if is_rate else (matching >= bound):
                        lifecycle.open(th, key, kw, t, matching, attempts)
                else:
                    attempts = totals[attempts_at]
                    alert.calls_since_fire += 1
                    if alert.kw is not kw:
                        alert.kw = kw
                    if alert.state is FIRING:
                        # the common case while a problem lasts: firing and not below the resolve bound
                        if is_rate:
                            holds = matching >= resolve_bound * (attempts if attempts > min_attempts else min_attempts)
                        else:
                            holds = matching >= resolve_bound
                        if holds:
                            alert.matching = matching
                            alert.attempts = attempts
                            alert.clear_since = None
                            if t > alert.evaluated_at:
                                alert.evaluated_at = t
                            continue
                    lifecycle.update(alert, t, matching, attempts, th.judge(matching, attempts))
        self._since_evict += 1
        if self._since_evict >= EVICT_EVERY:
            self._since_evict = 0
            for group in self.groups:
                group.windows.evict_idle(self.watermark)
        return cls

    def process_many(self, outcomes: Iterable[CallOutcome | tuple[CallOutcome, Classification]]) -> int:
        """Outcomes, or (outcome, classification) pairs (a fleet's shared stream), in order."""
        n = 0
        for item in outcomes:
            if isinstance(item, tuple):
                self.process(*item)
            else:
                self.process(item)
            n += 1
        return n

    # -- time --------------------------------------------------------------------------------------
    def tick(self, now: float, budget_s: float | None = None) -> list[Notification]:
        """Judge the live alerts that are due at ``now`` (a window aged, a clear or ``for`` timer ran out,
        a link came back), let idle keys go, then flush due groups. Returns the notifications.

        Incremental: an alert is looked at only when something other than a new call can change its
        verdict (``_next_look``), so a tick with 10,000 live alerts and nothing due costs nothing per
        alert. With ``budget_s`` the work stops once that much time is spent and ``behind`` is set:
        the daemon calls ``tick`` again at once, in another slice of its event loop, so a mass expiry
        never blocks the loop for long. Without it (replay, tests) everything due is done."""
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        lifecycle = self.lifecycle
        if lifecycle.sweep_requested:
            lifecycle.start_sweep([alert for group in self.groups for th in group.thresholds
                                   for alert in th.active.values()])
        pop_due = lifecycle.pop_due
        rejudge = self._rejudge
        n = 0
        while True:
            alert = pop_due(now)
            if alert is None:
                break
            rejudge(alert, now)
            n += 1
            if deadline is not None and not n % 64 and time.perf_counter() >= deadline:
                self.behind = True
                return []
        limit = None if deadline is None else EVICT_PER_SLICE
        mark = max(now, self.watermark)
        for group in self.groups:
            if group.windows.evict_idle(mark, limit) == limit:
                self.behind = True
                return []
        if lifecycle.store is not None and now - self._silences_loaded_at >= SILENCE_RELOAD_S:
            self._silences_loaded_at = now
            lifecycle.reload_silences(now)
        sent = lifecycle.tick(now, deadline)
        self.behind = lifecycle.groups_due(now) or (deadline is not None and lifecycle.state_pending)
        return sent

    def _rejudge(self, alert: Alert, now: float) -> None:
        th = alert.threshold
        assert th is not None
        ws = self._windows_of[th.index]
        kw = ws.get(alert.key) or alert.kw
        if kw is None:
            return
        ws.advance(kw, int(now // ws.bucket_s))
        matching, attempts = th.values(kw.totals)
        lifecycle = self.lifecycle
        lifecycle.update(alert, max(now, alert.evaluated_at), matching, attempts, th.judge(matching, attempts))
        if th.active.get(alert.key) is alert:
            lifecycle.schedule(alert, self._next_look(alert, th, ws.next_change(kw), now))

    def _next_look(self, alert: Alert, th: Threshold, aged_at: float, now: float) -> float:
        """When ``tick`` must judge a live alert again, calls aside (a call re-judges it on the spot): when
        ageing next moves its counters, and before that when its ``for`` or clear timer may run out."""
        if alert.state == PENDING:
            return min(aged_at, alert.started_at + th.for_s)
        if alert.clear_since is None:
            return aged_at  # firing and holding (or held on a link that is down: a link back sweeps)
        lifecycle = self.lifecycle
        may_resolve_at = max(alert.clear_since + th.keep_firing_s, lifecycle.links_back_at(alert) + th.window_s)
        if may_resolve_at <= now:  # waiting for a link to prove alive, or for calls since it fired
            may_resolve_at = now + LOOK_AGAIN_S
        return min(aged_at, may_resolve_at)

    def next_due(self) -> float | None:
        return self.lifecycle.next_due()

    def flush_due(self, now: float, budget_s: float | None = None) -> list[Notification]:
        """Notify the alert groups whose timer is due at ``now``, and nothing else (no re-judging, no
        eviction). For the outcome sink: an alert whose group is due (``group_wait: 0``, or a
        ``group_wait`` that has run out) is notified with the outcome that fired it, not up to a
        tick later. O(groups) when nothing is due. With ``budget_s``, the alert states waiting to be
        written are written only for that long (the tick's slices write the rest: in a flood, thousands
        of alerts fire between two ticks), and groups are flushed until it is spent (at least one)."""
        due = self.lifecycle.next_due()
        if due is None or due > now:
            return []
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        sent = self.lifecycle.tick(now, deadline)
        if deadline is not None and (self.lifecycle.state_pending or self.lifecycle.groups_due(now)):
            self.behind = True
        return sent

    # -- health and restarts --------------------------------------------------------------------
    def connector_down(self, name: str, at: float = float("-inf")) -> None:
        self.lifecycle.connector_down(name, at)

    def connector_up(self, name: str, at: float = float("-inf")) -> None:
        self.lifecycle.connector_up(name, at)

    def rebuild(self, outcomes: Iterable[CallOutcome | tuple[CallOutcome, Classification]], now: float) -> int:
        """At start: restore alert/group state from the store, replay stored outcomes into the windows,
        keep restored alerts that did not come back firing on their windows (they resolve by the usual
        rules, once their PBX links are back), and flush. Nothing already sent is sent again."""
        self.lifecycle.restore()
        n = self.process_many(outcomes)
        self.finish_rebuild(now)
        return n

    def finish_rebuild(self, now: float) -> None:
        """The end of ``rebuild``, for a caller that fed the outcomes itself (``lifecycle.restore()``, then
        ``process_many`` in batches, as a fleet's daemon reads the shared stream)."""
        self.lifecycle.finish_restore(now, self._reopen)
        self.lifecycle.request_sweep()  # every alert the rebuild left live is judged at ``now`` once
        self.tick(now)

    def _reopen(self, row: Any) -> tuple[Threshold, Any, KeyWindow] | None:
        """A stored alert's threshold, scope key and window (created empty when its calls are gone)."""
        labels = row.get("labels") or {}
        for group in self.groups:
            for th in group.thresholds:
                if th.name != row.get("threshold"):
                    continue
                if any(f not in labels for f in th.scope):
                    return None  # the threshold now counts something else
                values = tuple(int(labels[f]) if f == "sip_code" else labels[f] for f in th.scope)
                key = values[0] if len(values) == 1 else values
                return th, key, group.windows.ensure(key, self.watermark)
        return None

    def stats(self) -> dict[str, Any]:
        windows = {"+".join(g.scope) + f"@{g.windows.bucket_s:g}s": g.windows.stats() for g in self.groups}
        return {
            "processed": self.processed,
            "untimed": self.untimed,
            "alerts_live": self.lifecycle.pending_or_firing,
            "groups": len(self.lifecycle.groups),
            "notifications": self.lifecycle.notifications,
            "windows": windows,
        }
