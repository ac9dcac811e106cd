"""The HEP source: datagrams -> carrier responses (``HepReader``, no sockets: live, record and replay
share it), and the UDP listener around it (``HepListener``), which can also send every datagram on,
unchanged, to an upstream collector such as Homer (a PBX sends to one collector only).

What the reader keeps: the initial INVITE of each Call-ID (for the dialled number and the caller), and
each final response >= 300 to an INVITE *the PBX sent* (the carrier's answer), once (a retransmission of
the same response is counted and dropped). The PBX mirrors what it sends and what it receives, phones'
calls too, and FreeSWITCH copies a carrier's ATIS Reason into its own 603 to the phone (lab, MANIFEST):
so the PBX's SIP socket is learned as the one address every datagram of a capture agent has on one side
(or given: ``pbx_addresses``), and a response counts only when the INVITE it answers came from it.
While that is not known yet (one PBX and one peer seen so far: no phone to confuse) every response counts.

A datagram that is not HEP, fails the auth key, is not SIP, or is not a SIP message is counted, never
raised; memory is bounded (``max_calls`` INVITEs and responses remembered).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from blockradar.connectors.hep.join import CarrierResponse, InviteInfo
from blockradar.connectors.hep.sip import SipError, parse_sip
from blockradar.connectors.hep.wire import PROTO_SIP, HepError, parse_hep
from blockradar.logs import LineBudget
from blockradar.numbers import NumberPlan

log = logging.getLogger(__name__)

DEFAULT_MAX_CALLS = 20_000
MAX_AGENTS = 64  # capture agents whose PBX address is learned (a sender making up capture ids gets no more)


@dataclass(slots=True)
class HepStats:
    datagrams: int = 0
    bad: int = 0  # not HEPv3, or lengths that lie
    unauthorized: int = 0  # the auth key is missing or wrong
    not_sip: int = 0  # another protocol type (RTCP, logs)
    sip_errors: int = 0  # a payload that is not a SIP message
    empty_payloads: int = 0  # FreeSWITCH sends none for a message over 16000 bytes (sofia-sip's eth_frame_len)
    not_carrier: int = 0  # final responses the PBX sent (to a phone), not ones it received from a carrier
    other: int = 0  # SIP messages the join does not need (1xx, 2xx, ACK, BYE ...), not parsed
    challenges: int = 0  # 401/407 to an INVITE: not the carrier's answer to the call
    invites: int = 0
    responses: int = 0  # final responses >= 300 to INVITEs
    retransmissions: int = 0
    forwarded: int = 0
    forward_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


class HepReader:
    def __init__(self, numbers: NumberPlan, *, auth_key: str | None = None, max_payload: int = 65_535,
                 max_calls: int = DEFAULT_MAX_CALLS, pbx_addresses: tuple[str, ...] = ()) -> None:
        self.numbers = numbers
        self.auth_key = auth_key.encode() if auth_key else None
        self.max_payload = max_payload
        self.max_calls = max_calls
        self.stats = HepStats()
        # call id -> what the join needs of its INVITE (a few hundred bytes, not the message) and who sent it
        self._invites: OrderedDict[str, tuple[InviteInfo, str, str]] = OrderedDict()
        self.pbx_addresses = set(pbx_addresses)  # given: ip or ip:port
        self._sides: dict[object, set[str]] = {}  # capture agent -> the ip:port on every datagram's one side
        self._ips: dict[object, set[str]] = {}  # the same, by IP (a PBX with several SIP ports)
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
        src, dst = f"{packet.src_ip}:{packet.src_port}", f"{packet.dst_ip}:{packet.dst_port}"
        agent = (packet.capture_id, packet.agent_name)
        self._learn(agent, src, dst, packet.src_ip, packet.dst_ip)
        payload = packet.payload
        if not payload:
            stats.empty_payloads += 1
            return None
        # only INVITEs and final responses >= 300 matter: the rest (1xx, 2xx, ACK, BYE ...) unparsed
        if (payload.startswith(b"SIP/2.0 ") and payload[8:9] in (b"1", b"2")) or (
                not payload.startswith((b"SIP/2.0 ", b"INVITE "))):
            stats.other += 1
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
                self._invites[call_id] = (InviteInfo.of(message), src, packet.src_ip)
                if len(self._invites) > self.max_calls:
                    self._invites.popitem(last=False)
            return None
        if message.status is None or method != "INVITE" or message.status < 300:
            return None
        if message.status in (401, 407):  # an authentication challenge: the PBX answers it with a new INVITE
            stats.challenges += 1
            return None
        key = (call_id, number, message.status)
        if key in self._answered:
            stats.retransmissions += 1
            return None
        invite = self._invites.pop(call_id, None)  # a call's final answer: its INVITE is done with
        if not self._from_carrier(agent, invite, src, dst, packet.src_ip, packet.dst_ip):
            stats.not_carrier += 1
            return None
        self._answered[key] = None
        if len(self._answered) > self.max_calls:
            self._answered.popitem(last=False)
        stats.responses += 1
        return CarrierResponse.from_sip(message, packet.time, invite[0] if invite else None, self.numbers,
                                        src=src, dst=dst)

    # -- which side is the PBX --------------------------------------------------------------------
    def _learn(self, agent: object, src: str, dst: str, src_ip: str, dst_ip: str) -> None:
        sides = self._sides.get(agent)
        if sides is None:
            if len(self._sides) >= MAX_AGENTS:
                return
            self._sides[agent] = {src, dst}
            self._ips[agent] = {src_ip, dst_ip}
            return
        if len(sides) > 1 or (sides and not sides & {src, dst}):
            sides &= {src, dst}
        ips = self._ips[agent]
        if len(ips) > 1:
            ips &= {src_ip, dst_ip}

    def pbx_side(self, agent: object) -> tuple[set[str], set[str]] | None:
        """(ip:port, ip) sets that are the PBX, or None while that is not known."""
        if self.pbx_addresses:
            return ({a for a in self.pbx_addresses if ":" in a}, {a for a in self.pbx_addresses if ":" not in a})
        sides, ips = self._sides.get(agent, set()), self._ips.get(agent, set())
        if len(sides) == 1:
            return sides, set()
        if len(ips) == 1 and not sides:  # several SIP ports on one address
            return set(), ips
        return None

    def _from_carrier(self, agent: object, invite: tuple[InviteInfo, str, str] | None, src: str, dst: str,
                      src_ip: str, dst_ip: str) -> bool:
        side = self.pbx_side(agent)
        if side is None:
            return True
        endpoints, ips = side

        def is_pbx(endpoint: str, ip: str) -> bool:
            return endpoint in endpoints or ip in ips

        if invite is not None:
            return is_pbx(invite[1], invite[2])  # the PBX sent the INVITE: its answer is the carrier's
        return is_pbx(dst, dst_ip) and not is_pbx(src, src_ip)

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
            try:
                self.on_response(response)
            except Exception:
                log.exception("HEP: a carrier response could not be joined")

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
