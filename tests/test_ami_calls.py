"""AmiCallTracker: correlation, glue levels, deduplication and bounds, on events shaped as Asterisk
22 writes them (header names and values as in tests/fixtures/asterisk)."""

from __future__ import annotations

import pytest

from blockradar.connectors.ami_calls import AmiCallTracker, parse_glue, uniqueid_epoch, wall_time_utc

LEG = "PJSIP/carrier-00000007"
UID = "1795458867.23"


def dial_begin(uid: str = UID, channel: str = LEG) -> dict[str, str]:
    return {
        "Event": "DialBegin",
        "Channel": "Local/+15551230008@outbound-00000007;2",
        "CallerIDNum": "+15557654321",
        "CallerIDName": "Acme Sales",
        "Uniqueid": "1795458867.22",
        "Linkedid": "1795458867.21",
        "DestChannel": channel,
        "DestCallerIDNum": "+15551230008",
        "DestConnectedLineNum": "+15557654321",
        "DestConnectedLineName": "Acme Sales",
        "DestUniqueid": uid,
        "DestLinkedid": "1795458867.21",
        "DialString": "+15551230008@carrier",
    }


def dial_end(status: str, uid: str = UID) -> dict[str, str]:
    return {"Event": "DialEnd", "DestChannel": LEG, "DestUniqueid": uid, "DialStatus": status}


def hangup(uid: str = UID, channel: str = LEG, **extra: str) -> dict[str, str]:
    event = {
        "Event": "Hangup",
        "Channel": channel,
        "CallerIDNum": "+15551230008",
        "ConnectedLineNum": "+15557654321",
        "ConnectedLineName": "Acme Sales",
        "Uniqueid": uid,
        "Linkedid": "1795458867.21",
        "Cause": "19",
        "Cause-txt": "User alerting, no answer",
        "TechCause": "480",
    }
    event.update(extra)
    return event


def test_plain_leg() -> None:
    tracker = AmiCallTracker(connector="pbx1")
    assert tracker.feed(dial_begin(), 100.0) is None
    assert tracker.feed(dial_end("NOANSWER"), 101.0) is None
    outcome = tracker.feed(hangup(), 101.5)
    assert outcome is not None
    assert (outcome.connector, outcome.call_id, outcome.trunk) == ("pbx1", UID, "carrier")
    assert (outcome.caller_number, outcome.callee_number) == ("+15557654321", "+15551230008")
    assert (outcome.sip_code, outcome.sip_phrase, outcome.q850_cause) == (480, None, 19)
    assert (outcome.started_at, outcome.ended_at, outcome.answered) == (100.0, 101.5, False)
    assert tracker.open_legs == 0


def test_hangup_before_dialbegin_is_linked_later() -> None:
    """Order across channel topics is not guaranteed: correlate by Uniqueid, not arrival order."""
    tracker = AmiCallTracker()
    assert tracker.feed(hangup(), 5.0) is None
    outcome = tracker.feed(dial_begin(), 4.0)
    assert outcome is not None and outcome.sip_code == 480 and outcome.ended_at == 5.0


def test_non_trunk_channels_are_ignored() -> None:
    tracker = AmiCallTracker(trunks=frozenset({"carrier"}))
    assert tracker.feed(dial_begin(uid="9.1", channel="PJSIP/alice-00000001"), 1.0) is None
    assert tracker.feed(hangup(uid="9.1", channel="PJSIP/alice-00000001"), 2.0) is None
    assert tracker.feed(dial_begin(uid="9.2", channel="Local/100@internal-0001;1"), 1.0) is None
    assert tracker.open_legs == 0


@pytest.mark.parametrize(
    ("channel", "trunk"),
    [
        ("PJSIP/carrier-0000000a", "carrier"),
        ("SIP/my-trunk-00000001", "my-trunk"),
        ("IAX2/peer-1234", "peer"),
        ("DAHDI/1-1", None),
        ("Local/+1555@outbound-00000000;2", None),
    ],
)
def test_trunk_names(channel: str, trunk: str | None) -> None:
    assert AmiCallTracker().trunk_of(channel) == trunk


def test_answered_leg_talk_time() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 10.0)
    tracker.feed({"Event": "Newstate", "Channel": LEG, "Uniqueid": UID, "ChannelStateDesc": "Up"}, 10.3)
    tracker.feed(dial_end("ANSWER"), 10.4)
    outcome = tracker.feed(hangup(Cause="16", **{"Cause-txt": "Normal Clearing", "TechCause": ""}), 70.3)
    assert outcome is not None and outcome.answered
    assert outcome.talk_s == pytest.approx(60.0)
    assert outcome.sip_code is None and outcome.q850_cause == 16


