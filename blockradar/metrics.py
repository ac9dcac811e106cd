"""Prometheus metrics: the model (counters the pipeline bumps) and collectors that read connector
health, windows and live alerts at scrape time. The registry is injected (a fresh one per daemon or
test); exposition lives in ``web.py``.

Names say what they count (``promtool check metrics`` clean): ``*_total`` counters, a
``*_timestamp_seconds`` for the last frame instead of an age that goes stale between scrapes, no
``*_created`` series (they doubled the series count and nobody graphs them), the process and Python
runtime collectors of ``prometheus_client``, and ``blockradar_build_info``.

Labels are bounded: connector, pbx, trunk, category, threshold, state, notifier, result. Never
caller or callee numbers. Trunk names come from the PBX config, but a hostile or broken stream
could invent many, so at most ``max_trunks`` distinct trunk values are kept; the rest are
counted under ``trunk="(other)"``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blockradar import __version__
from blockradar.connectors.base import ConnectorHealth, LinkState

OTHER_TRUNK = "(other)"

# prometheus_client keeps this switch in a module global; blockradar never wants the *_created series
disable_created_metrics()


class Metrics:
    """The daemon's counters, registered in the registry it is given."""

    def __init__(self, registry: CollectorRegistry, max_trunks: int = 200) -> None:
        self.registry = registry
        self.max_trunks = max_trunks
        self._trunks: set[str] = set()
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        PlatformCollector(registry=registry)  # python_info
        GCCollector(registry=registry)  # python_gc_*
        build = Gauge("blockradar_build_info", "Always 1: the blockradar version and the Python it runs on.",
                      ["version", "python_version"], registry=registry)
        build.labels(__version__, platform.python_version()).set(1)
        self.call_outcomes = Counter(
            "blockradar_call_outcomes", "Call outcomes classified, by connector, trunk and category.",
            ["connector", "trunk", "category"], registry=registry)
        self.alert_transitions = Counter(
            "blockradar_alert_transitions", "Alert state transitions, by threshold and the state entered.",
            ["threshold", "state"], registry=registry)
        self.notifications = Counter(
            "blockradar_notifications", "What became of notifications, by notifier and result (sent, retried, "
            "failed, expired, dropped, superseded).", ["notifier", "result"], registry=registry)
        self.action_decisions = Counter(
            "blockradar_action_decisions", "Action decisions (apply, restore, held), by action, phase and dry run.",
            ["action", "phase", "dry_run"], registry=registry)
        self.action_runs = Counter(
            "blockradar_action_runs", "Runs of actions (not dry runs), by action, phase and result (done, retried, "
            "failed).", ["action", "phase", "result"], registry=registry)
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


class AlertsCollector(Collector):
    """``blockradar_alerts_firing{threshold,severity}``, counted when Prometheus scrapes from the live alerts
    (a reload or a restore rebuilds them: a gauge kept by transitions would drift)."""

    def __init__(self, thresholds: Callable[[], Iterable[Any]]) -> None:
        self._thresholds = thresholds

    def collect(self) -> Iterator[Metric]:
        firing = GaugeMetricFamily("blockradar_alerts_firing", "Alerts firing now, by threshold and severity.",
                                   labels=["threshold", "severity"])
        for th in self._thresholds():
            count = sum(1 for alert in th.active.values() if alert.state == "firing")
            firing.add_metric([th.name, th.severity], float(count))
        yield firing


