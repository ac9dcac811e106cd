"""Leg selection on real Asterisk 22.10.1 recordings (tests/fixtures/asterisk/legs, see its MANIFEST):
a Dial to the trunk, an Originate straight into it, phones calling phones, an inbound carrier call
ringing a phone, and numbers in national form. Only the outbound carrier attempts count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockradar.connectors.legs import LegVerdict
from blockradar.recordings import ReadSettings, read_recording

LEGS = Path(__file__).parent / "fixtures" / "asterisk" / "legs"
CASES = sorted(LEGS.glob("*.truth.json"))


@pytest.mark.parametrize("truth_file", CASES, ids=[p.name.removesuffix(".truth.json") for p in CASES])
def test_only_outbound_carrier_attempts_count(truth_file: Path) -> None:
    truth = json.loads(truth_file.read_text())
    verdicts: list[LegVerdict] = []
    recording = read_recording(LEGS / truth["file"], settings=ReadSettings(on_leg=verdicts.append))
    assert recording.stats["parse_errors"] == 0
    if not truth["count_as_outbound_carrier_attempt"]:
        assert recording.outcomes == []
        assert verdicts and all(v.reason == "internal_number" for v in verdicts)  # said why
        return
    expected = truth["expected_outcome"]
    (outcome,) = recording.outcomes
    assert outcome.trunk == expected["trunk"]
    assert (outcome.caller_number, outcome.callee_number) == (expected["caller_number"], expected["callee_number"])
    assert (outcome.sip_code, outcome.answered) == (expected["sip_code"], expected["answered"])
    assert outcome.sip_phrase == expected["sip_phrase"]
    assert [v.counted for v in verdicts] == [True]


def test_the_cases_are_all_there() -> None:
    kinds = {json.loads(p.read_text())["case"] for p in CASES}
    assert kinds == {1, 2, 3, 4, 5}
