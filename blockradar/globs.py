"""Shell globs (``carrier-*``, ``trunk?``) as one compiled regex: trunk names in rules and in connectors."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str]:
    """Names or globs as one case-sensitive regex that matches a whole name; none: matches nothing."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or r"(?!)")
