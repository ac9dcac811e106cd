"""The join: a PBX's call outcome meets the carrier's own final response, mirrored by the PBX as HEP.

A carrier response (``CarrierResponse``) is a final response (>= 300) to an INVITE, with what the wire
said (phrase, every Reason, every Call-Info, the X-/P- headers) and, from the INVITE it answers, the
dialled number (Request-URI), From, To and P-Asserted-Identity.

An outcome is joined to its response

1. **by SIP Call-ID** where the PBX gives one (the Asterisk glue's ``SIP_CALLID``, FreeSWITCH's
   ``variable_sip_call_id``): exact;
2. else **by the dialled number** within ``window_s`` of the outcome's end (plain Asterisk gives no Call-ID
   in AMI), by trunk where ``trunks`` says which carrier address a trunk is (the response must come
   from it), by caller where both sides know it, and by status where the outcome has one (Asterisk's
   TechCause is the carrier's code): of the responses left, the earliest; each response joins one
   outcome at most. Nothing matches: the outcome stays as the PBX reported it (never another call's words).

Whichever arrives first waits: the response usually comes before the PBX reports the leg (the PBX hangs
up *because* of it), so an outcome rarely waits; one that does goes out as it is after ``wait_s``. A
response that no outcome claimed within ``window_s`` is an orphan (a leg the PBX did not report, an
inbound leg's answer). Both sides are bounded (``max_pending``, oldest dropped first) and everything is
counted (``stats``). The merged outcome's ``sip_code``, ``sip_phrase``, ``reason``, ``call_info`` (and so
its redress) and headers come from the wire.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from blockradar.connectors.hep.sip import SipMessage, uri_user
from blockradar.numbers import NumberPlan
from blockradar.outcome import MAX_TEXT, CallOutcome

KEPT_HEADER_PREFIXES = ("x-", "p-")
MAX_KEPT_HEADERS = 16


@dataclass(frozen=True, slots=True)
class InviteInfo:
    """What the join keeps of an INVITE: the dialled number and the caller as written (not the message)."""

    request_user: str | None
    to_user: str | None
    caller: str | None

    @classmethod
    def of(cls, invite: SipMessage) -> InviteInfo:
        return cls(uri_user(invite.request_uri), uri_user(invite.first("to")),
                   uri_user(invite.first("p-asserted-identity")) or uri_user(invite.first("from")))


@dataclass(slots=True)
class CarrierResponse:
    """A final response to an INVITE, as the wire carried it."""

    call_id: str
    at: float  # when it was captured (HEP time)
    status: int
    phrase: str
    reason: str | None = None  # every Reason header, comma-joined
    call_info: str | None = None  # every Call-Info header, comma-joined
    headers: dict[str, str] = field(default_factory=dict)  # X-/P- headers (first value)
    dialled: str | None = None  # the INVITE's Request-URI user, as E.164 where it reads as a number
    caller: str | None = None  # P-Asserted-Identity, else From
    src: str = ""  # ip:port of who answered
    dst: str = ""
    received: float = 0.0  # when the join got it (its clock): an orphan is judged on this, not on ``at``

    @classmethod
    def from_sip(cls, response: SipMessage, at: float, invite: SipMessage | InviteInfo | None, numbers: NumberPlan,
                 src: str = "", dst: str = "") -> CarrierResponse:
        headers: dict[str, str] = {}
        for name, values in response.headers.items():
            if name.startswith(KEPT_HEADER_PREFIXES) and len(headers) < MAX_KEPT_HEADERS:
                headers[_title(name)] = values[0][:MAX_TEXT]
        # without its INVITE, the response's own To / From (a response has no Request-URI)
        info = invite if isinstance(invite, InviteInfo) else InviteInfo.of(invite if invite is not None else response)
        dialled = info.request_user or info.to_user
        caller = info.caller or uri_user(response.first("p-asserted-identity")) or uri_user(response.first("from"))
        return cls(call_id=response.call_id or "", at=at, status=response.status or 0,
                   phrase=response.phrase[:MAX_TEXT],
                   reason=_bounded(response.joined("reason")), call_info=_bounded(response.joined("call-info")),
                   headers=headers, dialled=numbers.text(dialled) or dialled, caller=numbers.text(caller) or caller,
                   src=src, dst=dst)


def _title(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def _bounded(text: str | None) -> str | None:
    return text[:MAX_TEXT] if text else None


def merge(outcome: CallOutcome, response: CarrierResponse) -> CallOutcome:
    """The outcome with the wire's words: status, phrase, Reason, Call-Info (and so redress), headers."""
    return outcome.replace(sip_code=response.status, sip_phrase=response.phrase or outcome.sip_phrase,
                           reason=response.reason or outcome.reason,
                           call_info=response.call_info or outcome.call_info,
                           headers={**outcome.headers, **response.headers} if response.headers else outcome.headers,
                           sip_call_id=outcome.sip_call_id or response.call_id)


@dataclass(slots=True)
class JoinStats:
    responses: int = 0
    joined_by_call_id: int = 0
    joined_by_number: int = 0
    outcomes_unjoined: int = 0  # went out as they were after wait_s
    outcomes_without_response: int = 0  # answered or no final response expected: not waited for
    orphan_responses: int = 0  # no outcome claimed them within window_s
    dropped: int = 0  # past max_pending


