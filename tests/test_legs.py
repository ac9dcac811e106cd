"""Leg selection: only outbound carrier attempts count, on both PBXes, and every skip says why."""

from __future__ import annotations

import pytest

from blockradar.connectors.ami_calls import AmiCallTracker
from blockradar.connectors.esl_calls import EslCallNormalizer
from blockradar.connectors.esl_wire import DictEvent
from blockradar.connectors.legs import INBOUND, INTERNAL_NUMBER, NO_GATEWAY, NOT_A_TRUNK, LegSelector, LegVerdict
from blockradar.numbers import NumberPlan
from tests.test_ami_calls import dial_begin, hangup


@pytest.mark.parametrize(
    ("trunks", "trunk", "callee", "reason"),
    [
        (None, "carrier", "+15551230008", None),  # an external number: an outbound attempt
        (None, "carrier", "5551230008", None),  # in national form too
        (None, "carrier", "011442079460000", None),  # international, NANP prefix
        (None, "405", "405", INTERNAL_NUMBER),  # a phone ringing a phone
        (None, "alice", "alice", INTERNAL_NUMBER),  # a SIP user name
        (None, "carrier", None, None),  # dialled number unknown: counted (a block must not be missed)
        (("carrier-*",), "carrier-a", "405", None),  # explicit trunks: the name decides, not the number
        (("carrier-*",), "405", "+15551230008", NOT_A_TRUNK),
        (("twilio", "bandwidth?"), "bandwidth2", "+15551230008", None),
        (("twilio",), "twilio-2", "+15551230008", NOT_A_TRUNK),  # a name is whole, not a prefix
    ],
)
def test_selector(trunks, trunk, callee, reason) -> None:
    selector = LegSelector(trunks, NumberPlan("US"))
    verdict = selector.judge(trunk, callee)
    assert verdict.reason == reason
    assert sum(selector.skipped.values()) == (0 if reason is None else 1)
    assert verdict.explain().startswith("counted" if reason is None else "skipped")


PHONE = "PJSIP/406-00000003"


def test_asterisk_a_phone_calling_a_phone_is_not_an_outbound_attempt() -> None:
    """Live report: dialling extension 406 produced "TRUNK 406"."""
    seen: list[LegVerdict] = []
    tracker = AmiCallTracker(on_leg=seen.append)
    begin = dial_begin(uid="1795458900.5", channel=PHONE) | {"DestCallerIDNum": "406", "DialString": "406"}
    assert tracker.feed(begin, 1.0) is None
    assert tracker.feed(hangup(uid="1795458900.5", channel=PHONE, CallerIDNum="406", TechCause="486"), 2.0) is None
    assert [(v.trunk, v.callee, v.reason) for v in seen] == [("406", "406", INTERNAL_NUMBER)]
    assert tracker.legs.skipped[INTERNAL_NUMBER] == 1 and tracker.stats.outcomes == 0
    outbound = tracker.feed(dial_begin(), 3.0) or tracker.feed(hangup(), 4.0)  # the carrier leg still counts
    assert outbound is not None and outbound.trunk == "carrier"


def test_asterisk_explicit_trunks_with_globs() -> None:
    tracker = AmiCallTracker(trunks=("carrier*",))
    assert tracker.feed(dial_begin(), 1.0) is None
    assert tracker.feed(hangup(), 2.0) is not None
    assert tracker.feed(dial_begin(uid="1795458900.6", channel=PHONE), 3.0) is None
    assert tracker.feed(hangup(uid="1795458900.6", channel=PHONE), 4.0) is None
    assert tracker.legs.skipped[NOT_A_TRUNK] == 1


def esl_hangup(**values: str) -> DictEvent:
    event = {
        "Event-Name": "CHANNEL_HANGUP_COMPLETE",
        "Unique-ID": "6d3c5d8e-0000-4000-8000-000000000001",
        "Call-Direction": "outbound",
        "Channel-Name": "sofia/external/+15551230008@carrier.example.net",
        "Caller-Destination-Number": "+15551230008",
        "Caller-Orig-Caller-ID-Number": "+15557654321",
        "variable_sip_gateway_name": "carrier-a",
        "variable_sip_term_status": "608",
        "Event-Date-Timestamp": "1795458900000000",
    }
    event.update(values)
    return DictEvent({k: v for k, v in event.items() if v})


@pytest.mark.parametrize(
    ("settings", "event", "trunk", "reason"),
    [
        ({}, {}, "carrier-a", None),  # through a gateway: a trunk leg
        ({}, {"variable_sip_gateway_name": "", "Channel-Name": "sofia/internal/406@10.0.0.5",
              "Caller-Destination-Number": "406"}, None, NO_GATEWAY),  # a registered phone
        ({}, {"Call-Direction": "inbound"}, None, INBOUND),  # the caller's side / an inbound call
        ({}, {"Channel-Name": "loopback/+15551230008-a"}, None, INBOUND),
        ({"gateways": ["carrier-*"]}, {}, "carrier-a", None),
        ({"gateways": ["twilio"]}, {}, "carrier-a", NOT_A_TRUNK),
        ({"gateways_only": False}, {"variable_sip_gateway_name": ""}, None, None),  # by the number
        ({"gateways_only": False}, {"variable_sip_gateway_name": "", "Caller-Destination-Number": "406"}, None,
         INTERNAL_NUMBER),
    ],
)
def test_freeswitch_leg_selection(settings, event, trunk, reason) -> None:
    seen: list[LegVerdict] = []
    normalizer = EslCallNormalizer("fs1", on_leg=seen.append, **settings)
    outcome = normalizer.on_event(esl_hangup(**event))
    assert [(v.trunk, v.reason) for v in seen] == [(trunk, reason)]
    assert (outcome is None) == (reason is not None)
    if reason is not None:
        assert normalizer.legs.skipped[reason] == 1 and normalizer.stats.legs_ignored == 1


def test_freeswitch_gateway_uuids_shown_by_name() -> None:
    """FusionPBX names every gateway by its UUID: alerts would read "via 0f3c...". A map names them."""
    uuid = "0F3C9A2E-7B1D-4C55-9E3A-2B7D6C1A9F00"
    names = {uuid: "carrier-a"}  # as an operator may paste it, upper case: matched whatever the case
    normalizer = EslCallNormalizer("fs1", gateway_names=names, gateways=["carrier-*"])
    outcome = normalizer.on_event(esl_hangup(variable_sip_gateway_name=uuid.lower()))
    assert outcome is not None and outcome.trunk == "carrier-a"
    other = normalizer.on_event(esl_hangup(variable_sip_gateway_name="11111111-2222-4333-8444-555555555555",
                                           **{"Unique-ID": "6d3c5d8e-0000-4000-8000-000000000002"}))
    assert other is None and normalizer.legs.skipped[NOT_A_TRUNK] == 1  # unnamed: not in gateways
