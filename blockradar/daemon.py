"""The daemon: wires connectors -> pipeline -> outbox -> notifiers, with the store, metrics, health,
signals and reload around them. ``blockradar run`` and ``blockradar demo`` both drive a ``Daemon``.

Lifecycle:

* ``start()``: open the store, compile rules, build notifiers, mark every PBX link down (nothing
  resolves on a link not yet watched), restore alert state and rebuild the windows from stored
  outcomes (so a restart neither forgets a problem nor pages again), start the outbox workers, the
  HTTP endpoints and the connectors.
* a ticker (1 s) judges the live alerts that are due, flushes due alert groups, watches connector
  health (self-alerts, link up/down and proof of life for the lifecycle) and, hourly, queues the
  prune of old rows, in slices of about ``TICK_SLICE_S`` so the event loop keeps serving the PBX
  links meanwhile.
* Outcomes, alert states and the hourly prune go to the store on a thread of their own
  (``storewriter``), in the order they happen: the event loop never waits for an insert or an fsync.
  One truth on disk: before the loop commits anything itself (notifications, groups: ``_commit``),
  everything queued for the writer is written, so ``kill -9`` can lose the last moment of outcomes
  but never leaves an alert or a notification without its evidence.
* ``reload()`` (SIGHUP): every connector waiting to retry its PBX retries at once (the operator may
  just have fixed a password on the PBX side); then re-read the config file: a bad rule or threshold
  keeps the old ones running, logs why and raises a self-alert; a good one is swapped in atomically,
  and a connector whose settings changed (a corrected secret) is restarted with them.
* ``stop()`` (SIGTERM/SIGINT): stop connectors, write what is buffered, flush the outbox for a
  bounded time, close everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from blockradar.actions.guardrails import HOUR, NumberState
from blockradar.actions.planner import ActionDecision, ActionPlanner, StateRow
from blockradar.actions.queue import ActionQueue
from blockradar.alerting.lifecycle import Alert
from blockradar.alerting.notifiers import build_notifiers
from blockradar.alerting.notifiers.base import AlertDict, Notification, Notifier
from blockradar.alerting.outbox import Outbox
from blockradar.alerting.selfhealth import ACTION_RETRIES_PAGED, SelfHealth
from blockradar.classification import Classification
from blockradar.clock import TICK_S, Clock, SystemClock
from blockradar.config import (
    ConfigError,
    DaemonConfig,
    FleetConfig,
    HepConfig,
    LoadedConfig,
    load_config,
    split_host_port,
)
from blockradar.connectors.base import Connector, ConnectorHealth, LinkState
from blockradar.connectors.hep.join import HepJoin
from blockradar.connectors.hep.source import HepReader, start_listener
from blockradar.detect.pipeline import Pipeline
from blockradar.detect.thresholds import ThresholdConfig
from blockradar.logs import LineBudget, fields
from blockradar.looplag import LoopLagMonitor
from blockradar.metrics import AlertsCollector, FleetCollector, HealthCollector, HepCollector, Metrics, WindowCollector
from blockradar.numbers import NumberPlan
from blockradar.outcome import CallOutcome
from blockradar.ruleset import RuleSet, RuleSetError, load_ruleset
from blockradar.store import STORE_ERRORS, Store, StoreError, StoreLock, outcome_row
from blockradar.storewriter import StoreWriter
from blockradar.web import HttpServer, StatusSource, build_app

if TYPE_CHECKING:
    from blockradar.fleet.node import FleetNode

log = logging.getLogger(__name__)

# before alert work is committed, the outcomes queued so far are written (by the writer thread): how long
# the loop waits for that at most (a commit takes a few ms; a stalled disk must not stop alerting)
OUTCOMES_WRITTEN_WAIT_S = 2.0
PRUNE_EVERY_S = 3600.0
HOLDS_RELOAD_S = 5.0  # how soon `blockradar actions hold|release` takes effect
OUTBOX_KEPT_S = 7 * 86400.0  # sent, failed and expired notifications are kept a week
# the most one slice of a tick may block the event loop: more work due (a mass expiry of alerts, groups
# to flush) goes on in the next slice, after the loop has served the PBX reads and probes waiting
TICK_SLICE_S = 0.001
SHUTDOWN_FLUSH_S = 10.0
STANDBY_FLUSH_S = 2.0  # a fleet's standby waits this long at stop for the holder to tell what it queued
# outcomes kept in memory while the store cannot be written (disk full): written once it can; beyond
# this the oldest are let go, counted (the windows and alerts have them already)
MAX_UNSTORED_OUTCOMES = 50_000
STORE_RECOVERED_AFTER_S = 5.0
GC_THAW_EVERY_S = 6 * 3600.0
GIL_SWITCH_S = 0.0005


class StartupError(Exception):
    """Something the operator must fix before the daemon can run (message names what and where)."""


def make_connector(spec: Any, sink: Callable[[CallOutcome], None], clock: Clock, region: str = "US") -> Connector:
    runtime = spec.to_runtime(region)
    if spec.type == "asterisk":
        from blockradar.connectors.asterisk import AsteriskConnector

        return AsteriskConnector(runtime, sink, clock)
    from blockradar.connectors.freeswitch import FreeswitchConnector

    return FreeswitchConnector(runtime, sink, clock)


class Daemon:
    def __init__(self, loaded: LoadedConfig, *, clock: Clock | None = None,
                 registry: CollectorRegistry | None = None, extra_notifiers: Sequence[Notifier] = (),
                 on_outcome: Callable[[CallOutcome, Classification], None] | None = None,
                 on_transition: Callable[[Alert, AlertDict], None] | None = None) -> None:
        self.loaded = loaded
        self.config: DaemonConfig = loaded.config
        self.clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.loop_lag = LoopLagMonitor(self.registry)
        self.extra_notifiers = list(extra_notifiers)
        self._on_outcome = on_outcome
        self._on_transition_hook = on_transition
        self.store: Store | None = None
        self.ruleset: RuleSet | None = None
        self.pipeline: Pipeline | None = None
        self.outbox: Outbox | None = None
        self.connectors: list[Connector] = []
        self.http: HttpServer | None = None
        self.selfhealth: SelfHealth | None = None
        self.last_reload: dict[str, Any] = {"at": None, "ok": True, "error": None}
        self.sink_errors = 0
        # while the store cannot be written: {"error", "since", "failed_at" (the latest), "failed_writes"}
        self.store_failure: dict[str, Any] | None = None
        self.writer: StoreWriter | None = None  # outcomes, alert states and prunes to the store, on its own thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store_lock: StoreLock | None = None  # one daemon per store
        self._ticker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._last_prune = 0.0
        self._thawed_at = 0.0  # the last gc.unfreeze(), monotonic
        self._transition_lines = LineBudget(limit=20, period_s=10.0)  # one INFO line per transition, storms summarised
        self.actions = ActionPlanner(self.config.actions)  # issue 14: alert transitions -> dialer changes
        self.action_queue: ActionQueue | None = None  # runs them (durable), and says what they did
        self.hep_reader: HepReader | None = None  # issue 15: the carrier's responses, mirrored as HEP ...
        self.hep_join: HepJoin | None = None  # ... joined to the PBX's outcomes
        self._hep_transport: asyncio.DatagramTransport | None = None
        self._action_lines = LineBudget(limit=20, period_s=10.0)
        self._holds_loaded_at = float("-inf")
        self.fleet: FleetNode | None = None  # issue 16: the windows and alerts shared with a fleet, on Redis
        self._fleet_reload: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------ start

    def _fresh_pipeline(self, ruleset: RuleSet, now: float) -> Pipeline:
        """The start's pipeline: every PBX link down (not watched yet: nothing on it resolves)."""
        assert self.store is not None
        pipeline = self._build_pipeline(ruleset, self.config.effective_thresholds(), self.store)
        for spec in self.config.connectors:
            pipeline.connector_down(spec.name, now)
        return pipeline

    def _build_pipeline(self, ruleset: RuleSet, thresholds: list[ThresholdConfig], store: Store) -> Pipeline:
        return Pipeline(ruleset, thresholds, self.config.alerting, emit=self._emit, store=store,
                        on_transition=self._transition, save_states=self._save_alert_states)

    async def start(self) -> None:
        config = self.config
        store_path = Path(config.store)
        try:
            store_path.parent.mkdir(parents=True, exist_ok=True)
            self._store_lock = StoreLock(store_path)
            self._store_lock.acquire()
        except StoreError as exc:
            self._store_lock = None
            raise StartupError(f"{self.loaded.path}: store: {exc}") from None
        except OSError as exc:
            self._store_lock = None
            raise StartupError(f"{self.loaded.path}: store: cannot lock {store_path}: {exc}") from None
        try:
            self.store = Store(store_path)
        except Exception as exc:
            raise StartupError(f"{self.loaded.path}: store: cannot open {store_path}: {exc}") from None
        self.store.on_write_error = self._store_write_failed
        self.store.on_write_ok = self._store_write_ok
        self._loop = asyncio.get_running_loop()
        self.writer = StoreWriter(store_path, on_error=lambda exc: self._from_writer(self._store_write_failed, exc),
                                  on_ok=lambda: self._from_writer(self._store_write_ok),
                                  max_unstored=MAX_UNSTORED_OUTCOMES, retry_s=TICK_S)
        self.writer.start()
        self.store.before_write = self._writer_caught_up
        try:
            self.ruleset = load_ruleset(config.rules)
        except RuleSetError as exc:
            raise StartupError(str(exc)) from None
        self.metrics.rules_loaded.set(len(self.ruleset.rules))
        notifiers = build_notifiers(config.notifiers) + self.extra_notifiers
        self.outbox = Outbox(self.store, notifiers, clock=self.clock,
                             on_result=lambda name, result: self.metrics.notifications.labels(name, result).inc())
        self.selfhealth = SelfHealth(config.self_health.link_down_after, config.self_health.auth_failing_after,
                                     self._emit, on_down=self._connector_down, on_up=self._connector_up)
        now = self.clock.now()
        try:
            self.pipeline = self._fresh_pipeline(self.ruleset, now)
            stored = self.store.iter_outcomes(now - self._history_s())
            if config.fleet is None:
                restored = self.pipeline.rebuild(stored, now)
            else:
                classify = self.pipeline.classifier.classify
                own = [(outcome, classify(outcome)) for outcome in stored]
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # only the type: the message of a decoding error may quote a stored row (call data)
            raise StartupError(f"{self.loaded.path}: store: {store_path} is damaged ({type(exc).__name__}); "
                               f"move it aside to start afresh, or restore a backup") from None
        if config.fleet is not None:
            restored = await self._start_fleet(config.fleet, own, now)
        shared = self.fleet is not None and self.fleet.shared
        source = "outcome(s) of the fleet's stream" if shared else "stored outcome(s)"
        log.info("blockradar starting: %d rules from %s, %d thresholds, %d notifier(s), %d %s replayed into the "
                 "windows", len(self.ruleset.rules), ", ".join(self.ruleset.files), len(self.pipeline.thresholds),
                 len(notifiers), restored, source)
        self.registry.register(HealthCollector(self.healths, self._outbox_depth))
        self.registry.register(WindowCollector(lambda: self.pipeline.groups if self.pipeline else ()))
        self.registry.register(HepCollector(
            lambda: (self.hep_reader.stats, self.hep_join.stats, self.hep_join.pending)
            if self.hep_reader is not None and self.hep_join is not None else None))
        self.registry.register(AlertsCollector(
            lambda: [th for group in self.pipeline.groups for th in group.thresholds] if self.pipeline else ()))
        await self.outbox.start()
        if self.actions.actions:
            self._start_actions(now)
            assert self.action_queue is not None
            await self.action_queue.start()
        if config.http is not None:
            status = StatusSource(config.store, self.status_live, self.clock.now,
                                  NumberPlan(config.numbers.default_region))
            self.http = HttpServer(build_app(self.registry, self.health_report, status), config.http.host,
                                   config.http.port)
            try:
                await self.http.start()
            except OSError as exc:
                raise StartupError(f"{self.loaded.path}: http.listen: cannot listen on {config.http.listen}: "
                                   f"{exc.strerror or exc}") from None
        if config.hep is not None:
            await self._start_hep(config.hep)
        for spec in config.connectors:
            connector = make_connector(spec, self._sink, self.clock, self.config.numbers.default_region)
            self.connectors.append(connector)
        for connector in self.connectors:
            await connector.start()
        if self.fleet is not None:
            self.fleet.start()
        self._ticker = asyncio.create_task(self._tick_forever(), name="blockradar-ticker")
        self.loop_lag.start()
        # the windows and alerts just rebuilt live as long as the daemon: out of the cyclic collector's
        # full passes, whose pause grows with every object they walk (200 ms with 100k numbers' windows)
        gc.freeze()
        self._thawed_at = time.monotonic()
        if self._freeze_after_full_pass not in gc.callbacks:
            gc.callbacks.append(self._freeze_after_full_pass)
        # the ESL link thread parses while the loop thread judges: hand the GIL over every 0.5 ms, not every
        # 5 ms, so a timer or a PBX read on the loop never waits a whole interval behind a burst
        sys.setswitchinterval(GIL_SWITCH_S)

    async def _start_fleet(self, cfg: FleetConfig, own: list[tuple[CallOutcome, Classification]], now: float) -> int:
        """Join the fleet: publish this daemon's stored outcomes (idempotent), rebuild the windows from the
        fleet's retained stream, and gate the outbox by the notifier lease; alone when Redis is away."""
        from blockradar.fleet.node import FleetNode
        from blockradar.fleet.told import NotificationGate

        assert self.pipeline is not None and self.outbox is not None
        self.fleet = FleetNode(cfg, member=cfg.name or socket.gethostname(), retention_s=self._history_s(),
                               judge=self._judge, digest=self._settings_digest(), now=self.clock.now,
                               on_mode=self._fleet_mode, silences=self.store, on_silences=self._silences_changed)
        self.outbox.gate = NotificationGate(self.fleet)
        self.registry.register(FleetCollector(self.fleet.report, self.outbox.gate.counts))
        pipeline = self.pipeline
        pipeline.lifecycle.restore()
        if not await self.fleet.join(own):
            n = pipeline.process_many(own)
        else:
            n = 0
            try:
                async for batch in self.fleet.history():
                    n += pipeline.process_many(batch)
            except Exception as exc:  # Redis went away mid-read (or sent what we cannot read): start over alone
                assert self.ruleset is not None
                self.pipeline = pipeline = self._fresh_pipeline(self.ruleset, now)
                pipeline.lifecycle.restore()
                self.fleet.alone_from_start(exc, own)
                n = pipeline.process_many(own)
        pipeline.finish_rebuild(now)
        return n

    def _silences_changed(self) -> None:
        """A silence came from another daemon of the fleet: muted from the next flush, not in 5 s."""
        if self.pipeline is not None:
            self.pipeline.lifecycle.reload_silences(self.clock.now())

    def _settings_digest(self) -> str:
        """What the fleet's daemons must agree on to judge and tell alike: thresholds, alerting, and the names
        of the notifiers (the notification log is kept per notifier name)."""
        notifiers = sorted(n.name for n in self.outbox.notifiers) if self.outbox is not None else []
        text = json.dumps([[t.model_dump(mode="json", by_alias=True) for t in self.config.effective_thresholds()],
                           self.config.alerting.model_dump(mode="json"), notifiers], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _fleet_mode(self, shared: bool, detail: str) -> None:
        if self.selfhealth is None or self.fleet is None:
            return
        now = self.clock.now()
        if shared:
            self.selfhealth.fleet_ok(self.fleet.member, now)
        else:
            self.selfhealth.fleet_alone(self.fleet.member, f"Redis {self.fleet.where}: {detail}",
                                        self.fleet.cfg.lease, now)

    def _start_actions(self, now: float) -> None:
        """The actions' guardrail state as the last run left it, squared with the alerts found firing (a
        crash between an alert's state and its decision being written), then the queue that runs them."""
        assert self.store is not None and self.pipeline is not None
        for action in self.actions.actions:
            states = self.store.action_states(action.name)
            kept = [r for r in states if bool(r["dry_run"]) == action.dry_run]
            if len(kept) < len(states):  # a dry run's "rests" are not real ones (nor the other way round)
                log.warning("actions: %s is %s now: the state of %d number(s) from when it was %s is dropped",
                            action.name, "a dry run" if action.dry_run else "run for real", len(states) - len(kept),
                            "run for real" if action.dry_run else "a dry run")
                self.store.log_actions([], [{"action": action.name, "caller_number": r["caller_number"],
                                             "empty": True} for r in states if r not in kept])
            rows = [StateRow(action.name, NumberState(r["caller_number"], r["resting_since"], r["restore_due"],
                                                      r["restored_at"], r["waiting"]),
                             r["context"], r["alert_fired_at"]) for r in kept]
            self.actions.load(action.name, rows, self.store.action_applies_since(action.name, now - HOUR,
                                                                                  action.dry_run))
        self.actions.set_holds({h["caller_number"] for h in self.store.held_numbers()})
        self._holds_loaded_at = now
        self.action_queue = ActionQueue(self.store, self.actions, clock=self.clock, on_result=self._action_ran)
        firing = [self.pipeline.lifecycle.snapshot(alert) for alert in self._firing_alerts()]
        self._report_actions(self.actions.reconcile([dict(s) for s in firing], now))
        resting = sum(len(g.resting) for g in self.actions.guards.values())
        log.info("actions: %d configured (%d run for real), %d number(s) resting, %d queued",
                 len(self.actions.actions), sum(not a.dry_run for a in self.actions.actions), resting,
                 self.store.action_depth())

    def _action_ran(self, action: str, phase: str, result: str, words: str, failures: int) -> None:
        """A run's end: counted; a run that failed for good, or keeps failing, pages (``action-failing``)."""
        self.metrics.action_runs.labels(action, phase, result).inc()
        if self.selfhealth is None:
            return
        now = self.clock.now()
        if result == "failed" or (result == "retried" and failures >= ACTION_RETRIES_PAGED):
            self.selfhealth.action_failing(action, words, now)
        elif result == "done":
            self.selfhealth.action_ok(action, now)

    def _firing_alerts(self) -> list[Alert]:
        assert self.pipeline is not None
        return [alert for group in self.pipeline.groups for th in group.thresholds
                for alert in th.active.values() if alert.state == "firing"]

    async def _start_hep(self, cfg: HepConfig) -> None:
        """The HEP listener and the join: from now on each outcome meets its carrier response (or waits for
        it a little) before the pipeline sees it."""
        self.hep_reader = HepReader(NumberPlan(self.config.numbers.default_region),
                                    auth_key=cfg.password.get_secret_value() if cfg.password else None,
                                    max_payload=cfg.max_payload, max_calls=2 * cfg.max_pending,
                                    pbx_addresses=tuple(cfg.pbx_addresses))
        join = self.hep_join = HepJoin(self._process, wait_s=cfg.wait, window_s=cfg.window,
                                       max_pending=cfg.max_pending, trunks=cfg.trunks)
        host, port = split_host_port(cfg.listen)
        forward = split_host_port(cfg.forward) if cfg.forward else None
        try:
            self._hep_transport, _ = await start_listener(
                self.hep_reader, lambda response: join.add_response(response, self.clock.now()), host, port, forward)
        except OSError as exc:
            raise StartupError(f"{self.loaded.path}: hep.listen: cannot listen on udp {cfg.listen}: "
                               f"{exc.strerror or exc}") from None
        log.info("HEP: listening on udp %s%s; an outcome waits up to %.1f s for its carrier response", cfg.listen,
                 f", every datagram forwarded to {cfg.forward}" if forward else "", cfg.wait)

    def _history_s(self) -> float:
        assert self.pipeline is not None
        return max((t.window for t in self.pipeline.thresholds), default=3600.0)

    # ------------------------------------------------------------------------------- data path

    def _sink(self, outcome: CallOutcome) -> None:
        """Called by the connectors in the loop thread, once per outcome; never raises. With HEP the outcome
        first meets its carrier response (``_process`` follows, now or after ``hep.wait``)."""
        join = self.hep_join
        if join is None:
            self._process(outcome)
            return
        try:
            join.add_outcome(outcome, self.clock.now())
        except Exception:
            log.exception("HEP join failed for call %s; the outcome goes on as it is", outcome.call_id)
            self._process(outcome)

    def _process(self, outcome: CallOutcome) -> None:
        """One outcome into the pipeline and the store; never raises."""
        try:
            pipeline = self.pipeline
            assert pipeline is not None and self.selfhealth is not None
            now = self.clock.now()
            lifecycle = pipeline.lifecycle
            if outcome.connector in lifecycle.down_connectors:
                # data is flowing: look at that link now rather than at the next tick
                self.selfhealth.observe([c.health() for c in self.connectors if c.name == outcome.connector], now)
            lifecycle.link_alive(outcome.connector, now)
            cls = pipeline.classifier.classify(outcome)
            assert self.writer is not None
            self.writer.add(outcome_row(outcome, cls))
            if self.fleet is not None:
                self.fleet.submit(outcome, cls)  # counted when the fleet's stream brings it back (or now, alone)
            else:
                pipeline.process(outcome, cls)
                self._flush_due(pipeline, now)
            self.metrics.outcome(outcome.connector, outcome.trunk, cls.category)
            if self._on_outcome is not None:
                self._on_outcome(outcome, cls)
        except Exception:
            self.sink_errors += 1
            log.exception("failed to process an outcome of connector %s (call %s)", outcome.connector,
                          outcome.call_id)

    def _judge(self, outcome: CallOutcome, cls: Classification) -> None:
        """One outcome of the fleet's stream (any member's PBX) into the windows; never raises."""
        try:
            pipeline = self.pipeline
            assert pipeline is not None
            pipeline.process(outcome, cls)
            self._flush_due(pipeline, self.clock.now())
        except Exception:
            self.sink_errors += 1
            log.exception("failed to judge a fleet outcome of connector %s (call %s)", outcome.connector,
                          outcome.call_id)

    def _flush_due(self, pipeline: Pipeline, now: float) -> None:
        due = pipeline.next_due()
        if due is not None and due <= now:  # group_wait 0 means now, not at the next tick
            self._commit(lambda: pipeline.flush_due(now, TICK_SLICE_S))

    def _commit(self, work: Callable[[], Any]) -> Any:
        """What ``work`` writes from the loop (groups, outbox rows) in one transaction, begun at its first
        write, after everything the store writer has queued (``_writer_caught_up``): on disk, a
        notification never exists without the outcomes and alert states before it. Work that writes
        nothing (most ticks: alert states go to the writer) never waits. When the store cannot be
        written the work is done all the same (alerts are judged in memory, notifications sent from
        memory)."""
        assert self.store is not None
        return self.store.write_through(work)

    def _writer_caught_up(self) -> None:
        """Before the loop's connection begins a transaction: let the store writer write what is queued.
        Only the loop thread queues, so after this the writer is idle and holds no lock."""
        writer = self.writer
        if writer is not None and writer.pending:
            writer.wait_written(OUTCOMES_WRITTEN_WAIT_S)

    def _save_alert_states(self, rows: list[Any]) -> None:
        """Changed alert states: to the store writer (behind the outcomes they rest on), or straight to the
        store once the writer is gone (shutdown) or dead."""
        writer = self.writer
        if writer is not None and writer.accepting:
            writer.save_alert_states([row.encoded() for row in rows])  # the JSON here, in the tick's budget
            return
        assert self.store is not None
        self.store.save_alert_states(rows)

    def _from_writer(self, callback: Callable[..., None], *args: Any) -> None:
        """The store writer's thread reports to the loop thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    def _store_write_failed(self, exc: BaseException) -> None:
        """The store refused a write: one ERROR and one self-alert per episode, not one per write."""
        now = self.clock.now()
        self.metrics.store_errors.inc()
        failure = self.store_failure
        unstored = self.writer.pending if self.writer else 0
        if failure is not None:
            failure["failed_writes"] += 1
            failure["failed_at"] = now
            failure["most_unstored"] = max(failure["most_unstored"], unstored)
            return
        error = f"{type(exc).__name__}: {exc}"[:300]  # SQLite's and the OS's words, never a stored row
        self.store_failure = {"error": error, "since": now, "failed_at": now, "failed_writes": 1,
                              "most_unstored": unstored, "dropped_before": self.writer.dropped if self.writer else 0}
        log.error("store %s cannot be written (%s): alerts are judged in memory and sent without the durable "
                  "outbox until it can; one message per episode", self.config.store, error)
        if self.selfhealth is not None:
            self.selfhealth.store_failing(str(self.config.store), error, now)

    def _store_write_ok(self) -> None:
        """A commit that wrote something. A full disk still takes the writes that fit in free pages, so the
        episode ends only once writes have succeeded for ``STORE_RECOVERED_AFTER_S`` without a failure."""
        failure = self.store_failure
        if failure is None:
            return
        now = self.clock.now()
        if now - failure["failed_at"] < STORE_RECOVERED_AFTER_S:
            return
        self.store_failure = None
        let_go = (self.writer.dropped if self.writer else 0) - failure["dropped_before"]
        log.warning("store %s is written again after %.0f s (%d failed write(s)); up to %d outcome(s) and alert "
                    "state(s) waited in memory meanwhile, %d still to write, %d let go", self.config.store,
                    now - failure["since"], failure["failed_writes"], failure["most_unstored"],
                    self.writer.pending if self.writer else 0, let_go)
        if self.selfhealth is not None:
            self.selfhealth.store_ok(str(self.config.store), now)

    def _emit(self, notification: Notification) -> None:
        assert self.outbox is not None
        queue = self.action_queue
        if queue is not None and queue.notes:  # what the actions did for each number, in its alert
            for alert in notification.alerts:
                number = (alert.get("scope") or {}).get("caller_number")
                lines = queue.lines_for(number) if number else []
                if lines:
                    alert["actions"] = lines
        self.outbox.enqueue(notification)

    def _transition(self, alert: Alert, snapshot: AlertDict) -> None:
        threshold, state = str(snapshot.get("threshold")), str(snapshot.get("state"))
        self.metrics.alert_transitions.labels(threshold, state).inc()
        if self.actions.actions:
            self._report_actions(self.actions.on_transition(dict(snapshot), self.clock.now()))
        if alert.fired_at is not None and self.writer is not None and self.writer.accepting:
            # the episode outlives the alert's state row (deleted once its resolve is announced)
            self.writer.record_alert(alert.fingerprint, threshold, alert.labels.get("severity"), dict(alert.scope),
                                     alert.fired_at, alert.resolved_at if state == "resolved" else None)
        if self._transition_lines.take(time.monotonic()):
            scope = snapshot.get("scope") or {}
            log.info("alert %s: %s on %s: %s of %s calls match", state, threshold,
                     ", ".join(f"{k}={v}" for k, v in scope.items()) or "-", snapshot.get("count", "-"),
                     snapshot.get("attempts", "-"),
                     extra=fields(**{**scope, "threshold": threshold, "fingerprint": alert.fingerprint}))
        if self._on_transition_hook is not None:
            self._on_transition_hook(alert, snapshot)

    def _report_actions(self, decisions: list[ActionDecision]) -> None:
        """Decisions and the guardrail states they changed go to the store together (the audit, the queue of
        what runs: ``blockradar actions history``); the queue looks once they are committed."""
        dry = {a.name: a.dry_run for a in self.actions.actions}
        # a row is kept while its alert's episode lasts (alert_fired_at): a restart must not decide it again
        states = [{"action": r.action, "caller_number": r.state.caller_number,
                   "empty": r.state.empty() and r.alert_fired_at is None,
                   "resting_since": r.state.resting_since, "restore_due": r.state.restore_due,
                   "restored_at": r.state.restored_at, "waiting": r.state.waiting, "context": r.context,
                   "alert_fired_at": r.alert_fired_at, "dry_run": dry.get(r.action, True)}
                  for r in self.actions.changed_states()]
        if not decisions and not states:
            return
        rows = [{**d.to_dict(), "context": d.context} for d in decisions]
        queue = self.action_queue
        if self.writer is not None and self.writer.accepting:
            wake = (lambda: self._from_writer(queue.wake)) if queue is not None and decisions else None
            self.writer.log_actions(rows, states, after=wake)
        elif self.store is not None:
            with contextlib.suppress(*STORE_ERRORS):  # reported by the store
                self.store.log_actions(rows, states)
        if queue is not None:
            queue.note(decisions)
        for decision in decisions:
            self.metrics.action_decisions.labels(decision.action, decision.phase, str(decision.dry_run).lower()).inc()
            if self._action_lines.take(time.monotonic()):
                what = decision.reason if decision.phase == "held" else " ".join(decision.command or [])
                log.info("action %s%s: %s %s: %s", decision.action, " (dry run)" if decision.dry_run else "",
                         decision.phase, decision.caller_number, what,
                         extra=fields(action=decision.action, phase=decision.phase,
                                      caller_number=decision.caller_number, threshold=decision.threshold))

    def _connector_down(self, name: str) -> None:
        if self.pipeline is not None:
            self.pipeline.connector_down(name, self.clock.now())

    def _connector_up(self, name: str) -> None:
        if self.pipeline is not None:
            self.pipeline.connector_up(name, self.clock.now())

    # ---------------------------------------------------------------------------------- timers

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                now = self.tick(TICK_SLICE_S)
                while self._behind():
                    await asyncio.sleep(0)  # let the PBX reads and probes waiting run, then go on
                    self._tick_slice(now)
            except Exception:
                log.exception("tick failed")

    def tick(self, budget_s: float | None = None) -> float:
        """Once a second: link health, due alerts and groups, the hourly prune (queued for the writer). With
        ``budget_s`` it does at most about that much of the alert work (``_behind`` says when more waits); returns
        the time it ticked at, for the slices that finish it."""
        now = self.clock.now()
        pipeline = self.pipeline
        assert pipeline is not None and self.selfhealth is not None and self.store is not None
        healths = self.healths()
        self.selfhealth.observe(healths, now)
        for health in healths:
            if health.last_event_at is not None:
                pipeline.lifecycle.link_alive(health.name, health.last_event_at)
        if self.hep_join is not None:
            self.hep_join.tick(now)  # outcomes that waited long enough go on as they are
        fleet = self.fleet
        if fleet is not None and not fleet.shared:
            self._fleet_mode(False, fleet.error or "unreachable")  # pages once it lasted ``fleet.lease``
        self._commit(lambda: pipeline.tick(now, budget_s))
        self._manage_collector()
        if self.actions.actions:
            if now - self._holds_loaded_at >= HOLDS_RELOAD_S:
                self._holds_loaded_at = now
                with contextlib.suppress(*STORE_ERRORS):  # read on the loop's connection: small tables
                    self.actions.set_holds({h["caller_number"] for h in self.store.held_numbers()})
                    self._undo_requests(now)
            self._report_actions(self.actions.tick(now))
        held = self._transition_lines.held_back(time.monotonic())
        if held:
            log.info("%d more alert transition(s) in the last %.0f s, not logged one by one (blockradar report and "
                     "/metrics have them)", held, self._transition_lines.period_s)
        failure = self.store_failure
        if failure is not None and now - failure["failed_at"] >= STORE_RECOVERED_AFTER_S:
            with contextlib.suppress(*STORE_ERRORS):  # a failure is reported by the store
                self.store.probe_write()  # nothing else may be writing: does the store take a page again?
        if now - self._last_prune >= PRUNE_EVERY_S and self.writer is not None:
            self._last_prune = now  # on the writer's thread, in chunks, behind the outcomes queued
            self.writer.prune(now - self.config.retention, now - OUTBOX_KEPT_S)
        if budget_s is None:
            while self._behind():
                self._tick_slice(now)
        return now

    def _undo_requests(self, now: float) -> None:
        """``blockradar actions undo ID``: the number the apply rested goes back now."""
        assert self.store is not None
        for request in self.store.action_requests():
            why = f"undo of #{request['log_id']} by {request['author']}" + (
                f": {request['comment']}" if request["comment"] else "")
            decisions = self.actions.undo(request["action"], request["caller_number"], now, why)
            self._report_actions(decisions)
            result = "restoring" if decisions else "nothing to undo: the number does not rest"
            self.store.action_request_done(request["id"], result, now)
            log.info("action %s: %s for %s: %s", request["action"], why, request["caller_number"], result,
                     extra=fields(action=request["action"], caller_number=request["caller_number"]))

    def _manage_collector(self) -> None:
        """Every ``GC_THAW_EVERY_S`` give everything frozen back to the cyclic collector once (see
        ``_freeze_after_full_pass``), so cycles that became garbage after being frozen (a closed
        connection's objects) are freed, at the price of one full pass."""
        mono = time.monotonic()
        if mono - self._thawed_at >= GC_THAW_EVERY_S:
            gc.unfreeze()
            self._thawed_at = mono

    @staticmethod
    def _freeze_after_full_pass(phase: str, info: dict[str, Any]) -> None:
        """What survived a full pass of the collector is frozen, so the next full pass walks only what is
        newer: a flood of new numbers grows the heap, and unfrozen each full pass walks all of it (180 ms
        at 100k new numbers in the bench, growing with every pass)."""
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()

    def _behind(self) -> bool:
        return self.pipeline is not None and self.pipeline.behind

    def _tick_slice(self, now: float) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        self._commit(lambda: pipeline.tick(now, TICK_SLICE_S))

    # ---------------------------------------------------------------------------------- reload

    def reload(self) -> bool:
        """Re-read rules, thresholds and alerting from the config file; keep the old ones on error."""
        now = self.clock.now()
        self.last_reload["at"] = now
        assert self.selfhealth is not None and self.store is not None
        for connector in self.connectors:
            connector.retry_now()
        try:
            loaded = load_config(self.loaded.path)
            ruleset = load_ruleset(loaded.config.rules)
            thresholds = loaded.config.effective_thresholds()
        except (ConfigError, RuleSetError, RecursionError, MemoryError, ValueError) as exc:
            # anything a hostile or broken file raises is a failed reload, never a crash or an "ok"
            error = str(exc) if isinstance(exc, ConfigError | RuleSetError) else (
                f"{self.loaded.path}: reload failed: {type(exc).__name__}")
            self._reload_failed(error, now)
            return False
        for key in ("notifiers", "store", "http", "numbers", "actions", "hep", "fleet"):
            if getattr(loaded.config, key) != getattr(self.config, key):
                log.warning("reload: %s changed; that takes a restart (rules, thresholds and alerting reloaded)",
                            key)
        self._reload_connectors(loaded.config.connectors)
        old = self.pipeline
        assert old is not None
        self._commit(old.lifecycle.flush_state)  # the new pipeline rebuilds from what is on disk
        config = self.config.model_copy(update={"rules": loaded.config.rules, "thresholds": loaded.config.thresholds,
                                                "alerting": loaded.config.alerting})
        previous, self.config = self.config, config  # the new alerting settings for the pipeline built now
        pipeline = self._build_pipeline(ruleset, thresholds, self.store)
        pipeline.lifecycle.adopt_links(old.lifecycle)  # a link down stays down: nothing resolves on it
        history_s = max((t.window for t in thresholds), default=3600.0)
        if self.fleet is not None:
            # the windows hold the fleet's calls: rebuilt from the shared stream, swapped in once read (a reload
            # still reading is replaced by this one)
            if self._fleet_reload is not None and not self._fleet_reload.done():
                self._fleet_reload.cancel()
            self.config = previous  # until the new windows are read and swapped in
            task = asyncio.get_running_loop().create_task(
                self._swap_in_from_fleet(pipeline, ruleset, history_s, config), name="fleet-reload")
            self._fleet_reload = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return True
        pipeline.rebuild(self.store.iter_outcomes(now - history_s), now)
        self._swap_in(pipeline, ruleset)
        return True

    async def _swap_in_from_fleet(self, pipeline: Pipeline, ruleset: RuleSet, history_s: float,
                                  config: DaemonConfig) -> None:
        """A reload in a fleet: the new windows are rebuilt from what the fleet's reader judged so far (this
        daemon's store holds only its own PBX's calls; the entries keep the verdict they were published
        with). When Redis is away, or is lost meanwhile (calls were then counted alone, into the old windows
        only), the old rules and windows keep running and the reload says it failed: reload again."""
        fleet = self.fleet
        assert fleet is not None and self.store is not None and self.pipeline is not None
        outages = fleet.stats["outages"]
        pipeline.lifecycle.restore()
        problem = None
        if not fleet.shared:
            problem = "the fleet's Redis is unreachable"
        else:
            try:
                async for batch in fleet.read_so_far():
                    pipeline.process_many(batch)
                    await asyncio.sleep(0)  # the old windows go on judging meanwhile
            except asyncio.CancelledError:
                raise  # a newer reload took over
            except Exception as exc:
                problem = f"the fleet's stream could not be read ({type(exc).__name__})"
            if problem is None and (fleet.stats["outages"] != outages or not fleet.shared):
                problem = "the fleet's Redis was lost while the windows were rebuilt"
        if problem is not None:
            self._reload_failed(f"{self.loaded.path}: reload not applied: {problem}", self.clock.now())
            return
        self.config = config
        fleet.update(history_s, self._settings_digest())
        old = self.pipeline
        pipeline.lifecycle.adopt_links(old.lifecycle)
        pipeline.lifecycle.adopt_announced(old.lifecycle)  # what the old one told while the stream was read
        pipeline.finish_rebuild(self.clock.now())
        self._swap_in(pipeline, ruleset)

    def _reload_failed(self, error: str, now: float) -> None:
        assert self.selfhealth is not None
        self.last_reload.update(ok=False, error=error)
        self.metrics.reloads.labels("failed").inc()
        log.error("reload failed; the previous rules and thresholds keep running:\n%s", error)
        self.selfhealth.reload_failed(error.splitlines()[0] if error else "reload failed", now)

    def _swap_in(self, pipeline: Pipeline, ruleset: RuleSet) -> None:
        assert self.selfhealth is not None
        now = self.clock.now()
        thresholds = pipeline.thresholds
        self.pipeline, self.ruleset = pipeline, ruleset
        self.metrics.rules_loaded.set(len(ruleset.rules))
        self.metrics.reloads.labels("ok").inc()
        self.last_reload.update(ok=True, error=None)
        self.selfhealth.reload_ok(now)
        log.info("reloaded: %d rules, %d thresholds", len(ruleset.rules), len(thresholds))

    def _reload_connectors(self, specs: Sequence[Any]) -> None:
        """Restart the connectors whose settings changed; adding or removing one takes a restart."""
        current = {spec.name: spec for spec in self.config.connectors}
        wanted = {spec.name: spec for spec in specs}
        if set(current) != set(wanted):
            log.warning("reload: connectors added or removed (%s); that takes a restart",
                        ", ".join(sorted(set(current) ^ set(wanted))))
        changed = [wanted[name] for name in current if name in wanted and wanted[name] != current[name]]
        if not changed:
            return
        self.config = self.config.model_copy(update={"connectors": [
            wanted.get(spec.name, spec) for spec in self.config.connectors]})
        for spec in changed:
            log.info("reload: connector %s has new settings; reconnecting with them", spec.name)
            task = asyncio.get_running_loop().create_task(self._replace_connector(spec),
                                                          name=f"replace-connector:{spec.name}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replace_connector(self, spec: Any) -> None:
        for index, connector in enumerate(self.connectors):
            if connector.name == spec.name:
                await connector.close()
                fresh = make_connector(spec, self._sink, self.clock, self.config.numbers.default_region)
                self.connectors[index] = fresh
                await fresh.start()
                return

    # ----------------------------------------------------------------------------------- stop

    async def stop(self, flush_s: float = SHUTDOWN_FLUSH_S) -> bool:
        """Stop connectors, write buffered outcomes, flush the outbox (bounded); True when drained."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.loop_lag.stop()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._freeze_after_full_pass)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        results = await asyncio.gather(*(c.close() for c in self.connectors), return_exceptions=True)
        for connector, result in zip(self.connectors, results, strict=True):
            if isinstance(result, Exception):
                log.warning("connector %s did not close cleanly: %s", connector.name, result)
        if self._hep_transport is not None:
            self._hep_transport.close()
            listener = self._hep_transport.get_protocol()
            if getattr(listener, "upstream", None) is not None:
                listener.upstream.close()
        if self.hep_join is not None:
            self.hep_join.flush()  # the outcomes still waiting for their response go on as they are
        if self.pipeline is not None and self.store is not None:
            self._commit(self.pipeline.lifecycle.flush_state)
        if self.action_queue is not None:
            if not await self.action_queue.drain(min(flush_s, 5.0)):
                log.warning("actions: %d queued run(s) stay for the next start", self.action_queue.depth())
            await self.action_queue.stop()
        drained = True
        fleet = self.fleet
        if fleet is not None and fleet.shared and not fleet.is_leader():
            flush_s = min(flush_s, STANDBY_FLUSH_S)  # its rows are the lease holder's to send
        if self.outbox is not None:
            drained = await self.outbox.drain(flush_s)
            if not drained:
                log.warning("outbox not empty after %.0f s: %d notification(s) stay queued for the next start",
                            flush_s, self.outbox.depth())
            await self.outbox.stop()
        if fleet is not None:
            await fleet.stop()  # publishes what is queued, hands the notifier lease over
        if self.http is not None:
            await self.http.close()
        if self.writer is not None:
            self.writer.close(SHUTDOWN_FLUSH_S)
        if self.store is not None:
            self.store.close()
        if self._store_lock is not None:
            self._store_lock.release()
            self._store_lock = None
        return drained

    # ---------------------------------------------------------------------------------- health

    def healths(self) -> list[ConnectorHealth]:
        return [c.health() for c in self.connectors]

    def _outbox_depth(self) -> int:
        try:
            return self.outbox.depth() if self.outbox is not None else 0
        except Exception:
            return -1

    def status_live(self, max_alerts: int = 100) -> dict[str, Any]:
        """The status page's live part: connectors, the newest firing alerts (at most ``max_alerts``, the
        rest counted) and the active silences."""
        _, report = self.health_report()
        firing: list[Alert] = []
        if self.pipeline is not None:
            firing = [alert for group in self.pipeline.groups for th in group.thresholds
                      for alert in th.active.values() if alert.state == "firing"]
        firing.sort(key=lambda a: a.fired_at or 0.0, reverse=True)
        alerts = [{"name": a.threshold.name if a.threshold else a.labels.get("threshold", ""),
                   "severity": a.labels.get("severity"), "scope": dict(a.scope), "count": a.matching,
                   "attempts": a.attempts, "fired_at": a.fired_at} for a in firing[:max_alerts]]
        alerts += [{"name": s["alert"], "severity": "critical", "scope": {"subject": s["subject"]},
                    "detail": s["detail"]} for s in report.get("self_alerts", [])]
        now = self.clock.now()
        silences = [s.to_dict() for s in (self.pipeline.lifecycle.silences if self.pipeline else ()) if s.active(now)]
        return {"connectors": report["connectors"], "alerts": alerts,
                "alerts_more": max(0, len(firing) - max_alerts), "silences": silences}

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        now = time.time()
        connectors = []
        ok = True
        for health in self.healths():
            up = health.state == LinkState.CONNECTED
            ok = ok and up
            connectors.append({
                "name": health.name, "pbx": health.pbx, "state": str(health.state), "up": up,
                "state_since": health.state_since,
                "last_event_age_s": None if health.last_event_at is None else round(now - health.last_event_at, 3),
                "events": health.events, "outcomes": health.outcomes, "reconnects": health.reconnects,
                "parse_errors": health.parse_errors, "dropped": health.dropped,
                "expired_calls": health.expired_calls, "clock_skewed": health.clock_skewed,
                "last_error": health.last_error, "last_error_at": health.last_error_at,
                "auth_failing": health.auth_failing,
                # the hand-off to the pipeline (ESL): outcomes waiting, the most that waited, and how often
                # the reader was held back for room (backpressure, never taken for a hung PBX)
                **{k: health.extra[k] for k in ("pending", "pending_high_water", "held_back") if k in health.extra},
            })
        report = {
            "connectors": connectors,
            "outbox_depth": self._outbox_depth(),
            "rules": {"files": list(self.ruleset.files) if self.ruleset else [],
                      "count": len(self.ruleset.rules) if self.ruleset else 0},
            "last_reload": self.last_reload,
            "self_alerts": self.selfhealth.active() if self.selfhealth else [],
            "sink_errors": self.sink_errors,
            **({"hep": {"listen": self.config.hep.listen if self.config.hep else None,
                        **self.hep_reader.stats.to_dict(), **dataclasses.asdict(self.hep_join.stats),
                        "pending": self.hep_join.pending}}
               if self.hep_reader is not None and self.hep_join is not None else {}),
            **({"fleet": {**self.fleet.report(),
                          "gate": dict(self.outbox.gate.counts) if self.outbox and self.outbox.gate else {}}}
               if self.fleet is not None else {}),
            "store": {"path": str(self.config.store), "ok": self.store_failure is None,
                      **(self.store_failure or {}), "unstored_outcomes": self.writer.pending if self.writer else 0,
                      "unstored_dropped": self.writer.dropped if self.writer else 0,
                      "writer_alive": bool(self.writer and self.writer.alive)},
        }
        return ok and self.store_failure is None and bool(self.writer and self.writer.alive), report