def test_glue_from_varset_gives_phrase_and_callid() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 1.0)
    tracker.feed({"Event": "VarSet", "Channel": LEG, "Uniqueid": UID, "Variable": "SIP_CALLID", "Value": "abc@h"}, 1.1)
    tracker.feed(
        {
            "Event": "VarSet",
            "Channel": LEG,
            "Uniqueid": UID,
            "Variable": "SIP_TECHCAUSE",
            "Value": "SIP 480 Temporarily Unavailable",
        },
        1.2,
    )
    outcome = tracker.feed(hangup(), 1.3)
    assert outcome is not None
    assert (outcome.call_id, outcome.sip_code, outcome.sip_phrase) == ("abc@h", 480, "Temporarily Unavailable")


def test_glue_from_user_event_naming_the_dialed_channel() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 1.0)
    tracker.feed(
        {
            "Event": "UserEvent",
            "UserEvent": "SipCallOutcome",
            "Uniqueid": "1795458867.22",
            "DialedChannel": LEG,
            "TechCause": "SIP 480 Temporarily Unavailable",
        },
        1.1,
    )
    outcome = tracker.feed(hangup(), 1.2)
    assert outcome is not None and outcome.sip_phrase == "Temporarily Unavailable"


def test_older_asterisk_with_glue_but_no_techcause() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 1.0)
    outcome = tracker.feed(hangup(TechCause="", **{"ChanVariable(SIP_TECHCAUSE)": "SIP 608 Rejected"}), 2.0)
    assert outcome is not None and (outcome.sip_code, outcome.sip_phrase) == (608, "Rejected")


def test_older_asterisk_with_neither() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 1.0)
    event = hangup(Cause="21", **{"Cause-txt": "Call Rejected"})
    del event["TechCause"]
    outcome = tracker.feed(event, 2.0)
    assert outcome is not None
    assert (outcome.sip_code, outcome.sip_phrase, outcome.q850_cause, outcome.pbx_cause) == (
        None,
        None,
        21,
        "Call Rejected",
    )


def test_glue_below_300_is_no_failure_response() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 1.0)
    event = hangup(Cause="0", **{"Cause-txt": "Unknown", "ChanVariable(SIP_TECHCAUSE)": "SIP 100 Trying"})
    del event["TechCause"]
    outcome = tracker.feed(event, 16.0)
    assert outcome is not None
    assert (outcome.sip_code, outcome.sip_phrase, outcome.q850_cause) == (None, None, None)


def test_glue_phrase_of_another_code_is_not_used() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 1.0)
    outcome = tracker.feed(hangup(**{"ChanVariable(SIP_TECHCAUSE)": "SIP 603 Decline"}), 2.0)
    assert outcome is not None and (outcome.sip_code, outcome.sip_phrase) == (480, None)


def test_duplicates_after_a_reconnect_replay_are_dropped() -> None:
    tracker = AmiCallTracker()
    tracker.feed(dial_begin(), 1.0)
    assert tracker.feed(hangup(), 2.0) is not None
    assert tracker.feed(dial_begin(), 1.0) is None
    assert tracker.feed(hangup(), 2.0) is None
    assert tracker.stats.duplicates == 2
    assert tracker.open_legs == 0


def test_ttl_expiry_is_counted() -> None:
    tracker = AmiCallTracker(ttl_s=60.0)
    tracker.feed(dial_begin(uid="1.1"), 0.0)
    tracker.feed(dial_begin(uid="1.2"), 50.0)
    assert tracker.expire(100.0) == 1
    assert tracker.stats.expired == 1 and tracker.open_legs == 1


def test_state_is_bounded_whatever_the_stream_does() -> None:
    tracker = AmiCallTracker(max_legs=100, max_unlinked=10, max_emitted=50)
    for i in range(1000):
        tracker.feed(dial_begin(uid=f"1.{i}", channel=f"PJSIP/carrier-{i:08x}"), float(i))
        tracker.feed(hangup(uid=f"2.{i}", channel=f"PJSIP/carrier-{i + 5000:08x}"), float(i))
    assert tracker.open_legs == 100 and tracker.stats.evicted == 900
    assert len(tracker._unlinked) == 10 and tracker.stats.unlinked_dropped == 990
    for i in range(900, 1000):
        assert tracker.feed(hangup(uid=f"1.{i}", channel=f"PJSIP/carrier-{i:08x}"), 2000.0) is not None
    assert len(tracker._emitted) == 50 and len(tracker._by_channel) == 0


