"""SIP as RFC 3261 writes it, reduced to what the HEP join needs: the start line, the headers (compact
forms, folded lines and repeated headers), and the user part of a From / To / P-Asserted-Identity /
Request-URI. The body is never read.

A header may appear several times and a value may hold several comma-separated entries (RFC 3261
§7.3.1): ``values(name)`` keeps every line in order, and ``joined(name)`` gives them comma-joined, the
form the Reason (RFC 3326, with the ATIS-1000099 AVPs) and Call-Info parsers of ``blockradar.redress``
read. Everything is bounded (``MAX_HEADERS`` lines, ``MAX_VALUE`` characters a value) and undecodable
bytes become U+FFFD: a hostile message gives a short ``SipMessage`` or a ``SipError``, never a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEADERS = 128
MAX_VALUE = 2048
COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
           "c": "content-type", "e": "content-encoding", "k": "supported", "s": "subject", "o": "event",
           "r": "refer-to", "b": "referred-by", "x": "session-expires", "u": "allow-events", "y": "identity"}
_STATUS = re.compile(r"SIP/2\.0\s+(\d{3})(?:\s+(.*))?$")
_REQUEST = re.compile(r"([A-Z][A-Z0-9_.!%*+`'~-]*)\s+(\S+)\s+SIP/2\.0$")
_USER = re.compile(r"(?:sips?|tel):([^@;>?\s]+)", re.IGNORECASE)


class SipError(ValueError):
    """Not a SIP message (the message says why)."""


@dataclass(slots=True)
class SipMessage:
    method: str | None = None  # a request's method
    request_uri: str | None = None
    status: int | None = None  # a response's status code
    phrase: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case full name -> values in order

    @property
    def is_response(self) -> bool:
        return self.status is not None

    def values(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])

    def first(self, name: str) -> str | None:
        found = self.headers.get(name.lower())
        return found[0] if found else None

    def joined(self, name: str) -> str | None:
        found = self.headers.get(name.lower())
        return ", ".join(found) if found else None

    @property
    def call_id(self) -> str | None:
        return self.first("call-id")

    @property
    def cseq(self) -> tuple[int | None, str | None]:
        """(number, method) of the CSeq header."""
        text = self.first("cseq") or ""
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            return None, None
        return int(parts[0]), parts[1].upper()


def parse_sip(payload: bytes) -> SipMessage:
    """The start line and headers of one SIP message (see the module docstring)."""
    head = payload.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    message = SipMessage()
    status = _STATUS.match(start)
    if status:
        message.status = int(status.group(1))
        message.phrase = (status.group(2) or "").strip()[:MAX_VALUE]
    else:
        request = _REQUEST.match(start)
        if not request:
            raise SipError(f"not a SIP start line: {start[:60]!r}")
        message.method, message.request_uri = request.group(1), request.group(2)[:MAX_VALUE]
    count = 0
    last: list[str] | None = None
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t" and last:  # a folded line continues the previous value
            last[-1] = (last[-1] + " " + line.strip())[:MAX_VALUE]
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        count += 1
        if count > MAX_HEADERS:
            break
        key = name.strip().lower()
        key = COMPACT.get(key, key)
        last = message.headers.setdefault(key, [])
        last.append(value.strip()[:MAX_VALUE])
    return message


def uri_user(value: str | None) -> str | None:
    """The user part of a sip:/sips:/tel: URI in a header value or a Request-URI (``"Sales"
    <sip:+15557650001@carrier;user=phone>;tag=1`` -> ``+15557650001``); None without one."""
    if not value:
        return None
    match = _USER.search(value)
    if not match:
        return None
    user = match.group(1)
    return user[:128] if user else None
