"""The HEP source: datagrams -> carrier responses (``HepReader``, no sockets: live, record and replay
share it), and the UDP listener around it (``HepListener``), which can also send every datagram on,
unchanged, to an upstream collector such as Homer (a PBX sends to one collector only).

What the reader keeps: the initial INVITE of each Call-ID (for the dialled number and the caller), and
each final response >= 300 to an INVITE, once (a retransmission of the same response is counted and
dropped). A datagram that is not HEP, fails the auth key, is not SIP, or is not a SIP message is
counted, never raised; memory is bounded (``max_calls`` INVITEs and responses remembered).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from blockradar.connectors.hep.join import CarrierResponse
from blockradar.connectors.hep.sip import SipError, SipMessage, parse_sip
from blockradar.connectors.hep.wire import PROTO_SIP, HepError, parse_hep
from blockradar.logs import LineBudget
from blockradar.numbers import NumberPlan

log = logging.getLogger(__name__)

DEFAULT_MAX_CALLS = 20_000


@dataclass(slots=True)
class HepStats:
    datagrams: int = 0
    bad: int = 0  # not HEPv3, or lengths that lie
    unauthorized: int = 0  # the auth key is missing or wrong
    not_sip: int = 0  # another protocol type (RTCP, logs)
    sip_errors: int = 0  # a payload that is not a SIP message
    invites: int = 0
    responses: int = 0  # final responses >= 300 to INVITEs
    retransmissions: int = 0
    forwarded: int = 0
    forward_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


class HepReader:
    def __init__(self, numbers: NumberPlan, *, auth_key: str | None = None, max_payload: int = 65_535,
                 max_calls: int = DEFAULT_MAX_CALLS) -> None:
        self.numbers = numbers
        self.auth_key = auth_key.encode() if auth_key else None
        self.max_payload = max_payload
        self.max_calls = max_calls
        self.stats = HepStats()
        self._invites: OrderedDict[str, SipMessage] = OrderedDict()
        self._answered: OrderedDict[tuple[str, int | None, int], None] = OrderedDict()
        self._lines = LineBudget(limit=5, period_s=60.0)

    def feed(self, datagram: bytes) -> CarrierResponse | None:
        """One datagram; the carrier response it carries, if it is one (the first time it is seen)."""
        stats = self.stats
        stats.datagrams += 1
        try:
            packet = parse_hep(datagram, self.max_payload)
        except HepError as exc:
            stats.bad += 1
            self._say("HEP: a datagram that is not HEPv3 (%s); %d so far", exc, stats.bad)
            return None
        if self.auth_key is not None and not hmac.compare_digest((packet.auth_key or "").encode(), self.auth_key):
            stats.unauthorized += 1
            self._say("HEP: a datagram with a missing or wrong auth key; %d so far", stats.unauthorized)
            return None
        if packet.proto_type != PROTO_SIP:
            stats.not_sip += 1
            return None
        try:
            message = parse_sip(packet.payload)
        except SipError:
            stats.sip_errors += 1
            return None
        call_id = message.call_id
        if not call_id:
            stats.sip_errors += 1
            return None
        number, method = message.cseq
        if message.method == "INVITE":
            if call_id not in self._invites:  # the initial INVITE (a re-INVITE or a resend changes nothing)
                stats.invites += 1
                self._invites[call_id] = message
                if len(self._invites) > self.max_calls:
                    self._invites.popitem(last=False)
            return None
        if message.status is None or method != "INVITE" or message.status < 300:
            return None
        key = (call_id, number, message.status)
        if key in self._answered:
            stats.retransmissions += 1
            return None
        self._answered[key] = None
        if len(self._answered) > self.max_calls:
            self._answered.popitem(last=False)
        stats.responses += 1
        return CarrierResponse.from_sip(message, packet.time, self._invites.get(call_id), self.numbers,
                                        src=f"{packet.src_ip}:{packet.src_port}",
                                        dst=f"{packet.dst_ip}:{packet.dst_port}")

    def _say(self, text: str, *args: object) -> None:
        if self._lines.take(time.monotonic()):
            log.warning(text, *args)


class HepListener(asyncio.DatagramProtocol):
    """UDP: every datagram to the reader (and, with ``forward``, on to an upstream collector)."""

    def __init__(self, reader: HepReader, on_response: Callable[[CarrierResponse], None]) -> None:
        self.reader = reader
        self.on_response = on_response
        self.upstream: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        upstream = self.upstream
        if upstream is not None:
            try:
                upstream.sendto(data)
                self.reader.stats.forwarded += 1
            except OSError:
                self.reader.stats.forward_errors += 1
        try:
            response = self.reader.feed(data)
        except Exception:  # never lose the listener to one datagram
            log.exception("HEP: a datagram could not be read")
            return
        if response is not None:
            self.on_response(response)

    def error_received(self, exc: Exception) -> None:  # an ICMP error on the socket: nothing to do
        log.debug("HEP: socket error %s", exc)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, stats: HepStats) -> None:
        self.stats = stats

    def error_received(self, exc: Exception) -> None:  # the collector's port is closed (ICMP): counted
        self.stats.forward_errors += 1


async def start_listener(reader: HepReader, on_response: Callable[[CarrierResponse], None], host: str, port: int,
                         forward: tuple[str, int] | None = None) -> tuple[asyncio.DatagramTransport, HepListener]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: HepListener(reader, on_response),
                                                              local_addr=(host, port))
    if forward is not None:
        upstream, _ = await loop.create_datagram_endpoint(lambda: _Upstream(reader.stats), remote_addr=forward)
        protocol.upstream = upstream
    return transport, protocol
