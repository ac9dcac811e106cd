"""The FreeSWITCH normalizer: CHANNEL_HANGUP_COMPLETE of an outbound sofia leg -> one CallOutcome.

Owns what the ESL variables mean (shared/fixtures/freeswitch/MANIFEST.md, real 1.11.1 and 1.10.12
captures), and nothing of the transport: the live connector and the recording reader feed it the
same frames.

* One outcome per **outbound sofia leg** (``Call-Direction: outbound`` and a ``sofia/`` channel).
  A bridged call (a loopback or inbound A-leg bridged to a gateway) therefore yields one outcome,
  for the gateway leg: the A-leg is inbound or ``loopback/``, and only the sofia leg carries the
  full SIP detail (MANIFEST surprise 8).
* ``sip_code``: ``variable_sip_term_status``, else ``variable_sip_invite_failure_status``. A
  487/CANCEL that FreeSWITCH wrote itself when *it* cancelled (``sip_hangup_disposition:
  send_cancel``, no term status: the dial timeout) is not a carrier response and is dropped
  (MANIFEST surprise 4); the timeout then classifies by Hangup-Cause / Q.850.
* ``sip_phrase``: ``variable_sip_invite_failure_phrase`` when it belongs to that code.
* ``reason``: ``variable_sip_reason`` (1.11.1+), else ``variable_sip_603plus_reason``; the redress
  comes from the 603+ value when FreeSWITCH recognised one. 1.10.x has neither, so a 603 there
  classifies by code and phrase alone.
* ``headers``: every ``variable_sip_rh_*`` (X-/P- headers of the final response).
* caller: ``Caller-Orig-Caller-ID-*`` (``Caller-Caller-ID-*`` is rewritten to the dialled number
  once an outbound leg answers); callee: ``Caller-Destination-Number``; trunk:
  ``variable_sip_gateway_name``.
* answered: ``Caller-Channel-Answered-Time`` is set (early media is not an answer); talk time =
  ``Caller-Channel-Hangup-Time`` - answer time (what ``billusec`` holds, read without a late scan).
* Time: ``Event-Date-Timestamp`` (microseconds). A live connector passes an ``EventTimeGuard``
  and the receive time; replay trusts the recording. ``started_at`` keeps the PBX's own duration.
* ``Unique-ID`` is remembered in a bounded recent set, so a stream seen twice (reconnect, replay
  of overlapping recordings) never yields a call twice.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from blockradar.clock import EventTimeGuard
from blockradar.connectors.esl_wire import (
    EVENT_JSON,
    EVENT_PLAIN,
    DictEvent,
    EslFrame,
    EventView,
    KeySelection,
    PlainEvent,
    event_name,
    parse_json_event,
)
from blockradar.connectors.legs import INBOUND, NO_GATEWAY, LegSelector, LegVerdict
from blockradar.numbers import NumberPlan
from blockradar.outcome import CallOutcome, bounded, bounded_id
from blockradar.redress import redress_from

log = logging.getLogger(__name__)

PBX = "freeswitch"
HANGUP_EVENT = "CHANNEL_HANGUP_COMPLETE"
HEARTBEAT_EVENT = "HEARTBEAT"
NORMALIZER_EVENTS: tuple[str, ...] = (HANGUP_EVENT,)  # what the normalizer reads
DEFAULT_DEDUP_SIZE = 20_000
RH_PREFIX = "variable_sip_rh_"
_SOFIA = ("sofia/", "sofia%2F", "sofia%2f")  # Channel-Name as sent (FreeSWITCH leaves "/" as is)
# Every variable_sip_* the normalizer reads, picked from the body in one pass.
SIP_VARIABLES = KeySelection(
    names=(
        "variable_sip_gateway_name",
        "variable_sip_term_status",
        "variable_sip_invite_failure_status",
        "variable_sip_invite_failure_phrase",
        "variable_sip_hangup_disposition",
        "variable_sip_reason",
        "variable_sip_603plus_reason",
        "variable_sip_call_id",
    ),
    prefixes=(RH_PREFIX,),
)


@dataclass(slots=True)
class NormalizerStats:
    """What the normalizer saw. Counters only ever grow."""

    events: int = 0  # event frames offered
    skipped: int = 0  # events the normalizer does not use (recognised by Event-Name)
    legs_ignored: int = 0  # hangups of legs that are not outbound sofia legs
    duplicates: int = 0  # hangups whose Unique-ID was already turned into an outcome
    malformed: int = 0  # hangups that could not be read (no Unique-ID, bad JSON)
    errors: int = 0  # unexpected exceptions while normalizing (caught)
    outcomes: int = 0


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


def _decoded(event: EventView, value: str | None) -> str | None:
    return event.decode(value) if value else None


def _usec(value: str | None) -> float | None:
    number = _int(value)
    return number / 1_000_000 if number else None


def _presented_caller(event: EventView) -> str | None:
    """The calling number the carrier saw in From. Live (FreeSWITCH 1.11.1, tests/fixtures/freeswitch/legs):
    a phone's call bridged out keeps the extension in ``Caller-Orig-Caller-ID-Number`` (405) while From
    carried its outbound caller ID (``Caller-Caller-ID-Number``); an originated dialer call that was
    answered has the dialled number in ``Caller-Caller-ID-Number``. ``sip_from_user`` (set once the
    dialog is up) and ``origination_caller_id_number`` (a dialer's) say it outright."""
    return (event.get("variable_sip_from_user") or event.get("variable_origination_caller_id_number")
            or event.get("Caller-Caller-ID-Number") or event.get("Caller-Orig-Caller-ID-Number")
            or event.get("Caller-ANI") or None)


def outcome_from_hangup(
    event: EventView,
    connector: str,
    *,
    event_time: float | None = None,
    gateways_only: bool = False,
) -> CallOutcome | None:
    """The outcome of one CHANNEL_HANGUP_COMPLETE, or None when it is not an outbound sofia leg.

    ``event_time`` overrides the event's own timestamp (a live connector's guarded time).
    Raises ``ValueError`` when the event has no Unique-ID."""
    raw = event.raw
    if raw("Call-Direction") != "outbound":
        return None
    channel = raw("Channel-Name")
    if channel is None or not channel.startswith(_SOFIA):
        return None
    sip = event.select(SIP_VARIABLES)
    trunk = _decoded(event, sip.get("variable_sip_gateway_name"))
    if gateways_only and trunk is None:
        return None
    call_id = raw("Unique-ID")
    if not call_id:
        raise ValueError("CHANNEL_HANGUP_COMPLETE without Unique-ID")

    pbx_ts = _usec(raw("Event-Date-Timestamp"))
    ended_at = event_time if event_time is not None else pbx_ts
    created = _usec(raw("Caller-Channel-Created-Time"))
    started_at: float | None = None
    if created is not None and ended_at is not None:
        started_at = ended_at - max(0.0, (pbx_ts if pbx_ts is not None else ended_at) - created)

    answered_us = _int(raw("Caller-Channel-Answered-Time"))
    answered = bool(answered_us)
    talk_s: float | None = 0.0
    if answered_us:
        hangup_us = _int(raw("Caller-Channel-Hangup-Time"))
        talk_s = max(0, hangup_us - answered_us) / 1_000_000 if hangup_us else None

    term_status = _int(sip.get("variable_sip_term_status"))
    failure_status = _int(sip.get("variable_sip_invite_failure_status"))
    sip_code = term_status if term_status is not None else failure_status
    sip_phrase: str | None = None
    if failure_status is not None and failure_status == sip_code:
        sip_phrase = _decoded(event, sip.get("variable_sip_invite_failure_phrase"))
        if term_status is None and sip.get("variable_sip_hangup_disposition") == "send_cancel":
            sip_code = None  # FreeSWITCH's own 487/CANCEL at its dial timeout, not the carrier's
            sip_phrase = None

    reason = _decoded(event, sip.get("variable_sip_reason"))
    atis = _decoded(event, sip.get("variable_sip_603plus_reason"))
    redress = None
    if atis is not None and atis != reason:
        redress = redress_from(atis, None)
    if reason is None:
        reason = atis

    caller_number = _presented_caller(event)
    caller_name = event.get("Caller-Orig-Caller-ID-Name") or None
    callee = event.get("Caller-Destination-Number") or None
    rh_start = len(RH_PREFIX)
    headers = {key[rh_start:]: event.decode(value) for key, value in sip.items() if key.startswith(RH_PREFIX)}

    return CallOutcome(
        pbx=PBX,
        connector=connector,
        call_id=call_id,
        started_at=started_at,
        ended_at=ended_at,
        answered=answered,
        talk_s=talk_s,
        caller_number=caller_number,
        caller_name=caller_name,
        callee_number=callee,
        trunk=trunk,
        sip_code=sip_code,
        sip_phrase=sip_phrase,
        reason=reason,
        q850_cause=_int(raw("variable_hangup_cause_q850")),
        pbx_cause=raw("Hangup-Cause") or None,
        headers=headers,
        call_info=None,  # FreeSWITCH drops Call-Info of a failure response (MANIFEST)
        redress=redress,
        sip_call_id=sip.get("variable_sip_call_id") or None,
    )


class EslCallNormalizer:
    """Turns ESL event frames into CallOutcomes: skip, read, deduplicate, time.

    ``on_frame(frame, received_at)`` is the hot path. Pass ``guard`` for a live stream (the PBX
    timestamp is checked against ``received_at``); without it the recorded time is trusted.
    Never raises: a frame that cannot be read is counted and logged without its content.
    """

    def __init__(
        self,
        connector: str,
        *,
        guard: EventTimeGuard | None = None,
        dedup_size: int = DEFAULT_DEDUP_SIZE,
        gateways_only: bool = True,
        gateways: Sequence[str] | None = None,
        gateway_names: Mapping[str, str] | None = None,
        numbers: NumberPlan | None = None,
        on_leg: Callable[[LegVerdict], None] | None = None,
    ) -> None:
        self.connector = connector
        self.numbers = numbers or NumberPlan()  # caller/callee to E.164 (default region US)
        # gateways_only: a leg through a sofia gateway is a trunk leg; ``gateways`` narrows which
        self.legs = LegSelector(tuple(gateways) if gateways else None, self.numbers)
        # FusionPBX names its gateways by UUID: shown (and matched by ``gateways``) under their own names
        self.gateway_names = {k.lower(): v for k, v in (gateway_names or {}).items()}
        self.on_leg = on_leg
        self.guard = guard
        self.gateways_only = gateways_only
        self.stats = NormalizerStats()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup_size = max(1, dedup_size)

    def on_frame(self, frame: EslFrame, received_at: float | None = None) -> CallOutcome | None:
        """One event frame (plain or json); None when it yields no (new) outcome."""
        return self.on_named_frame(frame, event_name(frame), received_at)

    def on_named_frame(self, frame: EslFrame, name: str | None, received_at: float | None = None) -> CallOutcome | None:
        """``on_frame`` for a caller that has already peeked at the frame's Event-Name."""
        self.stats.events += 1
        if name != HANGUP_EVENT:
            self.stats.skipped += 1
            return None
        ctype = frame.headers.get("Content-Type")
        view: EventView
        if ctype == EVENT_PLAIN:
            view = PlainEvent(frame.body)
        elif ctype == EVENT_JSON:
            values = parse_json_event(frame.body)
            if values is None:
                self.stats.malformed += 1
                log.warning("%s: unreadable JSON CHANNEL_HANGUP_COMPLETE (%d bytes)", self.connector, len(frame.body))
                return None
            view = DictEvent(values)
        else:
            self.stats.skipped += 1
            return None
        return self._normalize(view, received_at)

    def on_event(self, event: EventView, received_at: float | None = None) -> CallOutcome | None:
        """An already-readable CHANNEL_HANGUP_COMPLETE (any ``EventView``)."""
        self.stats.events += 1
        return self._normalize(event, received_at)

    def _normalize(self, event: EventView, received_at: float | None) -> CallOutcome | None:
        try:
            call_id = event.raw("Unique-ID")
            if call_id is not None and bounded_id(call_id) in self._seen:
                self.stats.duplicates += 1
                return None
            event_time = None
            if self.guard is not None and received_at is not None:
                event_time = self.guard.event_time(_usec(event.raw("Event-Date-Timestamp")), received_at)
            outcome = outcome_from_hangup(
                event, self.connector, event_time=event_time, gateways_only=self.gateways_only
            )
            if outcome is not None and outcome.trunk is not None and self.gateway_names:
                shown = self.gateway_names.get(outcome.trunk.lower())
                if shown is not None:
                    outcome = outcome.replace(trunk=shown)
            verdict = self._judge(event, outcome)
            if self.on_leg is not None:
                self.on_leg(verdict)
            if not verdict.counted:
                outcome = None
        except ValueError:
            self.stats.malformed += 1
            log.warning("%s: CHANNEL_HANGUP_COMPLETE without a usable Unique-ID; skipped", self.connector)
            return None
        except Exception as exc:  # never kill the reader; never log the event (it holds PII)
            self.stats.errors += 1
            log.error("%s: could not normalize a CHANNEL_HANGUP_COMPLETE: %s", self.connector, type(exc).__name__)
            return None
        if outcome is None:
            self.stats.legs_ignored += 1
            return None
        outcome = bounded(outcome)  # every text within its bound, the dedup key a fixed-size digest when long
        self._remember(outcome.call_id)
        self.stats.outcomes += 1
        return self.numbers.apply(outcome)

    def _judge(self, event: EventView, outcome: CallOutcome | None) -> LegVerdict:
        """Whether this hangup is an outbound carrier leg (``connectors.legs``). ``outcome`` is None when
        ``outcome_from_hangup`` already ruled the leg out (direction, technology, gateway)."""
        if outcome is None:
            callee = event.get("Caller-Destination-Number") or None
            if event.raw("Call-Direction") != "outbound" or not (event.raw("Channel-Name") or "").startswith(_SOFIA):
                return self.legs.skip(INBOUND, None, callee)
            return self.legs.skip(NO_GATEWAY, None, callee)
        if outcome.trunk is not None and self.gateways_only and self.legs.trunks is None:
            return LegVerdict(outcome.trunk, outcome.callee_number, None)  # a gateway is a trunk
        return self.legs.judge(outcome.trunk, outcome.callee_number)

    def _remember(self, call_id: str) -> None:
        seen = self._seen
        seen[call_id] = None
        if len(seen) > self._dedup_size:
            seen.popitem(last=False)
