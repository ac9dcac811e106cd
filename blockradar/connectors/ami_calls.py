"""The AMI normalizer: Asterisk events -> exactly one CallOutcome per outbound trunk leg.

Owns the mapping from AMI events to call outcomes, and ``AmiEventPipeline``, the one path from
raw AMI bytes to outcomes that the live connector and the recording reader both use.

What a trunk leg is, and where each field comes from (facts from shared/fixtures/asterisk/MANIFEST.md,
Asterisk 22.10.1):

* **Trunk leg**: the ``DestChannel`` of a ``DialBegin`` whose technology is SIP-like
  (``PJSIP/<endpoint>-<seq>``, ``SIP/``, ``IAX2/``); ``trunk`` is the endpoint name. Legs are keyed
  by the channel's ``Uniqueid`` (``DestUniqueid`` in Dial events), never by arrival order.
* **Emitted at the leg's ``Hangup``**, once: a bounded set of emitted Uniqueids drops the repeats a
  reconnect can bring. A ``Hangup`` that arrives before its ``DialBegin`` is held (bounded FIFO)
  until the ``DialBegin`` links it; one that never gets linked (an inbound call) falls out, counted.
* **A leg already dialling when the session began** (its ``DialBegin`` went by before the login, after
  a reconnect or a daemon restart): its ``Hangup`` alone carries the trunk (``Channel``), both
  numbers, ``TechCause``, ``Cause`` and the glue's ``ChanVariable``s, so it becomes an outcome when
  the channel was created before the session's login (the epoch in its ``Uniqueid``) and by another
  channel (``Linkedid`` differs from ``Uniqueid``: an inbound carrier call is its own first channel).
  The glue's ``VarSet``s / ``UserEvent`` that precede that ``Hangup`` (the leg's hangup handler) are kept
  for it (bounded), so its SIP phrase and Call-ID are not lost. Its start is the whole second in its
  ``Uniqueid`` and its talk time is unknown (None); counted in ``in_progress_recovered``.
* ``caller_number``/``caller_name``: the leg's ``ConnectedLineNum``/``Name`` (our side, sent in
  From). ``CallerIDNum`` on an outbound leg is the *dialled* party.
* ``callee_number``: the dialled number: ``DestCallerIDNum`` of the ``DialBegin``, else the leg's
  ``CallerIDNum`` at hangup, else the user part of ``DialString``. A ``DialBegin`` with no calling
  channel is an AMI ``Originate`` straight into the trunk: its ``DestCallerIDNum`` is the Originate's
  own caller ID, and the dialled number is only in ``DialString``.
* ``sip_code``: ``TechCause`` of the leg's ``Hangup`` (Asterisk 20.17 / 22.7 / 23.1 and later).
* ``sip_phrase`` (and ``sip_code`` on older Asterisk): the dialplan glue
  ``HANGUPCAUSE(<leg>,tech)`` = ``"SIP 603 Network Blocked"``, read from ``ChanVariable(SIP_TECHCAUSE)``
  on the leg's events, a ``VarSet`` of ``SIP_TECHCAUSE`` on the leg, or a ``UserEvent: SipCallOutcome``
  (``TechCause:``) on the leg or naming it in ``DialedChannel:``. A glue code below 300 means "no
  failure response" (it holds the last provisional / 200 response) and gives no phrase; a provisional
  one (1xx) also voids a ``TechCause`` of 300 or more, which Asterisk then made up itself (480 when the
  PBX cancels a ringing leg, live on Asterisk 22.10.1).
  The phrase is used only when its code agrees with ``TechCause``.
* ``call_id``: the SIP Call-ID when the glue exposes it (``SIP_CALLID``, UserEvent ``CallID:``),
  else the leg's Asterisk ``Uniqueid``. The Call-ID is what the carrier's support desk can look up;
  the Uniqueid is unique per Asterisk system and is the deduplication key either way.
* ``q850_cause``/``pbx_cause``: ``Cause``/``Cause-txt`` of the leg's ``Hangup`` (Cause 0 "not
  defined" becomes None).
* ``answered``/``talk_s``: ``DialEnd DialStatus: ANSWER`` or ``Newstate`` Up on the leg; talk time is
  hangup time minus answer time.

Event time (``EventTime`` policies below): live, a ``Timestamp:`` header (``timestampevents=yes``)
passes through ``clock.EventTimeGuard``, else the receive time is used. A recording has no receive
times, so ``RecordingEventTime`` uses the latest PBX time the stream itself carries: ``Timestamp:``,
the epoch prefix of ``Uniqueid``s, and the wall times of ``CEL`` (``EventTime``) and ``Cdr``
(``EndTime``) events, read as **UTC** (true of the lab recordings; a PBX in another zone should
record with ``timestampevents=yes``).

All state is bounded: open legs (cap, FIFO eviction, counted), a TTL on legs never closed
(counted), the unlinked-hangup FIFO and the emitted-id set.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from blockradar.clock import EventTimeGuard
from blockradar.connectors.ami_wire import AmiFramer, header_value, is_response, parse_frame, peek_event
from blockradar.connectors.legs import LegSelector, LegVerdict
from blockradar.numbers import NumberPlan
from blockradar.outcome import MAX_TIME, CallOutcome, bounded

log = logging.getLogger(__name__)

DEFAULT_TECHS = ("PJSIP", "SIP", "IAX2")
GLUE_TECHCAUSE_VAR = "SIP_TECHCAUSE"
GLUE_CALLID_VAR = "SIP_CALLID"
GLUE_USEREVENT = "SipCallOutcome"
_GLUE_RE = re.compile(r"^\s*SIP\s+(\d{3})\b\s*(.*?)\s*$")
_UNKNOWN = frozenset({"", "<unknown>", "<Unknown>", "unknown"})
_UNIQUEID_EPOCH_RE = re.compile(r"(?:^|-)(\d{9,11})\.\d+$")

# Event names the normalizer reads, and those read in a recording only for their clock.
CALL_EVENTS = frozenset({b"DialBegin", b"DialEnd", b"Hangup", b"Newstate", b"VarSet", b"UserEvent"})
CONTROL_EVENTS = frozenset({b"FullyBooted", b"Shutdown"})
CLOCK_EVENTS = {b"CEL": b"EventTime", b"Cdr": b"EndTime"}
_GLUE_VARS_BYTES = frozenset({GLUE_TECHCAUSE_VAR.encode(), GLUE_CALLID_VAR.encode()})


def _known(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in _UNKNOWN else value


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


def parse_glue(text: str | None) -> tuple[int | None, str | None]:
    """``"SIP 603 Network Blocked"`` -> ``(603, "Network Blocked")``; anything else -> (None, None)."""
    if not text:
        return None, None
    match = _GLUE_RE.match(text)
    if match is None:
        return None, None
    return int(match.group(1)), (match.group(2) or None)


def uniqueid_epoch(uniqueid: str | None) -> float | None:
    """The creation time Asterisk writes into a Uniqueid (``[system-]<epoch>.<seq>``), or None."""
    if not uniqueid:
        return None
    match = _UNIQUEID_EPOCH_RE.search(uniqueid)
    return float(match.group(1)) if match else None


def wall_time_utc(raw: bytes) -> float | None:
    """``b"2026-11-23 18:33:55"`` (CEL/Cdr wall time, read as UTC) -> epoch seconds, or None."""
    if not raw:
        return None
    try:
        text = raw.decode("ascii").strip()
        if not text:
            return None
        return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except (ValueError, UnicodeDecodeError):
        return None


# --- event time policies -------------------------------------------------------------------------


class EventTime(Protocol):
    """Decides the time of each parsed event."""

    def time_of(self, event: dict[str, str], received_at: float | None) -> float | None: ...

    def observe_frame(self, name: bytes, frame: bytes) -> None:
        """Sees every event frame before the peek decides (clock hints in a recording)."""
        ...


class LiveEventTime:
    """Live: the PBX ``Timestamp:`` if the guard trusts it, else the receive time."""

    def __init__(self, guard: EventTimeGuard) -> None:
        self.guard = guard

    def time_of(self, event: dict[str, str], received_at: float | None) -> float | None:
        raw = event.get("Timestamp")
        pbx_ts: float | None = None
        if raw:
            try:
                pbx_ts = float(raw)
            except ValueError:
                pbx_ts = None
        if received_at is None:
            return pbx_ts
        return self.guard.event_time(pbx_ts, received_at)

    def observe_frame(self, name: bytes, frame: bytes) -> None:
        return None


class RecordingEventTime:
    """Replay: the latest PBX time the stream has shown so far (never goes backwards).

    Hints, all PBX wall clock, read from every event frame (parsed or not, so the time does not
    depend on which frames the peek skips): ``Timestamp:`` (exact), the epoch prefix of
    ``Uniqueid`` / ``DestUniqueid`` (channel creation, 1 s), CEL ``EventTime`` and Cdr ``EndTime``
    (1 s, read as UTC).
    """

    def __init__(self) -> None:
        self.latest: float | None = None
        self._cache: dict[bytes, float | None] = {}

    def _see(self, ts: float | None) -> None:
        # a hint that is no time at all ("Timestamp: nan", "inf", 1e300) would stop this clock for good
        if ts is not None and 0 <= ts <= MAX_TIME and (self.latest is None or ts > self.latest):
            self.latest = ts

    def time_of(self, event: dict[str, str], received_at: float | None) -> float | None:
        return self.latest

    def observe_frame(self, name: bytes, frame: bytes) -> None:
        raw_ts = header_value(frame, b"Timestamp")
        if raw_ts:
            with contextlib.suppress(ValueError):
                self._see(float(raw_ts))
        uid = header_value(frame, b"Uniqueid") or header_value(frame, b"DestUniqueid")
        if uid:
            self._see(uniqueid_epoch(uid.decode("ascii", "replace")))
        key = CLOCK_EVENTS.get(name)
        if key is None:
            return
        raw = header_value(frame, key)
        if not raw:
            return
        if raw not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[raw] = wall_time_utc(raw)
        self._see(self._cache[raw])


# --- the tracker ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Leg:
    uniqueid: str
    channel: str
    trunk: str
    linkedid: str | None = None
    started_at: float | None = None
    answered_at: float | None = None
    last_seen: float | None = None
    dial_status: str | None = None
    callee_number: str | None = None
    caller_number: str | None = None
    caller_name: str | None = None
    glue_techcause: str | None = None
    glue_callid: str | None = None
    partial: bool = False  # built from its Hangup alone (dialling before the session began)


@dataclass(slots=True)
class TrackerStats:
    """Counters of the normalizer. They only ever grow."""

    events: int = 0  # parsed events handed to the tracker
    outcomes: int = 0
    duplicates: int = 0  # hangups / dial begins of legs already emitted (e.g. after a reconnect)
    expired: int = 0  # legs that never saw a hangup within the TTL
    evicted: int = 0  # legs dropped because the open-leg cap was reached
    unlinked_dropped: int = 0  # hangups of SIP channels never linked to a Dial (inbound calls)
    in_progress_recovered: int = 0  # legs dialling before the session began, rebuilt from their Hangup
    errors: int = 0  # events that could not be normalized (bad values); counted, never raised


@dataclass(slots=True)
class AmiCallTracker:
    """Turns parsed AMI events into CallOutcomes, one per outbound trunk leg, at its hangup.

    ``feed(event, at)`` takes one parsed event (a plain dict) and its event time; it returns the
    outcome the event completes, or None. ``expire(now)`` drops legs idle for ``ttl_s``.
    """

    connector: str = "asterisk"
    techs: tuple[str, ...] = DEFAULT_TECHS
    trunks: Collection[str] | None = None  # endpoint names / globs that are trunks (None: by the dialled number)
    ttl_s: float = 4 * 3600.0
    max_legs: int = 20_000
    max_unlinked: int = 1024
    max_emitted: int = 50_000
    glue_user_event: str = GLUE_USEREVENT
    numbers: NumberPlan = field(default_factory=NumberPlan)  # caller/callee to E.164 (default region US)
    on_leg: Callable[[LegVerdict], None] | None = None  # every finished leg's verdict (replay --legs)
    legs: LegSelector = field(init=False, repr=False)
    stats: TrackerStats = field(default_factory=TrackerStats, init=False)
    _legs: dict[str, _Leg] = field(default_factory=dict, init=False, repr=False)
    _by_channel: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _unlinked: dict[str, tuple[dict[str, str], float | None]] = field(default_factory=dict, init=False, repr=False)
    # glue values of legs born before the session, kept for their Hangup: uid -> [techcause, callid]
    _early_glue: dict[str, list[str | None]] = field(default_factory=dict, init=False, repr=False)
    _emitted: dict[str, None] = field(default_factory=dict, init=False, repr=False)
    _tech_prefixes: tuple[str, ...] = field(default=(), init=False, repr=False)
    _session_started_at: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._tech_prefixes = tuple(f"{t}/" for t in self.techs)
        self.legs = LegSelector(tuple(self.trunks) if self.trunks else None, self.numbers)

    def session_started(self, at: float) -> None:
        """A (re)login at ``at``: legs created before it may hang up without a DialBegin seen."""
        self._session_started_at = at

    # -- cheap filter, used on raw frames before any parse --------------------------------------

    def tech_prefixes_bytes(self) -> tuple[bytes, ...]:
        return tuple(p.encode() for p in self._tech_prefixes)

    @property
    def open_legs(self) -> int:
        return len(self._legs)

    def trunk_of(self, channel: str | None) -> str | None:
        """``PJSIP/carrier-0000000a`` -> ``carrier`` (the endpoint) when the technology counts, else None.
        Whether that endpoint is a trunk is the ``LegSelector``'s call, at the leg's end."""
        if not channel or not channel.startswith(self._tech_prefixes):
            return None
        rest = channel.partition("/")[2]
        return rest.rpartition("-")[0] or rest or None

    # -- events -----------------------------------------------------------------------------------

    def feed(self, event: dict[str, str], at: float | None) -> CallOutcome | None:
        self.stats.events += 1
        name = event.get("Event")
        try:
            if name == "Hangup":
                return self._hangup(event, at)
            if name == "DialBegin":
                return self._dial_begin(event, at)
            if name == "DialEnd":
                self._dial_end(event, at)
            elif name == "Newstate":
                self._newstate(event, at)
            elif name == "VarSet":
                self._varset(event, at)
            elif name == "UserEvent":
                self._user_event(event, at)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.stats.errors += 1
            log.warning("AMI %s event could not be normalized (%s); counted and skipped", name, type(exc).__name__)
        return None

    def _dial_begin(self, ev: dict[str, str], at: float | None) -> CallOutcome | None:
        channel = ev.get("DestChannel")
        trunk = self.trunk_of(channel)
        uid = ev.get("DestUniqueid")
        if trunk is None or not uid or channel is None:
            return None
        if uid in self._emitted:
            self.stats.duplicates += 1
            return None
        leg = self._legs.get(uid)
        if leg is None:
            leg = _Leg(uniqueid=uid, channel=channel, trunk=trunk, started_at=at)
            self._add(leg)
        leg.linkedid = ev.get("DestLinkedid") or ev.get("Linkedid") or leg.linkedid
        leg.last_seen = at
        # the number in the Dial string first: DestCallerIDNum is the Originate's own caller ID on an
        # Originate straight into the trunk, the caller's number with Dial's o option, or a prefixed extension
        leg.callee_number = (
            leg.callee_number or _dialled_number(ev.get("DialString")) or _known(ev.get("DestCallerIDNum"))
            or _dialstring_user(ev.get("DialString"))
        )
        leg.caller_number = _known(ev.get("DestConnectedLineNum")) or _known(ev.get("CallerIDNum")) or leg.caller_number
        leg.caller_name = _known(ev.get("DestConnectedLineName")) or _known(ev.get("CallerIDName")) or leg.caller_name
        self._glue_from_chanvars(leg, ev, "DestChanVariable")
        held = self._unlinked.pop(uid, None)
        if held is not None:
            return self._finish(self._legs.pop(uid), held[0], held[1])
        return None

    def _dial_end(self, ev: dict[str, str], at: float | None) -> None:
        leg = self._legs.get(ev.get("DestUniqueid", ""))
        if leg is None:
            return
        leg.last_seen = at
        status = ev.get("DialStatus")
        leg.dial_status = status or leg.dial_status
        if status == "ANSWER" and leg.answered_at is None:
            leg.answered_at = at
        self._glue_from_chanvars(leg, ev, "DestChanVariable")

    def _newstate(self, ev: dict[str, str], at: float | None) -> None:
        leg = self._legs.get(ev.get("Uniqueid", ""))
        if leg is None:
            return
        leg.last_seen = at
        if (ev.get("ChannelStateDesc") == "Up" or ev.get("ChannelState") == "6") and leg.answered_at is None:
            leg.answered_at = at

    def _varset(self, ev: dict[str, str], at: float | None) -> None:
        uid = ev.get("Uniqueid", "")
        variable = ev.get("Variable")
        value = ev.get("Value")
        if not value or variable not in (GLUE_TECHCAUSE_VAR, GLUE_CALLID_VAR):
            return
        leg = self._legs.get(uid)
        if leg is None:
            self._keep_early_glue(uid, ev.get("Channel"), value if variable == GLUE_TECHCAUSE_VAR else None,
                                  value if variable == GLUE_CALLID_VAR else None)
        elif variable == GLUE_TECHCAUSE_VAR:
            leg.glue_techcause = value
        else:
            leg.glue_callid = value

    def _user_event(self, ev: dict[str, str], at: float | None) -> None:
        if ev.get("UserEvent") != self.glue_user_event:
            return
        uid = ev.get("Uniqueid", "")
        leg = self._legs.get(uid)
        if leg is None:
            dialed = ev.get("DialedChannel")
            uid = self._by_channel.get(dialed, "") if dialed else ""
            leg = self._legs.get(uid)
        if leg is None:
            self._keep_early_glue(ev.get("Uniqueid", ""), ev.get("Channel"), ev.get("TechCause"), ev.get("CallID"))
            return
        if ev.get("TechCause"):
            leg.glue_techcause = ev["TechCause"]
        if ev.get("CallID"):
            leg.glue_callid = ev["CallID"]

    def _hangup(self, ev: dict[str, str], at: float | None) -> CallOutcome | None:
        channel = ev.get("Channel")
        if self.trunk_of(channel) is None:
            return None
        uid = ev.get("Uniqueid")
        if not uid:
            return None
        leg = self._legs.pop(uid, None)
        if leg is None:
            if uid in self._emitted:
                self.stats.duplicates += 1
                return None
            leg = self._dialling_before_session(ev, channel, uid)
            if leg is not None:
                self.stats.in_progress_recovered += 1
                return self._finish(leg, ev, at)
            self._unlinked[uid] = (ev, at)
            if len(self._unlinked) > self.max_unlinked:
                del self._unlinked[next(iter(self._unlinked))]
                self.stats.unlinked_dropped += 1
            return None
        return self._finish(leg, ev, at)

    def _dialling_before_session(self, ev: dict[str, str], channel: str | None, uid: str) -> _Leg | None:
        glue = self._early_glue.pop(uid, None)
        started = self._session_started_at
        born = uniqueid_epoch(uid)
        linked = ev.get("Linkedid")
        trunk = self.trunk_of(channel)
        if started is None or born is None or born >= started or not linked or linked == uid or trunk is None:
            return None
        leg = _Leg(uniqueid=uid, channel=channel or "", trunk=trunk, linkedid=linked, started_at=born,
                   callee_number=_known(ev.get("CallerIDNum")), partial=True)
        if glue is not None:
            leg.glue_techcause, leg.glue_callid = glue
        return leg

    def _keep_early_glue(self, uid: str, channel: str | None, techcause: str | None, callid: str | None) -> None:
        """A glue value for a leg we never saw begin: kept for its Hangup when the leg is a trunk channel
        born before this session (its DialBegin went by before the login); anything else is ignored."""
        started = self._session_started_at
        born = uniqueid_epoch(uid) if uid else None
        if started is None or born is None or born >= started or self.trunk_of(channel) is None:
            return
        glue = self._early_glue.get(uid)
        if glue is None:
            glue = self._early_glue[uid] = [None, None]
            if len(self._early_glue) > self.max_unlinked:
                del self._early_glue[next(iter(self._early_glue))]
        if techcause:
            glue[0] = techcause
        if callid:
            glue[1] = callid

    # -- helpers ----------------------------------------------------------------------------------

    def _add(self, leg: _Leg) -> None:
        self._legs[leg.uniqueid] = leg
        self._by_channel[leg.channel] = leg.uniqueid
        while len(self._legs) > self.max_legs:
            oldest = next(iter(self._legs))
            self._forget(self._legs.pop(oldest))
            self.stats.evicted += 1

    def _forget(self, leg: _Leg) -> None:
        if self._by_channel.get(leg.channel) == leg.uniqueid:
            del self._by_channel[leg.channel]

    @staticmethod
    def _glue_from_chanvars(leg: _Leg, ev: dict[str, str], prefix: str) -> None:
        tech = ev.get(f"{prefix}({GLUE_TECHCAUSE_VAR})")
        if tech:
            leg.glue_techcause = tech
        callid = ev.get(f"{prefix}({GLUE_CALLID_VAR})")
        if callid:
            leg.glue_callid = callid

    def _finish(self, leg: _Leg, ev: dict[str, str], at: float | None) -> CallOutcome | None:
        self._forget(leg)
        self._glue_from_chanvars(leg, ev, "ChanVariable")
        self._emitted[leg.uniqueid] = None
        if len(self._emitted) > self.max_emitted:
            del self._emitted[next(iter(self._emitted))]
        verdict = self.legs.judge(leg.trunk, leg.callee_number or _known(ev.get("CallerIDNum")))
        if self.on_leg is not None:
            self.on_leg(verdict)
        if not verdict.counted:
            return None
        sip_code = _int(ev.get("TechCause"))
        glue_code, glue_phrase = parse_glue(leg.glue_techcause)
        sip_phrase: str | None = None
        if glue_code is not None and glue_code >= 300:
            if sip_code is None:
                sip_code = glue_code
            if glue_code == sip_code:
                sip_phrase = glue_phrase
        elif glue_code is not None and glue_code < 200 and sip_code is not None and sip_code >= 300:
            # the carrier's last word was provisional (180 Ringing): the PBX gave up on the leg itself (a
            # caller cancel, a dial timeout) and Asterisk's TechCause 480 is its own, not the carrier's
            sip_code = None
        cause = _int(ev.get("Cause"))
        answered = leg.answered_at is not None or (leg.partial and ev.get("ChannelStateDesc") == "Up")
        talk_s: float | None = None
        if answered and at is not None and leg.answered_at is not None:
            talk_s = max(0.0, at - leg.answered_at)
        self.stats.outcomes += 1
        return self.numbers.apply(bounded(CallOutcome(
            pbx="asterisk",
            connector=self.connector,
            call_id=leg.glue_callid or leg.uniqueid,
            sip_call_id=leg.glue_callid or None,
            started_at=leg.started_at,
            ended_at=at,
            answered=answered,
            talk_s=talk_s,
            caller_number=_known(ev.get("ConnectedLineNum")) or leg.caller_number,
            caller_name=_known(ev.get("ConnectedLineName")) or leg.caller_name,
            callee_number=leg.callee_number or _known(ev.get("CallerIDNum")),
            trunk=leg.trunk,
            sip_code=sip_code,
            sip_phrase=sip_phrase,
            q850_cause=cause if cause else None,
            pbx_cause=_known(ev.get("Cause-txt")),
        )))

    def expire(self, now: float) -> int:
        """Drops legs idle for longer than ``ttl_s`` (event time); returns how many."""
        cutoff = now - self.ttl_s
        stale = [uid for uid, leg in self._legs.items() if leg.last_seen is not None and leg.last_seen < cutoff]
        for uid in stale:
            self._forget(self._legs.pop(uid))
        if stale:
            self.stats.expired += len(stale)
            log.info("%s: %d call leg(s) expired without a hangup (events lost?)", self.connector, len(stale))
        return len(stale)


_NUMBERISH = re.compile(r"\+?[0-9*#]{3,32}")


def _dialstring_user(dialstring: str | None) -> str | None:
    """The number a Dial string dials: ``+15551230001@carrier`` (PJSIP, chan_sip ``SIP/number@peer``),
    ``carrier-a/5552300007`` (chan_sip ``SIP/peer/number``, VICIdial's carriers),
    ``carrier/sip:+1555@host`` -> the user part; ``carrier`` alone (an endpoint, no number) -> None."""
    if not dialstring:
        return None
    text = dialstring.split(",", 1)[0]
    if "/" in text:
        text = text.split("/", 1)[1]
    elif "@" not in text:
        return None  # only an endpoint or peer name
    if text.startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1]
    return _known(text.split("@", 1)[0])


def _dialled_number(dialstring: str | None) -> str | None:
    """``_dialstring_user`` when it is a number (digits, an optional +): what was really dialled. Better
    than ``DestCallerIDNum``, which Dial's ``o`` option (VICIdial's ``tTor``) sets to the caller's own
    number, and which holds the dialplan's prefixed extension (VICIdial's 91...) when the Dial strips it."""
    user = _dialstring_user(dialstring)
    if user is None or not _NUMBERISH.fullmatch(user):
        return None
    return user


# --- the pipeline --------------------------------------------------------------------------------


@dataclass(slots=True)
class PipelineStats:
    frames: int = 0
    parsed: int = 0  # frames parsed into dicts
    skipped: int = 0  # frames the peek decided not to parse
    responses: int = 0
    parse_errors: int = 0  # frames that could not be parsed, plus events that could not be normalized


class AmiEventPipeline:
    """Raw AMI bytes -> CallOutcomes: framing, peek, parse, normalize. Live and replay share it.

    ``feed(data, received_at)`` returns the outcomes completed by this chunk, in stream order.
    Response frames go to ``on_response(frame)`` (the live connector hands them to panoramisk);
    ``FullyBooted`` / ``Shutdown`` events go to ``on_control(event)``. ``peek=False`` parses every
    event frame (the slow reference path the tests compare against); ``parse`` can be swapped
    for the same reason.
    """

    def __init__(
        self,
        tracker: AmiCallTracker,
        event_time: EventTime,
        *,
        on_response: Callable[[bytes], None] | None = None,
        on_control: Callable[[dict[str, str]], None] | None = None,
        framer: AmiFramer | None = None,
        expire_every: int = 5000,
        parse: Callable[[bytes], dict[str, str] | None] = parse_frame,
        peek: bool = True,
    ) -> None:
        self.tracker = tracker
        self.event_time = event_time
        self.framer = framer or AmiFramer()
        self.on_response = on_response
        self.on_control = on_control
        self.stats = PipelineStats()
        self._expire_every = expire_every
        self._parse = parse
        self._peek = peek
        self._techs = tracker.tech_prefixes_bytes()
        self._observe = event_time.observe_frame

    def feed(self, data: bytes, received_at: float | None = None) -> list[CallOutcome]:
        frames = self.framer.feed(data)
        if not frames:
            return []
        return self.feed_frames(frames, received_at)

    def feed_frames(self, frames: Iterable[bytes], received_at: float | None = None) -> list[CallOutcome]:
        outcomes: list[CallOutcome] = []
        stats = self.stats
        for frame in frames:
            stats.frames += 1
            name = peek_event(frame)
            if name is None:
                if is_response(frame):
                    stats.responses += 1
                    if self.on_response is not None:
                        self.on_response(frame)
                else:
                    stats.parse_errors += 1
                    self.framer.stats.malformed += 1
                continue
            if name in CONTROL_EVENTS:
                event = self._parse(frame)
                if event is not None and self.on_control is not None:
                    self.on_control(event)
                stats.parsed += 1
                continue
            self._observe(name, frame)
            if self._peek and not self._wanted(name, frame):
                stats.skipped += 1
                continue
            event = self._parse(frame)
            stats.parsed += 1
            if event is None:
                stats.parse_errors += 1
                continue
            at = self.event_time.time_of(event, received_at)
            errors_before = self.tracker.stats.errors
            outcome = self.tracker.feed(event, at)
            if self.tracker.stats.errors != errors_before:
                stats.parse_errors += 1
            if outcome is not None:
                outcomes.append(outcome)
            if self.tracker.stats.events % self._expire_every == 0 and at is not None:
                self.tracker.expire(at)
        return outcomes

    def _wanted(self, name: bytes, frame: bytes) -> bool:
        """The cheap look before a parse: is this frame one the tracker can use?"""
        if name not in CALL_EVENTS:
            return False
        if name == b"Hangup":
            channel = header_value(frame, b"Channel")
            return channel is not None and channel.startswith(self._techs)
        if name == b"DialBegin" or name == b"DialEnd":
            dest = header_value(frame, b"DestChannel")
            return dest is not None and dest.startswith(self._techs)
        if name == b"VarSet":
            variable = header_value(frame, b"Variable")
            return variable in _GLUE_VARS_BYTES
        if name == b"Newstate":
            return b"\r\nChannelStateDesc: Up" in frame
        return True  # UserEvent: rare, parse it
