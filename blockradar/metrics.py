"""Prometheus metrics: the model (counters the pipeline bumps) and a collector that reads
connector health at scrape time. The registry is injected (a fresh one per daemon or test);
exposition lives in ``web.py``.

Labels are bounded: connector, pbx, trunk, category, threshold, state, notifier, result. Never
caller or callee numbers. Trunk names come from the PBX config, but a hostile or broken stream
could invent many, so at most ``max_trunks`` distinct trunk values are kept; the rest are
counted under ``trunk="(other)"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blockradar.connectors.base import ConnectorHealth, LinkState

OTHER_TRUNK = "(other)"


class Metrics:
    """The daemon's counters, registered in the registry it is given."""

    def __init__(self, registry: CollectorRegistry, max_trunks: int = 200) -> None:
        self.registry = registry
        self.max_trunks = max_trunks
        self._trunks: set[str] = set()
        self.call_outcomes = Counter(
            "blockradar_call_outcomes", "Call outcomes classified, by connector, trunk and category.",
            ["connector", "trunk", "category"], registry=registry)
        self.alerts = Counter(
            "blockradar_alerts", "Alert state transitions, by threshold and new state.",
            ["threshold", "state"], registry=registry)
        self.notifications = Counter(
            "blockradar_notifications", "Notification delivery attempts, by notifier and result.",
            ["notifier", "result"], registry=registry)
        self.reloads = Counter(
            "blockradar_reloads", "Rule/threshold reloads, by result.", ["result"], registry=registry)
        self.store_errors = Counter(
            "blockradar_store_write_errors", "Writes the store refused (disk full, read-only, damaged).",
            registry=registry)
        self.rules_loaded = Gauge(
            "blockradar_rules_loaded", "Rules in the active rule set.", registry=registry)

    def trunk_label(self, trunk: str | None) -> str:
        label = trunk or ""
        if label in self._trunks:
            return label
        if len(self._trunks) < self.max_trunks:
            self._trunks.add(label)
            return label
        return OTHER_TRUNK

    def outcome(self, connector: str, trunk: str | None, category: str) -> None:
        self.call_outcomes.labels(connector, self.trunk_label(trunk), category).inc()


class WindowCollector(Collector):
    """Keys the windows let go, read when Prometheus scrapes: ``lru`` at the key cap (a flood of spoofed
    caller IDs: the audit found these evictions exposed nowhere), ``idle`` once out of every window."""

    def __init__(self, groups: Callable[[], Iterable[Any]]) -> None:
        self._groups = groups

    def collect(self) -> Iterator[Metric]:
        evicted = CounterMetricFamily("blockradar_window_keys_evicted",
                                      "Window keys dropped: at the key cap (lru) or out of every window (idle).",
                                      labels=["scope", "reason"])
        live = GaugeMetricFamily("blockradar_window_keys", "Live window keys.", labels=["scope"])
        for group in self._groups():
            scope = "+".join(group.scope)
            windows = group.windows
            evicted.add_metric([scope, "lru"], float(windows.lru_evicted))
            evicted.add_metric([scope, "idle"], float(windows.idle_evicted))
            live.add_metric([scope], float(len(windows)))
        yield from (evicted, live)


class HealthCollector(Collector):
    """Connector health and outbox depth, read when Prometheus scrapes."""

    def __init__(self, healths: Callable[[], Iterable[ConnectorHealth]], outbox_depth: Callable[[], int],
                 now: Callable[[], float] = time.time) -> None:
        self._healths = healths
        self._outbox_depth = outbox_depth
        self._now = now

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("blockradar_connector_up", "1 when the PBX link is connected and logged in.",
                               labels=["connector", "pbx"])
        state = GaugeMetricFamily("blockradar_connector_state", "1 for the connector's current link state.",
                                  labels=["connector", "state"])
        age = GaugeMetricFamily("blockradar_last_event_age_seconds", "Seconds since the last frame from the PBX.",
                                labels=["connector"])
        counters = {
            "events": CounterMetricFamily("blockradar_events", "Frames received from the PBX.",
                                          labels=["connector"]),
            "reconnects": CounterMetricFamily("blockradar_reconnects", "Logins after the first.",
                                              labels=["connector"]),
            "parse_errors": CounterMetricFamily("blockradar_parse_errors", "Frames that could not be parsed.",
                                                labels=["connector"]),
            "dropped": CounterMetricFamily("blockradar_dropped_events", "Events dropped by a full buffer.",
                                           labels=["connector"]),
            "expired_calls": CounterMetricFamily("blockradar_expired_calls",
                                                 "Call state expired without a hangup.", labels=["connector"]),
            "numbers_kept_as_given": CounterMetricFamily(
                "blockradar_numbers_kept_as_given",
                "Caller/callee numbers kept as the PBX wrote them: not a possible number of numbers.default_region.",
                labels=["connector"]),
            "clock_skewed": CounterMetricFamily("blockradar_clock_skew_events",
                                                "Events whose PBX time was replaced by receive time.",
                                                labels=["connector"]),
        }
        skipped = CounterMetricFamily("blockradar_legs_skipped",
                                      "PBX legs that are not outbound carrier attempts (internal, inbound, "
                                      "not a trunk), by reason.", labels=["connector", "reason"])
        now = self._now()
        for health in self._healths():
            for reason, count in health.legs_skipped.items():
                skipped.add_metric([health.name, reason], float(count))
            up.add_metric([health.name, health.pbx], 1.0 if health.state == LinkState.CONNECTED else 0.0)
            state.add_metric([health.name, str(health.state)], 1.0)
            if health.last_event_at is not None:
                age.add_metric([health.name], max(0.0, now - health.last_event_at))
            for attr, family in counters.items():
                family.add_metric([health.name], float(getattr(health, attr)))
        depth = GaugeMetricFamily("blockradar_outbox_depth", "Notifications waiting in the outbox.")
        depth.add_metric([], float(self._outbox_depth()))
        yield from (up, state, age, *counters.values(), skipped, depth)