class HepJoin:
    """See the module docstring. ``emit`` gets every outcome once, joined or not; ``tick(now)`` lets the
    waiting ones go and counts the orphans (call it once a second)."""

    def __init__(self, emit: Callable[[CallOutcome], None], *, wait_s: float = 2.0, window_s: float = 10.0,
                 max_pending: int = 10_000, trunks: dict[str, list[str]] | None = None) -> None:
        self.emit = emit
        self.trunks = {name: set(addresses) for name, addresses in (trunks or {}).items()}
        self.wait_s = wait_s
        self.window_s = window_s
        self.max_pending = max_pending
        self.stats = JoinStats()
        self._by_call_id: OrderedDict[str, CarrierResponse] = OrderedDict()
        self._by_number: dict[str, deque[CarrierResponse]] = {}
        self._waiting: OrderedDict[int, tuple[float, CallOutcome]] = OrderedDict()  # id -> (deadline, outcome)
        self._waiting_call_ids: dict[str, int] = {}  # the waiting outcomes that have a SIP Call-ID
        self._seq = 0

    # -- the two sides --------------------------------------------------------------------------------
    def add_response(self, response: CarrierResponse, now: float) -> None:
        self.stats.responses += 1
        key = self._waiting_call_ids.pop(response.call_id, None)  # an outcome that came first
        if key is None and len(self._waiting) > len(self._waiting_call_ids):
            key = next((k for k, (_, o) in self._waiting.items() if self._matches(o, response)), None)
        if key is not None:
            _, outcome = self._waiting.pop(key)
            self._count(outcome, response)
            self.emit(merge(outcome, response))
            return
        if response.call_id in self._by_call_id:
            self._forget(self._by_call_id.pop(response.call_id))
        response.received = now
        self._by_call_id[response.call_id] = response
        if response.dialled:
            self._by_number.setdefault(response.dialled, deque()).append(response)
        while len(self._by_call_id) > self.max_pending:
            _, oldest = self._by_call_id.popitem(last=False)
            self._forget(oldest)
            self.stats.dropped += 1

    def add_outcome(self, outcome: CallOutcome, now: float) -> None:
        if outcome.answered or (outcome.sip_code is not None and outcome.sip_code < 300):
            self.stats.outcomes_without_response += 1  # answered: no failure response to wait for
            self.emit(outcome)
            return
        response = self._claim(outcome)
        if response is not None:
            self._count(outcome, response)
            self.emit(merge(outcome, response))
            return
        self._seq += 1
        self._waiting[self._seq] = (now + self.wait_s, outcome)
        if outcome.sip_call_id:
            self._waiting_call_ids[outcome.sip_call_id] = self._seq
        while len(self._waiting) > self.max_pending:
            _, (_, oldest) = self._waiting.popitem(last=False)
            self._unindex(oldest)
            self.stats.dropped += 1
            self.stats.outcomes_unjoined += 1
            self.emit(oldest)

    def tick(self, now: float) -> None:
        while self._waiting:
            key, (deadline, outcome) = next(iter(self._waiting.items()))
            if deadline > now:
                break
            del self._waiting[key]
            self._unindex(outcome)
            self.stats.outcomes_unjoined += 1
            self.emit(outcome)
        while self._by_call_id:
            oldest = next(iter(self._by_call_id.values()))
            if now - oldest.received <= self.window_s:
                break
            self._by_call_id.popitem(last=False)
            self._forget(oldest)
            self.stats.orphan_responses += 1

    def flush(self) -> None:
        """Let every waiting outcome go (shutdown, the end of a replay)."""
        for _, outcome in self._waiting.values():
            self.stats.outcomes_unjoined += 1
            self.emit(outcome)
        self._waiting.clear()
        self._waiting_call_ids.clear()

    @property
    def pending(self) -> int:
        return len(self._waiting) + len(self._by_call_id)

    # -- inside ---------------------------------------------------------------------------------------
    def _claim(self, outcome: CallOutcome) -> CarrierResponse | None:
        if outcome.sip_call_id:
            response = self._by_call_id.pop(outcome.sip_call_id, None)
            if response is not None:
                self._forget(response, from_call_ids=False)
                return response
            return None
        candidates = [r for r in self._by_number.get(outcome.callee_number or "", ()) if self._fits(outcome, r)]
        if not candidates:
            return None
        response = min(candidates, key=lambda r: r.at)
        self._by_call_id.pop(response.call_id, None)
        self._forget(response, from_call_ids=False)
        return response

    def _unindex(self, outcome: CallOutcome) -> None:
        if outcome.sip_call_id:
            self._waiting_call_ids.pop(outcome.sip_call_id, None)

    def _matches(self, outcome: CallOutcome, response: CarrierResponse) -> bool:
        if outcome.sip_call_id:
            return False  # found by its Call-ID, or not at all
        return bool(response.dialled) and response.dialled == outcome.callee_number and self._fits(outcome, response)

    def _fits(self, outcome: CallOutcome, response: CarrierResponse) -> bool:
        """The same call as far as both sides can tell: time, trunk, caller and status."""
        return (self._near(outcome, response) and self._from_trunk(outcome, response)
                and (not outcome.caller_number or not response.caller or outcome.caller_number == response.caller)
                and (outcome.sip_code is None or outcome.sip_code == response.status))

    def _from_trunk(self, outcome: CallOutcome, response: CarrierResponse) -> bool:
        addresses = self.trunks.get(outcome.trunk or "")
        return addresses is None or response.src in addresses or response.src.rpartition(":")[0] in addresses

    def _near(self, outcome: CallOutcome, response: CarrierResponse) -> bool:
        end = outcome.ended_at
        return end is None or abs(end - response.at) <= self.window_s

    def _forget(self, response: CarrierResponse, *, from_call_ids: bool = True) -> None:
        if from_call_ids:
            self._by_call_id.pop(response.call_id, None)
        queue = self._by_number.get(response.dialled or "")
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(response)
            if not queue:
                del self._by_number[response.dialled or ""]

    def _count(self, outcome: CallOutcome, response: CarrierResponse) -> None:
        if outcome.sip_call_id:
            self.stats.joined_by_call_id += 1
        else:
            self.stats.joined_by_number += 1
