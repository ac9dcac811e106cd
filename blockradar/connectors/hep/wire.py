"""HEPv3 on the wire: one UDP datagram -> one ``HepPacket``, and the record file that keeps datagrams as
they came (``blockradar record`` of a HEP stream, ``replay``).

HEPv3 (sipcapture's "HEP3" framing, as Asterisk's ``res_hep.c`` and sofia-sip write it): the four bytes
``HEP3``, the total length (uint16, big-endian), then chunks of ``vendor`` (uint16), ``type`` (uint16),
``length`` (uint16, the 6-byte chunk header included) and the value. Vendor 0's types:

====  ======================  ====  ========================
1     IP family (uint8)       10    timestamp µs (uint32)
2     IP protocol (uint8)     11    protocol type (1 = SIP)
3/4   IPv4 source/dest        12    capture agent id (uint32)
5/6   IPv6 source/dest        14    auth key (text)
7/8   source/dest port        15    payload (the SIP message)
9     timestamp s (uint32)    16    payload, zlib-compressed
17    correlation id (text)   19    capture agent name (text)
====  ======================  ====  ========================

Everything is bounded and checked: a datagram that is not HEP3, whose lengths lie (a chunk shorter than
its header or running past the end, a total that is not the datagram's size) or whose payload (inflated
too) is larger than ``max_payload`` raises ``HepError`` with what was wrong; unknown chunks and other
vendors' chunks are skipped. Nothing here knows about SIP.

The record file: each record is a big-endian uint32 length followed by one datagram exactly as received.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"HEP3"
MAX_DATAGRAM = 65_535  # a UDP datagram
DEFAULT_MAX_PAYLOAD = 65_535
_CHUNK = struct.Struct("!HHH")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
PROTO_SIP = 1
_NUMBERS = {1: "ip_family", 2: "ip_proto", 7: "src_port", 8: "dst_port", 9: "ts_sec", 10: "ts_usec",
            11: "proto_type", 12: "capture_id"}
_TEXTS = {14: "auth_key", 17: "correlation_id", 19: "agent_name"}
_ADDRESSES = {3: "src_ip", 4: "dst_ip", 5: "src_ip", 6: "dst_ip"}


class HepError(ValueError):
    """A datagram that is not a well-formed HEPv3 packet (the message says why)."""


@dataclass(slots=True)
class HepPacket:
    src_ip: str = ""
    dst_ip: str = ""
    src_port: int = 0
    dst_port: int = 0
    ts_sec: int = 0
    ts_usec: int = 0
    ip_family: int = 0
    ip_proto: int = 0
    proto_type: int = 0  # 1: SIP
    capture_id: int | None = None
    auth_key: str | None = None
    correlation_id: str | None = None  # Asterisk: the SIP Call-ID, or the channel name (uuid_type = channel)
    agent_name: str | None = None
    payload: bytes = b""

    @property
    def time(self) -> float:
        return self.ts_sec + self.ts_usec / 1e6


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace").rstrip("\x00")


def parse_hep(datagram: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> HepPacket:
    """One HEPv3 datagram (see the module docstring); HepError when it is not one. The hot path of the HEP
    source: one pass over the chunks, each handled inline (bench: ``python -m bench``, HEP row)."""
    if len(datagram) < 6 or datagram[:4] != MAGIC:
        raise HepError("not HEP3 (bad magic)" if len(datagram) >= 4 else "too short for a HEP3 header")
    end = len(datagram)
    total = _U16.unpack_from(datagram, 4)[0]
    if total != end:
        raise HepError(f"total length {total} but the datagram has {end} bytes")
    packet = HepPacket()
    unpack = _CHUNK.unpack_from
    at = 6
    while at < end:
        if end - at < 6:
            raise HepError(f"{end - at} stray byte(s) after the last chunk")
        vendor, kind, length = unpack(datagram, at)
        if length < 6 or at + length > end:
            raise HepError(f"chunk type {kind} at byte {at}: length {length} does not fit")
        start, at = at + 6, at + length
        if vendor:
            continue
        size = length - 6
        if kind == 15:
            if size > max_payload:
                raise HepError(f"payload of {size} bytes (max_payload {max_payload})")
            packet.payload = datagram[start:at]
        elif kind in _NUMBERS:
            if size not in (1, 2, 4):
                raise HepError(f"number chunk type {kind} of {size} bytes")
            number = int.from_bytes(datagram[start:at], "big")
            setattr(packet, _NUMBERS[kind], min(number, 999_999) if kind == 10 else number)
        elif kind in _ADDRESSES:
            if size not in (4, 16):
                raise HepError(f"address chunk type {kind} of {size} bytes")
            address = socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, datagram[start:at])
            setattr(packet, _ADDRESSES[kind], address)
        elif kind in _TEXTS:
            if size > 1024:
                raise HepError(f"text chunk type {kind} of {size} bytes")
            setattr(packet, _TEXTS[kind], _text(datagram[start:at]))
        elif kind == 16:
            packet.payload = _inflate(datagram[start:at], max_payload)
    return packet


def _inflate(value: bytes, max_payload: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(value, max_payload + 1)
    except zlib.error as exc:
        raise HepError(f"compressed payload does not inflate ({exc})") from None
    if len(data) > max_payload or inflater.unconsumed_tail:
        raise HepError(f"compressed payload inflates past max_payload {max_payload}")
    return data


# -- building (tests, the emulator) -------------------------------------------------------------------
def build_hep(payload: bytes, *, src: tuple[str, int], dst: tuple[str, int], time: float, capture_id: int = 0,
              auth_key: str | None = None, correlation_id: str | None = None, agent_name: str | None = None,
              compress: bool = False) -> bytes:
    """A HEPv3 datagram as Asterisk's res_hep writes one (chunk order and sizes)."""
    src_ip, dst_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    six = src_ip.version == 6
    sec = int(time)
    chunks = [_chunk(1, bytes([10 if six else 2])), _chunk(2, bytes([17])), _chunk(7, _U16.pack(src[1])),
              _chunk(8, _U16.pack(dst[1])), _chunk(9, _U32.pack(sec)),
              _chunk(10, _U32.pack(min(round((time - sec) * 1e6), 999_999))),
              _chunk(11, bytes([PROTO_SIP])), _chunk(12, _U32.pack(capture_id)),
              _chunk(5 if six else 3, src_ip.packed), _chunk(6 if six else 4, dst_ip.packed)]
    if auth_key is not None:
        chunks.append(_chunk(14, auth_key.encode()))
    if agent_name is not None:
        chunks.append(_chunk(19, agent_name.encode()))
    if correlation_id is not None:
        chunks.append(_chunk(17, correlation_id.encode()))
    chunks.append(_chunk(16, zlib.compress(payload)) if compress else _chunk(15, payload))
    body = b"".join(chunks)
    return MAGIC + _U16.pack(6 + len(body)) + body


def _chunk(kind: int, value: bytes) -> bytes:
    return _CHUNK.pack(0, kind, 6 + len(value)) + value


# -- the record file ----------------------------------------------------------------------------------
def record(datagram: bytes) -> bytes:
    """One record of a HEP recording: the length (uint32, big-endian), then the datagram as received."""
    return _U32.pack(len(datagram)) + datagram


def read_records(data: bytes) -> Iterator[bytes]:
    """The datagrams of a HEP recording; HepError at a record that runs past the end or is too large."""
    at = 0
    while at < len(data):
        if len(data) - at < 4:
            raise HepError(f"record at byte {at}: {len(data) - at} byte(s), too short for a length")
        size = _U32.unpack_from(data, at)[0]
        if size > MAX_DATAGRAM or at + 4 + size > len(data):
            raise HepError(f"record at byte {at}: length {size} does not fit")
        yield data[at + 4 : at + 4 + size]
        at += 4 + size


def looks_like_hep_recording(head: bytes) -> bool:
    """Whether a file starts like a HEP recording (a plausible length, then HEP3)."""
    return len(head) >= 8 and head[4:8] == MAGIC and 6 <= _U32.unpack_from(head, 0)[0] <= MAX_DATAGRAM
