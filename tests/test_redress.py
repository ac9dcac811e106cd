"""The redress parser: 603+ Reason AVPs and 608 Call-Info jwscard; good, encoded, malformed, hostile."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockradar.redress import (
    has_analytics_avp,
    parse_reason,
    redress_from,
    redress_from_call_info,
    redress_from_reason,
)

GOOD = [
    # (id, header, expected fields, conformant)
    ("bandwidth example", 'SIP;cause=603;text="v=analytics1;url=https://example.com;id=12345";location=LN',
     dict(url="https://example.com", id="12345", location="LN"), True),
    ("all contacts", 'SIP;cause=603;text="v=analytics1;url=https://r.example/x;tel=+15551234567;'
                     'email=redress@carrier.example;id=AB_c-1";location=TN',
     dict(url="https://r.example/x", tel="+15551234567", email="redress@carrier.example", id="AB_c-1",
          location="TN"), True),
    ("Q.850 form", 'Q.850;cause=21;text="v=analytics1;url=https://example.com/redress";location=LN',
     dict(url="https://example.com/redress", location="LN"), True),
    ("telnyx RLN", 'SIP;cause=603;text="v=analytics1;url=https://example.com";location=RLN',
     dict(url="https://example.com", location="RLN"), True),
    ("FreeSWITCH url-encoded (fixture 15)",
     "SIP%3Bcause%3D603%3Btext%3D%22v%3Danalytics1%3Burl%3Dhttps%3A//analytics.example.net/redress%22"
     "%3Blocation%3DTN",
     dict(url="https://analytics.example.net/redress", location="TN"), True),
    ("AVPs as separate parameters", 'SIP;cause=603;text="Network Blocked";v=analytics1;url=https://x.example/r',
     dict(url="https://x.example/r"), False),
    ("tel only", 'SIP;cause=603;text="v=analytics1;tel=+18005550100"', dict(tel="+18005550100"), True),
    ("http url is not conformant", 'SIP;cause=603;text="v=analytics1;url=http://x.example"',
     dict(url="http://x.example"), False),
    ("id too long", 'SIP;cause=603;text="v=analytics1;url=https://x.example;id=' + "a" * 65 + '"',
     dict(url="https://x.example", id="a" * 65), False),
    ("wrong cause", 'SIP;cause=486;text="v=analytics1;url=https://x.example"', dict(url="https://x.example"), False),
    ("AVP without contacts", 'SIP;cause=603;text="v=analytics1"', dict(url=None, tel=None, email=None), False),
    ("second reason-value", 'Q.850;cause=21, SIP;cause=603;text="v=analytics1;url=https://x.example"',
     dict(url="https://x.example"), True),
]


@pytest.mark.parametrize(("header", "fields", "conformant"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_reason_redress(header, fields, conformant):
    redress = redress_from_reason(header)
    assert redress is not None
    assert redress.source == "reason"
    assert redress.conformant is conformant
    for key, value in fields.items():
        assert getattr(redress, key) == value
    assert has_analytics_avp(header)


@pytest.mark.parametrize("header", [
    'SIP;cause=603;text="Network Blocked"', "Q.850;cause=21;text=\"Call Rejected\"", "SIP;cause=607", "",
    None, "garbage", ";;;;", '"unterminated', "v=analytics2;url=https://x.example",
])
def test_reason_without_redress(header):
    assert redress_from_reason(header) is None


CALL_INFO = [
    ("https jwscard", "<https://redress.example.net/v1/jcard/x.jws>;purpose=jwscard",
     "https://redress.example.net/v1/jcard/x.jws", True),
    ("quoted purpose, spaces", '<https://r.example/a.jws> ; purpose="jwscard"', "https://r.example/a.jws", True),
    ("second entry", "<https://a.example/icon.png>;purpose=icon, <https://r.example/b.jws>;purpose=jwscard",
     "https://r.example/b.jws", True),
    ("data URI with comma (fixture 12)", "<data:application/jose;base64,ZXlKaGJH,Y2lP>;purpose=jwscard",
     "data:application/jose;base64,ZXlKaGJH,Y2lP", False),
    ("http is not conformant", "<http://r.example/a.jws>;purpose=jwscard", "http://r.example/a.jws", False),
]


@pytest.mark.parametrize(("header", "url", "conformant"), [c[1:] for c in CALL_INFO], ids=[c[0] for c in CALL_INFO])
def test_call_info_redress(header, url, conformant):
    redress = redress_from_call_info(header)
    assert redress is not None and redress.source == "call-info"
    assert redress.url == url and redress.conformant is conformant


@pytest.mark.parametrize("header", [
    "<https://a.example/icon.png>;purpose=icon", "https://no-brackets.example;purpose=jwscard", "", None, "<", ">",
    "<sip:appearance@x>;appearance-index=1",
])
def test_call_info_without_redress(header):
    assert redress_from_call_info(header) is None


def test_reason_wins_over_call_info():
    redress = redress_from('SIP;cause=603;text="v=analytics1;url=https://a.example"',
                           "<https://b.example/x.jws>;purpose=jwscard")
    assert redress is not None and redress.source == "reason" and redress.url == "https://a.example"


HOSTILE = [
    "SIP;cause=99999999999999999999;text=\"v=analytics1;url=https://x.example\"",
    'SIP;cause=603;text="v=analytics1;url=https://x.example\r\nBcc: victim@example.com"',
    "SIP;cause=603;text=\"v=analytics1;url=javascript:alert(1)\"",
    "\x00\x01\x02" * 1000,
    "%" * 5000,
    "%E0%A4%A",
    ";" * 10000,
    '"' * 10001,
    "SIP;" + "a=b;" * 5000,
    "\ud800",
]


@pytest.mark.parametrize("header", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_never_raises(header):
    redress_from(header, header)
    parse_reason(header)
    has_analytics_avp(header)


def test_control_characters_are_stripped():
    redress = redress_from_reason('SIP;cause=603;text="v=analytics1;url=https://x.example/\r\nX-Evil: 1"')
    assert redress is not None
    assert "\r" not in (redress.url or "") and "\n" not in (redress.url or "")


@settings(max_examples=500, deadline=None)
@given(reason=st.one_of(st.none(), st.text(max_size=300)), call_info=st.one_of(st.none(), st.text(max_size=300)))
def test_parser_is_total(reason, call_info):
    result = redress_from(reason, call_info)
    assert result is None or result.source in ("reason", "call-info")
