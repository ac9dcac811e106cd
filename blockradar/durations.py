"""Durations as operators write them: ``"30s"``, ``"10m"``, ``"1h"``, ``"2h30m"``, ``"1d"``.

``parse_duration`` turns such text (or a plain number of seconds) into float seconds;
``format_duration`` turns seconds back into the shortest text of the same kind.
Units: ``ms``, ``s``, ``m``, ``h``, ``d``, ``w``. Negative durations are refused.
"""

from __future__ import annotations

import math
import re

UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: str | float | int) -> float:
    """``"2h30m"`` -> 9000.0; a bare number is seconds. Raises ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int past float's range: 400 digits in a config (found by tests/fuzz)
            raise ValueError("not a duration: too large") from None
    else:
        text = str(value).strip().lower().replace(" ", "")
        if not text:
            raise ValueError("empty duration")
        try:
            seconds = float(text)
        except ValueError:
            pos = 0
            seconds = 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text):
                raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 1h, 2h30m, 1d)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """9000 -> ``"2h30m"``; 0 -> ``"0s"``; fractions of a second -> ``ms``."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"not a duration: {seconds!r}")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, millis = divmod(millis, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