def test_malformed_event_values_never_raise() -> None:
    tracker = AmiCallTracker()
    assert tracker.feed({"Event": "Hangup"}, None) is None
    assert tracker.feed({"Event": "DialBegin", "DestChannel": LEG}, None) is None
    assert tracker.feed({"Event": "DialEnd"}, None) is None
    assert tracker.feed({"Event": "UserEvent", "UserEvent": "SipCallOutcome"}, None) is None
    tracker.feed(dial_begin(), None)
    outcome = tracker.feed(hangup(Cause="x", TechCause="99999999"), None)
    assert outcome is not None and outcome.sip_code is None and outcome.q850_cause is None
    assert outcome.ended_at is None and outcome.talk_s is None


def test_helpers() -> None:
    assert parse_glue("SIP 603 Network Blocked") == (603, "Network Blocked")
    assert parse_glue("SIP 200 OK") == (200, "OK")
    assert parse_glue("SIP 608") == (608, None)
    assert parse_glue("IAX2 something") == (None, None)
    assert parse_glue("") == (None, None)
    assert uniqueid_epoch("1795458835.2") == 1795458835.0
    assert uniqueid_epoch("pbx-east-1795458835.22") == 1795458835.0
    assert uniqueid_epoch("abc") is None
    assert wall_time_utc(b"2026-11-23 18:33:55") == 1795458835.0
    assert wall_time_utc(b"") is None and wall_time_utc(b"garbage") is None


def test_a_leg_already_dialling_when_the_session_began_is_rebuilt_from_its_hangup() -> None:
    """Live: after a reconnect, a call whose DialBegin went by before the login vanished without a trace."""
    tracker = AmiCallTracker()
    tracker.session_started(1795458900.0)  # the (re)login, 33 s after the leg was created
    outcome = tracker.feed(hangup(ChannelStateDesc="Down", TechCause="608", Cause="127",
                                  **{"ChanVariable(SIP_TECHCAUSE)": "SIP 608 Rejected",
                                     "ChanVariable(SIP_CALLID)": "abc@carrier"}), 1795458901.0)
    assert outcome is not None
    assert (outcome.trunk, outcome.caller_number, outcome.callee_number) == ("carrier", "+15557654321",
                                                                            "+15551230008")
    assert (outcome.sip_code, outcome.sip_phrase, outcome.call_id) == (608, "Rejected", "abc@carrier")
    assert outcome.started_at == 1795458867.0 and outcome.talk_s is None and not outcome.answered
    assert tracker.stats.in_progress_recovered == 1


def test_a_leg_rebuilt_from_its_hangup_keeps_the_glue_its_hangup_handler_sent_before() -> None:
    """Live lab (Asterisk 22, kill -9 of the daemon): 10 calls rebuilt after the login lost their SIP phrase
    and Call-ID: the glue's VarSets (the leg's hangup handler, just before its Hangup) were dropped for a
    leg not seen begin, and a 603 Network Blocked would read as a plain decline."""
    tracker = AmiCallTracker()
    tracker.session_started(1795458900.0)
    varset = {"Event": "VarSet", "Channel": LEG, "Uniqueid": UID}
    assert tracker.feed({**varset, "Variable": "SIP_CALLID", "Value": "abc@carrier"}, 1795458901.0) is None
    assert tracker.feed({**varset, "Variable": "SIP_TECHCAUSE", "Value": "SIP 603 Network Blocked"},
                        1795458901.0) is None
    assert tracker.feed({**varset, "Uniqueid": "1795458950.40", "Variable": "SIP_CALLID", "Value": "x"},
                        1795458951.0) is None  # born after the login: its DialBegin will come, nothing kept
    outcome = tracker.feed(hangup(TechCause="603", Cause="21"), 1795458901.0)
    assert outcome is not None
    assert (outcome.sip_code, outcome.sip_phrase, outcome.call_id) == (603, "Network Blocked", "abc@carrier")
    assert tracker.stats.in_progress_recovered == 1
    assert tracker._early_glue == {}  # taken by the Hangup; the one born after the login was never kept


def test_only_outbound_legs_from_before_the_session_are_rebuilt() -> None:
    tracker = AmiCallTracker()
    tracker.session_started(1795458900.0)
    inbound = hangup(uid="1795458867.30", Linkedid="1795458867.30")  # a carrier's call is its own first channel
    assert tracker.feed(inbound, 1795458901.0) is None
    after = hangup(uid="1795458950.40", Linkedid="1795458950.39")  # created after the login: needs its DialBegin
    assert tracker.feed(after, 1795458960.0) is None
    assert AmiCallTracker().feed(hangup(), 1795458901.0) is None  # no session known (a recording): unchanged
    assert tracker.stats.in_progress_recovered == 0
