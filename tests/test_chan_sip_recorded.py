"""chan_sip on a real Asterisk 18.26.4 (tests/fixtures/asterisk/chan_sip, see its MANIFEST): the glue gives the
SIP code and phrase that 18's Hangup lacks (no TechCause before 20.17/22.7), VICIdial-shaped Dials
(SIP/peer/number, options tTor) still give the dialled number, and without the glue a 608 is only cause 127."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockradar.recordings import read_recording
from blockradar.ruleset import load_ruleset

CHAN_SIP = Path(__file__).parent / "fixtures" / "asterisk" / "chan_sip"
CASES = sorted(CHAN_SIP.glob("*.truth.json"))
FIELDS = ("trunk", "caller_number", "callee_number", "sip_code", "sip_phrase", "answered", "call_id")


@pytest.mark.parametrize("truth_file", CASES, ids=[p.name.removesuffix(".truth.json") for p in CASES])
def test_chan_sip_recordings(truth_file: Path) -> None:
    truth = json.loads(truth_file.read_text())
    recording = read_recording(CHAN_SIP / truth["file"])
    assert recording.stats["parse_errors"] == 0
    (outcome,) = recording.outcomes
    expected = truth["expected_outcome"]
    assert {f: getattr(outcome, f) for f in FIELDS} == {f: expected[f] for f in FIELDS}
    legacy = read_recording(CHAN_SIP / "legacy" / truth["file"]).outcomes  # the legacy regex filters
    assert [(o.sip_code, o.sip_phrase, o.callee_number) for o in legacy] == [
        (outcome.sip_code, outcome.sip_phrase, outcome.callee_number)]


def test_without_the_glue_a_608_on_chan_sip_is_a_rejection_of_unknown_kind() -> None:
    (outcome,) = read_recording(CHAN_SIP / "07-sip-608-vicidial-stock-no-glue.ami").outcomes
    assert (outcome.sip_code, outcome.q850_cause) == (None, 127)
    assert load_ruleset().classify(outcome).category == "rejected_unknown"
