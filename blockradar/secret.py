"""A string that never shows itself: AMI secrets, ESL passwords, webhook URLs, SMTP passwords.

``repr``/``str``/format give a mask; only ``reveal()`` gives the value, at the one place that
must send it. Anything that prints a config prints the mask.
"""

from __future__ import annotations

from typing import Any


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
    """A URL safe to print: scheme and host kept, path, query and credentials masked.

    ``https://hooks.slack.com/services/T0/B0/XXXX`` -> ``https://hooks.slack.com/********``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "********"
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/********"
