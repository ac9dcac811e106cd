"""Leg selection and the presented caller on real FreeSWITCH 1.11.1 recordings (tests/fixtures/freeswitch/legs,
see its MANIFEST): a phone calling out through a gateway, a dialer's originate, phones calling phones, an
inbound carrier call ringing a phone, numbers in national form. Only the carrier legs count, with the
calling number the carrier saw in From."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockradar.connectors.legs import LegVerdict
from blockradar.recordings import ReadSettings, read_recording

LEGS = Path(__file__).parent / "fixtures" / "freeswitch" / "legs"
CASES = sorted(LEGS.glob("*.truth.json"))


@pytest.mark.parametrize("truth_file", CASES, ids=[p.name.removesuffix(".truth.json") for p in CASES])
def test_only_carrier_legs_count_with_the_caller_the_carrier_saw(truth_file: Path) -> None:
    truth = json.loads(truth_file.read_text())
    expected = truth["expected"]
    verdicts: list[LegVerdict] = []
    recording = read_recording(LEGS / truth["fixture"], settings=ReadSettings(on_leg=verdicts.append))
    assert len(recording.outcomes) == expected["counted_legs"]
    assert sum(v.counted for v in verdicts) == expected["counted_legs"]
    assert all(v.reason in (None, "no_gateway", "not_outbound") for v in verdicts)  # each skip says why
    if not expected["counted_legs"]:
        return
    (outcome,) = recording.outcomes
    assert outcome.trunk == "carrier-a"
    assert (outcome.caller_number, outcome.callee_number) == (expected["caller_e164"], expected["callee_e164"])
    final = truth["far_end"]["final_response"]["code"]
    if final == 200:  # answered: no failure code (08: FreeSWITCH hung up first and kept no term status)
        assert outcome.answered and outcome.sip_code in (None, 200)
    else:
        assert not outcome.answered and outcome.sip_code == final


def test_the_cases_are_all_there() -> None:
    assert {int(json.loads(p.read_text())["case"]) for p in CASES} == set(range(1, 9))
