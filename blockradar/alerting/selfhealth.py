"""Self-alerts: the daemon pages about itself through the same outbox and notifiers.

Seven conditions, each firing once and resolving once, like any alert:

* ``pbx-link-down``: a connector has not been connected for ``link_down_after``;
* ``pbx-auth-failing``: a connector's credentials are rejected (wrong secret, ACL) for
  ``auth_failing_after``. One page per cause: while a connector's login is refused, its link-down
  page is held (it neither fires nor resolves), so a wrong password pages once;
* ``config-reload-failed``: a SIGHUP reload found a bad rule or config file (the old rules keep
  running) until a later reload succeeds;
* ``outcomes-dropped``: a connector dropped call outcomes at its full hand-off to the pipeline (a flood
  the daemon could not keep up with, even after holding the PBX back); resolves after ``DROPS_QUIET_S``
  without a new drop;
* ``action-failing``: an action's run failed for good, or keeps failing (``ACTION_RETRIES_PAGED`` tries);
  a number may be out of rotation that should be back, or the other way round. Resolves with the
  action's next run that succeeds;
* ``store-failing``: the store cannot be written (disk full, read-only, damaged); resolves with the
  first write that succeeds. The daemon delivers this one straight from memory (the outbox lives in
  the store it cannot write).
* ``fleet-alone``: a fleet member cannot reach the fleet's Redis for ``fleet.lease``: it alerts and notifies
  on its own PBX's calls alone until Redis answers again (resolves then).

It also tells the alert lifecycle when a connector goes down or comes back, so alerts built on that
connector's data are held (neither resolved nor repeated) while it is blind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from blockradar.alerting.notifiers.base import AlertDict, Notification
from blockradar.connectors.base import ConnectorHealth, LinkState
from blockradar.durations import format_duration
from blockradar.outcome import iso

log = logging.getLogger(__name__)

WHAT_TO_DO = {
    "pbx-link-down": "Check that the PBX is running and that its AMI/ESL port accepts blockradar "
                     "(manager.conf / event_socket.conf.xml, firewall, ACL). Blocks are not being watched.",
    "pbx-auth-failing": "The PBX rejects blockradar's credentials: check the username/secret (AMI) or the "
                        "password and ACL (ESL) in both configs, then reload blockradar (SIGHUP) to retry at "
                        "once; meanwhile it retries every auth_backoff. Blocks are not being watched.",
    "config-reload-failed": "Fix the file named in the log and reload again (SIGHUP); the previous rules and "
                            "thresholds keep running until then.",
    "outcomes-dropped": "blockradar dropped calls it could not process in time (see blockradar_dropped_events "
                        "and blockradar_loop_lag_seconds in /metrics): give it more CPU, or narrow what the PBX "
                        "sends (ESL filters, AMI read= classes). Alerts may miss the dropped calls meanwhile.",
    "action-failing": "An action could not change the dialer (see the detail and blockradar actions history): "
                      "fix the cause (credentials, the dialer's API, the PBX, the script); a number may be out of "
                      "rotation that should be back, or still dialling while blocked. blockradar actions undo ID "
                      "and hold NUMBER act by hand.",
    "store-failing": "blockradar cannot write its store (disk full, read-only file system or a damaged file): free "
                     "space or fix the mount. Meanwhile alerts are judged in memory but neither kept nor "
                     "sent through the durable outbox; they are written and sent once a write succeeds.",
    "fleet-alone": "This daemon cannot reach the fleet's Redis (see the detail): it alerts on its own PBX's calls "
                   "alone (a number dialled from several PBXes may not reach its threshold here) and sends its own "
                   "notifications (another daemon may send the same). Check the Redis server, its Sentinels and "
                   "the network; when Redis answers the daemon shares what it counted and told meanwhile.",
}

DROPS_QUIET_S = 300.0  # outcomes-dropped resolves after this long without a new drop


ACTION_RETRIES_PAGED = 3  # an action retried this many times in a row pages, before it gives up
_SUBJECT = {"config-reload-failed": "config", "store-failing": "store", "action-failing": "action",
            "fleet-alone": "fleet"}  # else a connector


@dataclass(slots=True)
class _Condition:
    since: float | None = None
    firing: bool = False
    detail: str = ""
    fired_at: float | None = None


class SelfHealth:
    def __init__(self, link_down_after: float, auth_failing_after: float, emit: Callable[[Notification], None],
                 *, on_down: Callable[[str], None] | None = None, on_up: Callable[[str], None] | None = None) -> None:
        self.link_down_after = link_down_after
        self.auth_failing_after = auth_failing_after
        self._emit = emit
        self._on_down = on_down
        self._on_up = on_up
        self._conditions: dict[tuple[str, str], _Condition] = {}
        self._connected: dict[str, bool] = {}
        self._dropped: dict[str, tuple[int, float]] = {}  # connector -> (drops seen, when the last one was seen)

    def active(self) -> list[dict[str, str]]:
        return [{"alert": kind, "subject": subject, "detail": c.detail}
                for (kind, subject), c in self._conditions.items() if c.firing]

    def observe(self, healths: Iterable[ConnectorHealth], now: float) -> None:
        for health in healths:
            connected = health.state == LinkState.CONNECTED
            if self._connected.get(health.name) != connected:
                self._connected[health.name] = connected
                callback = self._on_up if connected else self._on_down
                if callback is not None:
                    callback(health.name)
            detail = f"{health.pbx} connector {health.name} is {health.state}"
            if health.last_error:
                detail += f": {health.last_error}"
            refused = health.auth_failing or health.state == LinkState.AUTH_FAILED
            self._judge("pbx-auth-failing", health.name, refused and not connected, self.auth_failing_after, now,
                        detail)
            self._judge("pbx-link-down", health.name, not connected, self.link_down_after, now, detail,
                        held=refused)
            self._judge_drops(health, now)

    def _judge_drops(self, health: ConnectorHealth, now: float) -> None:
        seen, last_at = self._dropped.get(health.name, (0, float("-inf")))
        if health.dropped > seen:
            self._dropped[health.name] = (health.dropped, now)
            last_at = now
        elif health.dropped < seen:  # a new connector object (reload): counts start again
            self._dropped[health.name] = (health.dropped, last_at)
        detail = (f"{health.pbx} connector {health.name} dropped {health.dropped} call outcome(s) it could not "
                  f"hand to the pipeline in time")
        self._judge("outcomes-dropped", health.name, now - last_at < DROPS_QUIET_S, 0.0, now, detail)

    def store_failing(self, store: str, error: str, now: float) -> None:
        self._judge("store-failing", store, True, 0.0, now, error)

    def store_ok(self, store: str, now: float) -> None:
        self._judge("store-failing", store, False, 0.0, now, "")

    def action_failing(self, action: str, detail: str, now: float) -> None:
        self._judge("action-failing", action, True, 0.0, now, detail)

    def action_ok(self, action: str, now: float) -> None:
        self._judge("action-failing", action, False, 0.0, now, "")

    def fleet_alone(self, member: str, detail: str, after: float, now: float) -> None:
        self._judge("fleet-alone", member, True, after, now, detail)

    def fleet_ok(self, member: str, now: float) -> None:
        self._judge("fleet-alone", member, False, 0.0, now, "")

    def reload_failed(self, error: str, now: float) -> None:
        self._judge("config-reload-failed", "config", True, 0.0, now, error)

    def reload_ok(self, now: float) -> None:
        self._judge("config-reload-failed", "config", False, 0.0, now, "")

    def _judge(self, kind: str, subject: str, bad: bool, after: float, now: float, detail: str, *,
               held: bool = False) -> None:
        """``held``: another condition of the same subject is the cause being paged; this one neither
        fires nor resolves meanwhile (its timer keeps running)."""
        condition = self._conditions.setdefault((kind, subject), _Condition())
        if bad:
            if condition.since is None:
                condition.since = now
            condition.detail = detail
            if not condition.firing and not held and now - condition.since >= after:
                condition.firing = True
                condition.fired_at = now
                log.error("self-alert %s on %s: %s", kind, subject, detail)
                self._emit(self._notification(kind, subject, "firing", condition, now))
        else:
            if condition.firing:
                condition.firing = False
                log.warning("self-alert %s on %s resolved", kind, subject)
                self._emit(self._notification(kind, subject, "resolved", condition, now))
            condition.since = None

    @staticmethod
    def _notification(kind: str, subject: str, state: str, condition: _Condition, now: float) -> Notification:
        scope = {_SUBJECT.get(kind, "connector"): subject}
        resolved = state == "resolved"
        if resolved:
            lasted = format_duration(round(now - (condition.since or now)))
            detail = {
                "config-reload-failed": f"{subject}: fixed after {lasted}",
                "outcomes-dropped": f"connector {subject}: no call dropped for {format_duration(DROPS_QUIET_S)}",
                "store-failing": f"the store is written again, after {lasted}",
                "action-failing": f"action {subject} ran again, after {lasted}",
                "fleet-alone": f"the fleet's Redis answers again, after {lasted}; what was counted alone is shared",
            }.get(kind, f"connector {subject} is connected again, after {lasted}")
        else:
            detail = condition.detail
        alert: AlertDict = {
            "fingerprint": f"self/{kind}/{subject}",
            "threshold": f"blockradar-{kind}",
            "kind": "self",
            "description": detail,
            "detail": detail,
            "severity": "warning" if kind == "config-reload-failed" else "critical",
            "state": state,
            "change": state if resolved else "new",
            "labels": {"alertname": kind, **scope},
            "scope": scope,
            "started_at": iso(condition.since),
            "fired_at": iso(condition.fired_at or condition.since),
            "resolved_at": iso(now) if resolved else None,
            "what_to_do": {} if resolved else {kind: WHAT_TO_DO[kind]},
        }
        return Notification(group_key=f"self/{kind}/{subject}", group_labels={"alertname": kind, **scope},
                            status=state, alerts=[alert], created_at=now)
