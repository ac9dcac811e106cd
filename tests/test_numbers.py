"""Number normalisation: every form a PBX writes of one number counts as one E.164 number."""

from __future__ import annotations

import pytest

from blockradar.numbers import MAX_NUMBER_CHARS, Normalized, NumberPlan, uri_user
from blockradar.outcome import CallOutcome

US = NumberPlan("US")

NANP_FORMS = [
    "+15557654321",
    "15557654321",
    "5557654321",
    "1-555-765-4321",
    "(555) 765-4321",
    "555.765.4321",
    "+1 (555) 765-4321",
    "tel:+1-555-765-4321",
    "tel:5557654321;phone-context=+1",
    "sip:5557654321@carrier.example.net",
    "sip:+15557654321@carrier.example.net;user=phone",
    "<sips:15557654321@10.0.0.1:5061>",
    "  5557654321  ",
]


@pytest.mark.parametrize("raw", NANP_FORMS)
def test_every_nanp_form_is_one_number(raw: str) -> None:
    assert US.normalize(raw) == Normalized("+15557654321", True)


@pytest.mark.parametrize(
    ("region", "raw", "expected"),
    [
        ("US", "011442079460000", "+442079460000"),  # NANP international prefix
        ("US", "+442079460000", "+442079460000"),
        ("GB", "02079460000", "+442079460000"),  # national trunk prefix 0
        ("GB", "00 1 555 765 4321", "+15557654321"),
        ("DE", "030 123456", "+4930123456"),
        ("DE", "+49 30 123456", "+4930123456"),
        ("CA", "6135550123", "+16135550123"),
        ("us", "5557654321", "+15557654321"),  # the region is case-insensitive
    ],
)
def test_other_regions_and_international_forms(region: str, raw: str, expected: str) -> None:
    assert NumberPlan(region).normalize(raw) == Normalized(expected, True)


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("405", "405"),  # an internal extension
        ("7654321", "7654321"),  # local only: prefixing +1 would invent a wrong number
        ("anonymous", "anonymous"),
        ("Restricted", "Restricted"),
        ("1-800-FLOWERS", "1-800-FLOWERS"),  # letters: a name, not a caller ID
        ("sip:alice@pbx.example.net", "alice"),
        ("+1555765432100000", "+1555765432100000"),  # too long for NANP
        ("12", "12"),
        ("5557654321; DROP TABLE", "5557654321; DROP TABLE"),
        ("\u0661\u0662\u0663", "\u0661\u0662\u0663"),  # Arabic-Indic digits: not the diallable ASCII set
    ],
)
def test_what_is_not_a_number_of_the_region_is_kept_as_given(raw: str, kept: str) -> None:
    assert US.normalize(raw) == Normalized(kept, False)


def test_empty_none_and_huge_inputs() -> None:
    assert US.normalize(None) is None and US.normalize("") is None and US.normalize("   ") is None
    assert US.normalize("sip:@host") is None
    huge = "9" * 100_000
    found = US.normalize(huge)
    assert found is not None and not found.e164 and len(found.text) == MAX_NUMBER_CHARS


def test_uri_user() -> None:
    assert uri_user("sip:+15557654321@h;user=phone") == "+15557654321"
    assert uri_user("SIP:5557654321@h") == "5557654321"
    assert uri_user("tel:+1-555-765-4321;ext=2") == "+1-555-765-4321"
    assert uri_user("5557654321") == "5557654321"


def test_an_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown region 'XX'"):
        NumberPlan("XX")


def test_apply_rewrites_an_outcome_and_keeps_the_raw_form_for_display() -> None:
    plan = NumberPlan("US")
    outcome = CallOutcome(pbx="asterisk", connector="pbx1", call_id="c1", caller_number="5557650003",
                          callee_number="405", sip_code=608)
    done = plan.apply(outcome)
    assert (done.caller_number, done.caller_number_raw) == ("+15557650003", "5557650003")
    assert (done.callee_number, done.callee_number_raw) == ("405", None)  # unchanged: no raw copy
    assert (plan.normalized, plan.kept_as_given) == (1, 1)
    already = done.replace(callee_number="+15551230008", callee_number_raw=None)
    assert plan.apply(already) is already  # nothing to change: the same object, no copy
    assert done.to_dict()["caller_number_raw"] == "5557650003"
