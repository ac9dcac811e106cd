"""A PBX's HEP side over loopback: ``HepSender`` sends HEPv3 datagrams over UDP as Asterisk's res_hep and
sofia's capture-server do, from a recording (``tests/fixtures/hep``) or built ones, with faults on demand.

* ``shifted(datagrams, delta)``: the same datagrams with their capture times moved by ``delta`` seconds
  (a recording replayed "now", next to an AMI/ESL stream moved the same way: ``testing.ami.shift_times``);
* ``HepSender(host, port).send(datagrams, gap=0.0, drop=..., duplicate=..., cut=...)``: in order, ``gap``
  seconds apart; the datagrams whose index is in ``drop`` are not sent, in ``duplicate`` sent twice (a
  retransmission), in ``cut`` sent with their last bytes missing (a lying length).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence

from blockradar.connectors.hep.wire import build_hep, parse_hep, read_records


def recording(data: bytes) -> list[bytes]:
    """The datagrams of a HEP recording file's bytes."""
    return list(read_records(data))


def shifted(datagrams: Iterable[bytes], delta: float) -> list[bytes]:
    """Each datagram rebuilt with its time moved by ``delta`` (every other chunk as it was)."""
    out = []
    for datagram in datagrams:
        p = parse_hep(datagram)
        out.append(build_hep(p.payload, src=(p.src_ip, p.src_port), dst=(p.dst_ip, p.dst_port), time=p.time + delta,
                             capture_id=p.capture_id or 0, auth_key=p.auth_key, correlation_id=p.correlation_id,
                             agent_name=p.agent_name))
    return out


def first_time(datagrams: Sequence[bytes]) -> float:
    return min(parse_hep(d).time for d in datagrams)


class HepSender:
    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sent = 0

    async def send(self, datagrams: Sequence[bytes], *, gap: float = 0.0, drop: Iterable[int] = (),
                   duplicate: Iterable[int] = (), cut: Iterable[int] = ()) -> int:
        dropped, twice, broken = set(drop), set(duplicate), set(cut)
        with socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_DGRAM) as s:
            for index, datagram in enumerate(datagrams):
                if index in dropped:
                    continue
                data = datagram[:-3] if index in broken else datagram
                for _ in range(2 if index in twice else 1):
                    s.sendto(data, self.address)
                    self.sent += 1
                if gap:
                    await asyncio.sleep(gap)
                elif index % 16 == 15:
                    await asyncio.sleep(0.002)  # let a receiver on this loop read: a UDP socket buffer is finite
        return self.sent
