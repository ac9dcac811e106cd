"""A string that never shows itself: AMI secrets, ESL passwords, webhook URLs, SMTP passwords.

``repr``/``str``/format give a mask; only ``reveal()`` gives the value, at the one place that
must send it. Anything that prints a config prints the mask.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __format__(self, spec: str) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def mask_url(url: str) -> str:
    """A URL safe to print: scheme, host and port kept; credentials, path, query and fragment masked.

    ``https://hooks.slack.com/services/T0/B0/XXXX`` -> ``https://hooks.slack.com/********``;
    ``http://hooks.example.com?token=abc`` -> ``http://hooks.example.com/********`` (the audit found the
    token of a URL with a query and no path printed in full).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "********"
    host = parts.hostname or ""
    if not parts.scheme or not host:
        return "********"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/********"


def scrub_url_secrets(text: str, url: str) -> str:
    """``text`` (say, an error body a peer sent back) with every secret part of ``url`` masked: its
    userinfo, path segments, query values and fragment, wherever they appear."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return text
    pieces = [parts.username, parts.password, parts.fragment]
    pieces += [segment for segment in parts.path.split("/") if len(segment) >= 6]
    pieces += [value for pair in parts.query.split("&") for value in pair.split("=", 1)[1:]]
    for piece in sorted((p for p in pieces if p and len(p) >= 4), key=len, reverse=True):
        text = text.replace(piece, "********")
    return text
