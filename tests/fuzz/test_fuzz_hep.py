"""Fuzz of the HEP source (blockradar.connectors.hep): the HEPv3 parser on mutated and hand-broken datagrams
(truncated chunks, lengths that lie, huge and inflating payloads) and the SIP reader behind it. What must
hold: a datagram gives a HepPacket or a HepError, never another exception; nothing kept is larger than its
bound; the reader counts every datagram exactly once and never raises."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockradar.connectors.hep.sip import MAX_HEADERS, MAX_VALUE, SipError, parse_sip
from blockradar.connectors.hep.source import HepReader
from blockradar.connectors.hep.wire import HepError, build_hep, parse_hep, read_records, record
from blockradar.numbers import NumberPlan
from tests.fuzz.support import fuzz, mutated

INVITE = (b"INVITE sip:+12025550123@carrier.example;user=phone SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
          b"From: \"Sales\" <sip:+15557650001@pbx.example>;tag=a1\r\nTo: <sip:+12025550123@carrier.example>\r\n"
          b"Call-ID: fuzz-1@pbx\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
BLOCKED = (b"SIP/2.0 603 Network Blocked\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
           b"From: \"Sales\" <sip:+15557650001@pbx.example>;tag=a1\r\nTo: <sip:+12025550123@carrier.example>;tag=b2\r\n"
           b"Call-ID: fuzz-1@pbx\r\nCSeq: 1 INVITE\r\n"
           b"Reason: SIP;cause=603;text=\"Network Blocked\";location=LN;ppi=\"<sip:+15557650001@x>\"\r\n"
           b"Reason: Q.850;cause=21\r\nCall-Info: <https://redress.example/r?id=1>;purpose=jwscard\r\n"
           b"Content-Length: 0\r\n\r\n")
SEEDS = (build_hep(INVITE, src=("10.0.0.1", 5060), dst=("192.0.2.7", 5060), time=1.8e9, capture_id=7,
                   auth_key="k", correlation_id="fuzz-1@pbx"),
         build_hep(BLOCKED, src=("192.0.2.7", 5060), dst=("10.0.0.1", 5060), time=1.8e9 + 0.4, capture_id=7,
                   auth_key="k", correlation_id="fuzz-1@pbx"),
         build_hep(BLOCKED, src=("2001:db8::7", 5060), dst=("2001:db8::1", 5060), time=1.8e9, compress=True))
HEP_TOKENS = (b"HEP3", b"\x00\x00\x00\x0f", b"\x00\x00\x00\x10", b"\x00\x00\x00\x11", b"\xff\xff", b"\x00\x06",
              b"\x00\x00", b"SIP/2.0 ", b"\r\n", b"Reason: ", b"Call-Info: ", b"CSeq: 1 INVITE")


def check(packet) -> None:
    assert len(packet.payload) <= 65_535
    for text in (packet.auth_key, packet.correlation_id, packet.agent_name):
        assert text is None or len(text) <= 1024
    assert 0 <= packet.src_port <= 65535 and 0 <= packet.dst_port <= 65535 and 0 <= packet.ts_usec <= 999_999


@pytest.mark.timeout(60)
@fuzz(400)
@given(data=st.data(), seed=st.sampled_from(SEEDS))
def test_a_mutated_datagram_is_a_packet_or_a_hep_error(data, seed: bytes):
    damaged = data.draw(mutated(seed, tokens=HEP_TOKENS))
    try:
        packet = parse_hep(damaged)
    except HepError:
        return
    check(packet)
    try:
        message = parse_sip(packet.payload)
    except SipError:
        return
    assert sum(len(v) for v in message.headers.values()) <= MAX_HEADERS
    assert all(len(value) <= MAX_VALUE for values in message.headers.values() for value in values)


@pytest.mark.timeout(60)
@fuzz(200)
@given(datagrams=st.lists(st.one_of(st.sampled_from(SEEDS), st.binary(max_size=200)), max_size=30),
       key=st.sampled_from([None, "k", "other"]))
def test_the_reader_counts_every_datagram_and_never_raises(datagrams: list[bytes], key: str | None):
    reader = HepReader(NumberPlan(), auth_key=key)
    for datagram in datagrams:
        reader.feed(datagram)
    s = reader.stats
    assert s.datagrams == len(datagrams)
    assert s.bad + s.unauthorized + s.not_sip + s.sip_errors + s.invites + s.responses + s.retransmissions \
        <= s.datagrams


def test_lengths_that_lie_truncated_chunks_and_huge_payloads_are_refused():
    good = SEEDS[1]
    cases = {
        "short": good[:5],
        "bad magic": b"HEP2" + good[4:],
        "total too big": good[:4] + struct.pack("!H", len(good) + 10) + good[6:],
        "cut in a chunk": good[:4] + struct.pack("!H", len(good) - 3) + good[6:-3],
        "chunk shorter than its header": good[:6] + struct.pack("!HHH", 0, 15, 3) + good[12:],
        "chunk past the end": good[:6] + struct.pack("!HHH", 0, 15, 60_000) + good[12:],
        "stray bytes": good[:4] + struct.pack("!H", len(good) + 2) + good[6:] + b"\x00\x01",
        "address of 5 bytes": b"HEP3" + struct.pack("!H", 17) + struct.pack("!HHH", 0, 3, 11) + b"\x01" * 5,
        "port of 3 bytes": b"HEP3" + struct.pack("!H", 15) + struct.pack("!HHH", 0, 7, 9) + b"\x01" * 3,
    }
    for name, datagram in cases.items():
        with pytest.raises(HepError):
            parse_hep(datagram)
            pytest.fail(name)
    huge = build_hep(b"x" * 60_000, src=("10.0.0.1", 1), dst=("10.0.0.2", 2), time=1.0)
    with pytest.raises(HepError, match="max_payload 4096"):
        parse_hep(huge, max_payload=4096)
    bomb = build_hep(b"\x00" * 10_000_000, src=("10.0.0.1", 1), dst=("10.0.0.2", 2), time=1.0, compress=True)
    assert len(bomb) < 65_535  # a small datagram that inflates to 10 MB
    with pytest.raises(HepError, match="inflates past"):
        parse_hep(bomb)
    broken = b"HEP3" + struct.pack("!H", 6 + 6 + 5) + struct.pack("!HHH", 0, 16, 11) + b"notz!"
    with pytest.raises(HepError, match="does not inflate"):
        parse_hep(broken)
    # other vendors' chunks are skipped, not refused
    vendor = struct.pack("!HHH", 0x0bad, 15, 10) + b"ABCD"
    extended = good[:4] + struct.pack("!H", len(good) + len(vendor)) + good[6:] + vendor
    assert parse_hep(extended).payload == BLOCKED


def test_a_recording_file_that_is_cut_says_where():
    data = record(SEEDS[0]) + record(SEEDS[1])
    assert list(read_records(data)) == [SEEDS[0], SEEDS[1]]
    with pytest.raises(HepError, match="does not fit"):
        list(read_records(data[:-1]))
    with pytest.raises(HepError, match="too short"):
        list(read_records(data + b"\x00"))
    assert zlib.decompress(zlib.compress(BLOCKED)) == BLOCKED


def test_made_up_capture_agents_are_bounded():
    from blockradar.connectors.hep.source import MAX_AGENTS

    reader = HepReader(NumberPlan())
    for agent in range(10 * MAX_AGENTS):
        reader.feed(build_hep(INVITE.replace(b"fuzz-1", b"fuzz-%d" % agent), src=("10.0.0.1", 5060),
                              dst=("192.0.2.7", 5060), time=1.8e9, capture_id=agent))
    assert len(reader._sides) == MAX_AGENTS and reader.stats.invites == 10 * MAX_AGENTS