class HealthCollector(Collector):
    """Connector health and outbox depth, read when Prometheus scrapes."""

    def __init__(self, healths: Callable[[], Iterable[ConnectorHealth]], outbox_depth: Callable[[], int]) -> None:
        self._healths = healths
        self._outbox_depth = outbox_depth

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("blockradar_connector_up", "1 when the PBX link is connected and logged in.",
                               labels=["connector", "pbx"])
        state = GaugeMetricFamily("blockradar_connector_state", "1 for the connector's current link state.",
                                  labels=["connector", "state"])
        last = GaugeMetricFamily("blockradar_last_frame_timestamp_seconds",
                                 "Unix time of the last frame from the PBX (alert on time() minus it).",
                                 labels=["connector"])
        counters = {
            "events": CounterMetricFamily("blockradar_frames_received", "Frames received from the PBX (events and "
                                          "responses alike).", labels=["connector"]),
            "reconnects": CounterMetricFamily("blockradar_reconnects", "Logins after the first.",
                                              labels=["connector"]),
            "parse_errors": CounterMetricFamily("blockradar_parse_errors", "Frames that could not be parsed.",
                                                labels=["connector"]),
            "dropped": CounterMetricFamily("blockradar_outcomes_dropped", "Call outcomes dropped at the full "
                                           "hand-off to the pipeline (after the reader was held back).",
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
        for health in self._healths():
            for reason, count in health.legs_skipped.items():
                skipped.add_metric([health.name, reason], float(count))
            up.add_metric([health.name, health.pbx], 1.0 if health.state == LinkState.CONNECTED else 0.0)
            state.add_metric([health.name, str(health.state)], 1.0)
            if health.last_event_at is not None:
                last.add_metric([health.name], health.last_event_at)
            for attr, family in counters.items():
                family.add_metric([health.name], float(getattr(health, attr)))
        depth = GaugeMetricFamily("blockradar_outbox_depth", "Notifications waiting in the outbox.")
        depth.add_metric([], float(self._outbox_depth()))
        yield from (up, state, last, *counters.values(), skipped, depth)


class HepCollector(Collector):
    """The HEP source and its join (issue 15), read when Prometheus scrapes."""

    def __init__(self, stats: Callable[[], tuple[Any, Any, int] | None]) -> None:
        self._stats = stats  # () -> (HepStats, JoinStats, pending) or None without a hep: section

    def collect(self) -> Iterator[Metric]:
        found = self._stats()
        if found is None:
            return
        reader, join, pending = found
        datagrams = CounterMetricFamily("blockradar_hep_datagrams", "HEP datagrams received, by what they were.",
                                        labels=["result"])
        for result in ("bad", "unauthorized", "not_sip", "sip_errors", "empty_payloads", "other", "invites",
                       "responses", "not_carrier", "challenges", "retransmissions"):
            datagrams.add_metric([result], float(getattr(reader, result)))
        yield datagrams
        yield CounterMetricFamily("blockradar_hep_datagrams_received", "Every HEP datagram received.",
                                  value=float(reader.datagrams))
        forwarded = CounterMetricFamily("blockradar_hep_forwarded", "HEP datagrams sent on to the upstream "
                                        "collector, by result.", labels=["result"])
        forwarded.add_metric(["sent"], float(reader.forwarded))
        forwarded.add_metric(["error"], float(reader.forward_errors))
        yield forwarded
        joins = CounterMetricFamily("blockradar_hep_outcomes", "PBX outcomes and their carrier response: joined "
                                    "by SIP Call-ID, by dialled number, unjoined (none came in time), or not "
                                    "waited for (answered).", labels=["join"])
        joins.add_metric(["call_id"], float(join.joined_by_call_id))
        joins.add_metric(["number"], float(join.joined_by_number))
        joins.add_metric(["unjoined"], float(join.outcomes_unjoined))
        joins.add_metric(["not_waited"], float(join.outcomes_without_response))
        yield joins
        yield CounterMetricFamily("blockradar_hep_orphan_responses", "Carrier responses no PBX outcome claimed "
                                  "within hep.window.", value=float(join.orphan_responses))
        yield CounterMetricFamily("blockradar_hep_dropped", "Outcomes or responses let go at hep.max_pending.",
                                  value=float(join.dropped))
        yield GaugeMetricFamily("blockradar_hep_pending", "Outcomes and responses waiting for their twin.",
                                value=float(pending))


class FleetCollector(Collector):
    """This daemon's membership in a fleet (issue 16), read when Prometheus scrapes."""

    def __init__(self, report: Callable[[], dict[str, Any]], gate: dict[str, int]) -> None:
        self._report = report  # FleetNode.report
        self._gate = gate  # NotificationGate.counts (live dict)

    def collect(self) -> Iterator[Metric]:
        r = self._report()
        yield GaugeMetricFamily("blockradar_fleet_shared", "1 while this daemon shares windows and alerts through "
                                "the fleet's Redis, 0 while it runs alone (Redis unreachable).",
                                value=1.0 if r["mode"] == "shared" else 0.0)
        yield GaugeMetricFamily("blockradar_fleet_notifier", "1 while this daemon holds the notifier lease (it sends "
                                "the fleet's notifications).", value=1.0 if r["notifies"] else 0.0)
        if r["members"] is not None:  # alone, this daemon does not know them: no figure rather than a false 0
            yield GaugeMetricFamily("blockradar_fleet_members", "Daemons of the fleet seen alive.",
                                    value=float(r["members"]))
        outcomes = CounterMetricFamily("blockradar_fleet_outcomes", "Shared outcomes: published by this daemon, "
                                       "duplicates (a call another daemon published), read from the stream, skipped "
                                       "(counted alone before), bad (unreadable), counted alone (Redis away).",
                                       labels=["result"])
        for result in ("published", "duplicates", "read", "skipped", "bad", "counted_alone"):
            outcomes.add_metric([result], float(r[result]))
        yield outcomes
        yield GaugeMetricFamily("blockradar_fleet_backlog", "Outcomes counted alone, waiting to be published.",
                                value=float(r["backlog"]))
        yield CounterMetricFamily("blockradar_fleet_backlog_dropped", "Outcomes let go at fleet.backlog.",
                                  value=float(r["backlog_dropped"]))
        yield CounterMetricFamily("blockradar_fleet_outages", "Times Redis was lost.", value=float(r["outages"]))
        gate = CounterMetricFamily("blockradar_fleet_gate", "Outbox rows looked at by the fleet's gate: sent by this "
                                   "daemon, told already by another, or waiting for the notifier.", labels=["verdict"])
        for verdict, n in self._gate.items():
            gate.add_metric([verdict], float(n))
        yield gate
