"""Redress contacts carried by blocking responses, and the Reason-header reader they rest on.

Two carriers of redress information exist (see ``shared/reference/sip-blocking-signals.md`` §1, §3):

* ATIS-1000099 "603+": ``Reason: SIP;cause=603;text="v=analytics1;url=...;tel=...;email=...;id=..."
  ;location=LN`` (also ``Q.850;cause=21``).  Seen in the wild: URL-encoded (as FreeSWITCH
  delivers variables), and with the AVPs as separate Reason parameters instead of inside ``text``.
* RFC 8688 608: ``Call-Info: <https://...>;purpose=jwscard`` (the jCard JWS sits at the URL).

Everything here is total: any input, however hostile, gives a value or None and never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

MAX_HEADER_CHARS = 4096  # longer input is cut: a Reason header is never legitimately this long

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TEL_RE = re.compile(r"\+[1-9][0-9]{6,14}")
_EMAIL_RE = re.compile(r"[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+")
_LOCATIONS = frozenset({"LN", "TN", "RLN", "LPN", "RPN", "U", "BI", "INTL"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# a redress URL that may become a link (Slack, email, the status page): plain https, nothing that could
# end or split a link in any of them; anything else is shown as escaped text
LINKABLE_URL = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/?#=%+:@!$'()*,;-]*)?")


@dataclass(frozen=True, slots=True)
class Redress:
    """Where a blocked caller can ask for the block to be reviewed."""

    source: str  # "reason" (603+ AVPs) or "call-info" (608 jwscard)
    conformant: bool
    url: str | None = None
    tel: str | None = None
    email: str | None = None
    id: str | None = None
    location: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "tel": self.tel,
            "email": self.email,
            "id": self.id,
            "location": self.location,
            "source": self.source,
            "conformant": self.conformant,
        }

    def contacts(self) -> tuple[str, ...]:
        """The non-empty contact values (url, tel, email), for deduplication in alerts."""
        return tuple(v for v in (self.url, self.tel, self.email) if v)


@dataclass(frozen=True, slots=True)
class ReasonValue:
    """One reason-value of a Reason header (RFC 3326): protocol, cause, text and other params."""

    protocol: str  # upper-cased: "SIP", "Q.850", or whatever the peer sent
    cause: int | None
    text: str | None
    params: tuple[tuple[str, str], ...]  # every other parameter, names lower-cased, in order

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


def clean(text: str | None) -> str | None:
    """Decode a value that arrived URL-encoded and drop control characters; None stays None."""
    if text is None:
        return None
    try:
        text = str(text)[:MAX_HEADER_CHARS]
        if ("%" in text and ";" not in text and "=" not in text.split("%", 1)[0]) or re.search(r"%3[bBdD]", text):
            text = unquote(text)
        return _CONTROL.sub("", text).strip()
    except Exception:
        return None


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def _unquote_param(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    elif value.startswith('"'):
        value = value[1:]
    return value


def parse_reason(header: str | None) -> list[ReasonValue]:
    """Every reason-value in a Reason header (comma-separated values allowed). Never raises."""
    text = clean(header)
    if not text:
        return []
    values: list[ReasonValue] = []
    try:
        for chunk in _split_outside_quotes(text, ","):
            parts = [p.strip() for p in _split_outside_quotes(chunk, ";")]
            if not parts or not parts[0] or "=" in parts[0]:
                continue
            protocol = parts[0].upper()
            cause: int | None = None
            reason_text: str | None = None
            params: list[tuple[str, str]] = []
            for part in parts[1:]:
                name, sep, value = part.partition("=")
                name = name.strip().lower()
                if not sep or not name:
                    continue
                if name == "cause" and cause is None:
                    digits = value.strip()
                    cause = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 4 else None
                elif name == "text" and reason_text is None:
                    reason_text = _unquote_param(value)
                else:
                    params.append((name, _unquote_param(value)))
            values.append(ReasonValue(protocol, cause, reason_text, tuple(params)))
    except Exception:
        return values
    return values


def has_analytics_avp(header: str | None) -> bool:
    """True when the Reason header carries the ATIS version AVP ``v=analytics1`` anywhere."""
    text = clean(header)
    return bool(text) and re.search(r"(?:^|[;\"\s])v\s*=\s*analytics1\b", text, re.IGNORECASE) is not None


def _avps(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            pairs.append((name.strip().lower(), _unquote_param(value)))
    return pairs


def _valid_url(url: str | None) -> bool:
    return bool(url) and re.fullmatch(r"https://[^\s/?#]+\.[^\s/?#]+(?:[/?#]\S*)?", url) is not None


def redress_from_reason(header: str | None) -> Redress | None:
    """ATIS-1000099 redress AVPs from a Reason header, or None when it has neither AVP nor contact."""
    for value in parse_reason(header):
        avps: list[tuple[str, str]] = []
        in_text = False
        if value.text and "=" in value.text:
            avps = _avps(value.text)
            in_text = any(k == "v" for k, _ in avps)
        avps += [(k, v) for k, v in value.params if k in {"v", "url", "tel", "email", "id"}]
        found = {k: v for k, v in reversed(avps)}  # first occurrence wins
        version = (found.get("v") or "").lower()
        url, tel, email, ident = (clean(found.get(k)) or None for k in ("url", "tel", "email", "id"))
        if version != "analytics1" and not (url or tel or email):
            continue
        location = clean(value.param("location")) or None
        cause_ok = (value.protocol, value.cause) in {("SIP", 603), ("Q.850", 21)}
        text_ok = in_text and bool(value.text) and value.text.lower().startswith("v=analytics1")
        contacts_ok = bool(url or tel or email)
        fields_ok = (
            (url is None or _valid_url(url))
            and (tel is None or _TEL_RE.fullmatch(tel) is not None)
            and (email is None or _EMAIL_RE.fullmatch(email) is not None)
            and (ident is None or _ID_RE.fullmatch(ident) is not None)
            and (location is None or location.upper() in _LOCATIONS)
        )
        conformant = version == "analytics1" and cause_ok and text_ok and contacts_ok and fields_ok
        return Redress("reason", conformant, url, tel, email, ident, location)
    return None


def redress_from_call_info(header: str | None) -> Redress | None:
    """RFC 8688 redress from a Call-Info header whose purpose is jwscard, or None."""
    text = clean(header)
    if not text:
        return None
    try:
        for match in re.finditer(r"<([^>]*)>([^<]*)", text):
            uri, params = match.group(1).strip(), match.group(2)
            purposes = re.findall(r";\s*purpose\s*=\s*\"?([A-Za-z0-9_.-]+)", params, re.IGNORECASE)
            if not any(p.lower() == "jwscard" for p in purposes):
                continue
            if uri.lower().startswith("data:"):
                return Redress("call-info", False, url=uri[:64] + ("..." if len(uri) > 64 else ""))
            return Redress("call-info", _valid_url(uri), url=uri or None)
    except Exception:
        return None
    return None


def redress_from(reason: str | None, call_info: str | None) -> Redress | None:
    """The redress of a response: the 603+ Reason AVPs first, else the 608 Call-Info jwscard."""
    try:
        return redress_from_reason(reason) or redress_from_call_info(call_info)
    except Exception:
        return None
