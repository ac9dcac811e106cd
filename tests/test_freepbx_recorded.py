"""The FreePBX glue on a FreePBX-shaped Asterisk 22.10.1 dialplan (tests/fixtures/asterisk/freepbx, see its
MANIFEST): every trunk leg gets its SIP phrase and Call-ID, extension legs are skipped, a failover gives
one outcome per trunk leg, and without the glue a 603 Network Blocked has no phrase."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockradar.recordings import read_recording

FREEPBX = Path(__file__).parent / "fixtures" / "asterisk" / "freepbx"
CASES = sorted(FREEPBX.glob("*.truth.json"))
FIELDS = ("trunk", "caller_number", "callee_number", "caller_number_raw", "callee_number_raw", "sip_code",
          "sip_phrase", "answered", "call_id")


@pytest.mark.parametrize("truth_file", CASES, ids=[p.name.removesuffix(".truth.json") for p in CASES])
def test_freepbx_recordings(truth_file: Path) -> None:
    truth = json.loads(truth_file.read_text())
    recording = read_recording(FREEPBX / truth["file"])
    assert recording.stats["parse_errors"] == 0
    got = [{f: getattr(o, f) for f in FIELDS} for o in recording.outcomes]
    expected = [{f: e[f] for f in FIELDS} for e in truth.get("expected_outcomes") or []]
    assert got == expected


def test_the_glue_is_what_tells_603_network_blocked_from_603() -> None:
    with_glue = read_recording(FREEPBX / "02-603-network-blocked.ami").outcomes[0]
    without = read_recording(FREEPBX / "00-noglue-603-network-blocked.ami").outcomes[0]
    assert (with_glue.sip_code, with_glue.sip_phrase) == (603, "Network Blocked")
    assert (without.sip_code, without.sip_phrase) == (603, None)
