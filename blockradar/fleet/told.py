"""The fleet's notification log, and the gate every outbox row passes before it is sent.

Every daemon of a fleet reads the same shared outcomes, so every daemon's alert lifecycle reaches the
same transitions and queues the same notifications in its own durable outbox. Only one of them, the
holder of the notifier lease, sends; the log in Redis says which transitions each notifier was told:

    <prefix>:told:<notifier>:<alert fingerprint> = "<state>|<at>|<member>"   (expires after ``TOLD_TTL_S``)

where ``at`` is the transition's own time (a firing: when the alert started; a resolve: when it
resolved), the same on every daemon because it comes from the shared event times.

Before a row is sent, ``NotificationGate.check`` compares its transitions (alerts marked ``new``, and
resolves) with the log:

* all already told (by anyone): the row is done (``told``), never sent;
* some untold, and this daemon holds the lease: sent, with what was told already left out (a ``new``
  alert told by another daemon is shown as ``firing``, a resolve told already is dropped);
* some untold, and another daemon holds the lease: the row waits; the holder's send will be logged and
  the row then finishes as told. When the holder dies, the lease moves here within ``fleet.lease``
  and the waiting rows go out: nothing the dead daemon never told is lost.
* a row with no transition (a repeat of a firing group): sent by the holder only.

``delivered`` logs a row's transitions once its notifier took it. Self-alerts (``self/...`` groups:
this daemon's own PBX links, store and reload) and test messages are this daemon's to send and never
pass the gate. While Redis is unreachable every daemon sends on its own (a missed page is worse than
a repeated one) and keeps what it told, to log when Redis is back, so nothing is announced again.
"""

from __future__ import annotations

import logging
from typing import Protocol

from blockradar.alerting.notifiers.base import AlertDict, Notification
from blockradar.outcome import from_iso

log = logging.getLogger(__name__)

SEND = "send"
TOLD = "told"
WAIT = "wait"

TOLD_TTL_S = 7 * 86400.0  # as long as the outbox keeps its rows: a firing alert's entry is renewed by each resolve
# the transition times of two daemons can differ by a tick (a resolve is judged on each daemon's clock)
SKEW_S = 5.0

# fingerprint, "firing" | "resolved", at, and the episode's start (a firing's ``at``; a resolve's alert's start)
Transition = tuple[str, str, float, float]


class FleetView(Protocol):
    """What the gate needs of the fleet node."""

    member: str

    @property
    def shared(self) -> bool: ...

    @property
    def alone(self) -> bool: ...

    def is_leader(self) -> bool: ...

    async def told_entries(self, notifier: str, fingerprints: list[str]) -> list[bytes | None]: ...

    async def record_told(self, notifier: str, entries: list[tuple[str, str]]) -> None: ...


def transitions(notification: Notification) -> list[Transition]:
    """The alert transitions a notification tells: each ``new`` firing alert and each resolve."""
    out: list[Transition] = []
    for alert in notification.alerts:
        fp = alert.get("fingerprint")
        if not fp:
            continue
        started = from_iso(alert.get("started_at"))
        if started is None:
            started = notification.created_at
        if alert.get("state") == "resolved":
            at = from_iso(alert.get("resolved_at"))
            out.append((fp, "resolved", at if at is not None else notification.created_at, started))
        elif alert.get("change") == "new":
            out.append((fp, "firing", started, started))
    return out


def entry_text(state: str, at: float, member: str) -> str:
    return f"{state}|{at:.3f}|{member}"


def parse_entry(raw: bytes | str | None) -> tuple[str, float, str] | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    state, _, rest = text.partition("|")
    at, _, member = rest.partition("|")
    try:
        return state, float(at), member
    except ValueError:
        return None


def covers(entry: tuple[str, float, str] | None, transition: Transition) -> bool:
    """The logged entry tells this transition or a later one (so this one is no news any more).

    Firings are compared by their start (event time: the same on every daemon). A resolve is told once
    any resolve of its episode was: when an alert resolves is judged on each daemon's own clock and
    link history (a daemon whose PBX link came back lately waits a window longer), so two daemons may
    resolve one episode minutes apart."""
    if entry is None:
        return False
    state, at, _ = entry
    _, wanted, wanted_at, episode = transition
    if state == wanted:
        return at >= (episode if wanted == "resolved" else wanted_at) - SKEW_S
    return at > wanted_at  # a later transition of the other kind was told: this one is stale


def without_told(notification: Notification, told: set[str]) -> Notification | None:
    """The notification minus what ``told`` fingerprints already said: their ``new`` becomes ``firing``,
    their resolves go; None when nothing is left to say."""
    alerts: list[AlertDict] = []
    news = 0
    for alert in notification.alerts:
        fp = alert.get("fingerprint")
        if fp in told:
            if alert.get("state") == "resolved":
                continue
            if alert.get("change") == "new":
                alert = AlertDict(**alert)  # type: ignore[typeddict-item]
                alert["change"] = "firing"
        elif alert.get("state") == "resolved" or alert.get("change") == "new":
            news += 1
        alerts.append(alert)
    return notification.with_alerts(alerts) if news else None


def own(notification: Notification) -> bool:
    """This daemon's own message: a self-alert or a test; never gated."""
    return notification.test or notification.group_key.startswith("self/")


class NotificationGate:
    """Decides, per outbox row, whether this daemon sends it (see the module docstring)."""

    def __init__(self, fleet: FleetView) -> None:
        self.fleet = fleet
        self.counts = {SEND: 0, TOLD: 0, WAIT: 0}

    async def check(self, notifier: str, notification: Notification) -> tuple[str, Notification | None]:
        verdict, out = await self._check(notifier, notification)
        self.counts[verdict] += 1
        return verdict, out

    async def _check(self, notifier: str, notification: Notification) -> tuple[str, Notification | None]:
        fleet = self.fleet
        if own(notification) or fleet.alone:
            return SEND, notification  # alone: every daemon tells what it sees
        if not fleet.shared:
            return WAIT, None  # starting or stopping: kept for the holder, or for this daemon's next start
        wanted = transitions(notification)
        if not wanted:  # a repeat: the lease holder repeats, the others let it go
            return (SEND, notification) if fleet.is_leader() else (TOLD, None)
        raw = await fleet.told_entries(notifier, [t[0] for t in wanted])
        told = {t[0] for t, entry in zip(wanted, raw, strict=True) if covers(parse_entry(entry), t)}
        if len(told) == len(wanted):
            return TOLD, None
        if not fleet.is_leader():
            return WAIT, None
        if not told:
            return SEND, notification
        rest = without_told(notification, told)
        return (SEND, rest) if rest is not None else (TOLD, None)

    async def delivered(self, notifier: str, notification: Notification) -> None:
        """Log what this notifier was just told (kept for later when Redis cannot take it now)."""
        if own(notification):
            return
        entries = [(fp, entry_text(state, at, self.fleet.member)) for fp, state, at, _ in transitions(notification)]
        if entries:
            await self.fleet.record_told(notifier, entries)

