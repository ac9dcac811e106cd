"""Telephone numbers: one E.164 form for every way a PBX writes the same number.

``+15557654321``, ``15557654321``, ``5557654321``, ``(555) 765-4321``, ``tel:+1-555-765-4321`` and
``sip:5557654321@carrier`` are one calling number; counted apart, a 3-blocks-in-1-h threshold never
fires and a silence on one form lets the others through. ``NumberPlan`` owns the parse
(``phonenumbers``, Google's libphonenumber metadata), the default region (ISO 3166 code, ``US`` by
default: 603+ and 608 are North American practice), the SIP/tel URI forms, and a bounded cache (a
dialer calls from the same few thousand numbers all day).

A number is normalized only when it is a *possible* full number in the region (right length for its
country; the number need not be assigned, so the 555 numbers of tests and demos normalize). Anything
else (an internal extension such as ``405``, ``anonymous``, a 7-digit local number, garbage) is kept
as given, trimmed and bounded, and ``normalize`` says so.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

if TYPE_CHECKING:
    from blockradar.outcome import CallOutcome

DEFAULT_REGION = "US"
MAX_NUMBER_CHARS = 64  # longer is not a number; kept (cut) for display only
_CACHE_SIZE = 65_536

# written in E.164 already: taken as it is (a PBX that writes +<country code> means it), no parse
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# digits with the separators people and PBXes write; a leading + (letters are not accepted: vanity
# "1-800-FLOWERS" is not a caller ID, and a name must not turn into a number)
_DIALLABLE = re.compile(r"\+?[0-9 ().\-/]+")


@dataclass(frozen=True, slots=True)
class Normalized:
    """A number as blockradar counts it: ``text`` is the E.164 form when ``e164`` is True, else the
    input kept as given (trimmed, URI scheme and host removed, at most ``MAX_NUMBER_CHARS``)."""

    text: str
    e164: bool


def supported_regions() -> frozenset[str]:
    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def uri_user(raw: str) -> str:
    """The number part of ``sip:user@host;params``, ``<sips:...>``, ``tel:+1...;phone-context=...``;
    any other text unchanged (trimmed)."""
    text = raw.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    lowered = text[:5].lower()
    if lowered.startswith(("sip:", "sips:", "tel:")):
        text = text.partition(":")[2]
        text = text.partition("@")[0] if not lowered.startswith("tel:") else text
        text = text.partition(";")[0]
    return text.strip()


class NumberPlan:
    """Normalizes numbers for one default region. Cheap to call repeatedly (bounded LRU cache)."""

    __slots__ = ("_cached", "kept_as_given", "normalized", "region")

    def __init__(self, default_region: str = DEFAULT_REGION, cache_size: int = _CACHE_SIZE) -> None:
        region = default_region.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {default_region!r}: use an ISO 3166 code such as US, CA, GB, DE")
        self.region = region
        self._cached = functools.lru_cache(maxsize=cache_size)(self._normalize)
        self.normalized = 0  # numbers on outcomes rewritten to E.164 (counted by ``apply``)
        self.kept_as_given = 0  # numbers on outcomes that are not a possible number in the region

    def __repr__(self) -> str:
        return f"NumberPlan({self.region!r})"

    def normalize(self, raw: str | None) -> Normalized | None:
        """The number as counted, or None for None / empty input."""
        if raw is None:
            return None
        return self._cached(raw)

    def text(self, raw: str | None) -> str | None:
        """``normalize(raw).text``: the E.164 form when there is one, else the input kept as given."""
        if raw is None:
            return None
        found = self._cached(raw)
        return found.text if found is not None else None

    def apply(self, outcome: CallOutcome) -> CallOutcome:
        """The outcome with its caller and callee numbers in E.164 where they are numbers of the region;
        the form the PBX wrote stays in ``caller_number_raw`` / ``callee_number_raw`` when it differs."""
        changes: dict[str, str | None] = {}
        for field, raw in (("caller_number", outcome.caller_number), ("callee_number", outcome.callee_number)):
            if raw is None:
                continue
            found = self._cached(raw)
            if found is None or not found.e164:
                self.kept_as_given += 1
            else:
                self.normalized += 1
            text = found.text if found is not None else None
            if text != raw:
                changes[field] = text
                changes[f"{field}_raw"] = raw
        return outcome.replace(**changes) if changes else outcome

    def _normalize(self, raw: str) -> Normalized | None:
        if _E164.fullmatch(raw) is not None:  # already E.164 (the country code is explicit): the hot path
            return Normalized(raw, True)
        text = uri_user(raw[: MAX_NUMBER_CHARS * 4])
        if not text:
            return None
        if _DIALLABLE.fullmatch(text) is not None and sum(c.isdigit() for c in text) >= 3:
            try:
                parsed = phonenumbers.parse(text, self.region)
            except NumberParseException:
                parsed = None
            if parsed is not None and _is_possible(parsed):
                return Normalized(phonenumbers.format_number(parsed, PhoneNumberFormat.E164), True)
        return Normalized(text[:MAX_NUMBER_CHARS], False)


def _is_possible(parsed: phonenumbers.PhoneNumber) -> bool:
    """The right length for a full number of its country (``IS_POSSIBLE_LOCAL_ONLY``, a number without its
    area code, is not: it would get a wrong country code prefixed)."""
    return bool(phonenumbers.is_possible_number_with_reason(parsed) == ValidationResult.IS_POSSIBLE)
