"""HEP source throughput: the lab's real HEP datagrams of a plain Asterisk (tests/fixtures/hep, 30 calls,
138 datagrams), copied into ``calls`` calls with their own Call-IDs and dialled numbers, through the reader
(HEPv3, SIP, the carrier-side check) and the join with the PBX outcomes, in-process.

The figure is the cost per call beside the AMI connector's cost per call measured in the same run: HEP
runs on the same event loop, so ``hep_cost_vs_ami`` says how much work per call turning HEP on adds
(0.5: half of what reading the call from AMI costs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from blockradar.connectors.hep.join import HepJoin
from blockradar.connectors.hep.source import HepReader
from blockradar.connectors.hep.wire import build_hep, parse_hep, read_records
from blockradar.numbers import NumberPlan
from blockradar.outcome import CallOutcome

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hep" / "asterisk" / "ast22-hep-mixed.hep"


def build(calls: int) -> tuple[list[bytes], list[CallOutcome], int]:
    """At least ``calls`` calls' datagrams (whole copies of the fixture's 30, with new Call-IDs and numbers),
    one PBX outcome per failed call as plain Asterisk reports it (no Call-ID: the join goes by dialled
    number), and how many calls that is."""
    packets = [parse_hep(d) for d in read_records(FIXTURE.read_bytes())]
    call_ids = list(dict.fromkeys(p.payload.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0] for p in packets))
    datagrams: list[bytes] = []
    outcomes: list[CallOutcome] = []
    copy = 0
    while copy * len(call_ids) < calls:
        for n, call_id in enumerate(call_ids):
            new_id = b"%s-%d" % (call_id, copy)
            number = b"+1555%07d" % (copy * len(call_ids) + n)
            final = None
            for packet in packets:
                if call_id not in packet.payload:
                    continue
                payload = packet.payload.replace(call_id, new_id)
                payload = payload.replace(b"+155515000%02d" % (n + 1), number) if n < 99 else payload
                datagrams.append(build_hep(payload, src=(packet.src_ip, packet.src_port),
                                           dst=(packet.dst_ip, packet.dst_port), time=packet.time + copy * 120,
                                           capture_id=packet.capture_id or 0, auth_key=packet.auth_key,
                                           correlation_id=new_id.decode(), agent_name=packet.agent_name))
                if payload.startswith(b"SIP/2.0 6"):
                    final = int(payload[8:11]), packet.time + copy * 120
            if final is not None:
                outcomes.append(CallOutcome(pbx="asterisk", connector="pbx1", call_id=new_id.decode(),
                                            ended_at=final[1] + 0.003, callee_number=number.decode(),
                                            trunk="carrier-a", sip_code=final[0]))
        copy += 1
    return datagrams, outcomes, copy * len(call_ids)


def measure(calls: int, repeats: int, progress: Callable[[str], None]) -> dict[str, float]:
    datagrams, outcomes, built = build(calls)
    rates: list[float] = []
    joined = 0
    for i in range(repeats):
        reader = HepReader(NumberPlan(), auth_key="lab-hep-key-15")
        out: list[CallOutcome] = []
        join = HepJoin(out.append)
        started = time.perf_counter()
        at = 0
        for datagram in datagrams:
            response = reader.feed(datagram)
            if response is not None:
                join.add_response(response, response.at)
                while at < len(outcomes) and outcomes[at].ended_at <= response.at + 0.01:  # the PBX reports it
                    join.add_outcome(outcomes[at], outcomes[at].ended_at or 0.0)
                    at += 1
        for outcome in outcomes[at:]:
            join.add_outcome(outcome, outcome.ended_at or 0.0)
        elapsed = time.perf_counter() - started
        rates.append(len(datagrams) / elapsed)
        joined = join.stats.joined_by_number
        progress(f"hep: {len(datagrams):,} datagrams in {elapsed * 1000:.0f} ms ({rates[-1]:,.0f}/s), "
                 f"{joined:,} of {len(outcomes):,} failed calls joined (run {i + 1}/{repeats})")
    return {"rates": rates, "datagrams": len(datagrams), "calls": built, "joined": joined,  # type: ignore[dict-item]
            "failed_calls": len(outcomes)}
