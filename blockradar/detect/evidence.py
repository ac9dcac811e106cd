"""Evidence: what the matching calls of one scope key were, kept with the window buckets.

The windows (``windows.py``) count; an alert also has to *say* what it counted: how many of each
category and SIP code, on which trunks and connectors, first and last seen, a few sample calls and
the carrier's redress contacts. :class:`KeyEvidence` keeps that per key, for matching outcomes only
(outcomes that add to some threshold's signal), in the same time buckets as the counters:

* ``buckets``: bucket index -> {:class:`Detail` key -> [count, first_t, last_t]}. Summing the buckets
  of a threshold's window with its filter gives figures that add up exactly to the window's matching
  count, whatever the window length (``summarize``). A bucket holds at most ``MAX_DETAILS`` distinct
  details (a hostile stream inventing trunks cannot grow it): further ones are counted under
  ``(other)`` trunk and connector. Buckets older than every window of the key are dropped on insert.
* ``samples``: the last ``sample_max`` matching calls (a bounded deque), for sample calls and redress.
* ``connectors``: every connector that ever gave this key a matching call (a handful, from the
  config): an alert built on them is held while one of them is blind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

MAX_DETAILS = 64
OTHER = "(other)"

# A detail key: (category, confidence, sip_code, trunk, connector, pbx)
Detail = tuple[str, str, int | None, str | None, str, str]
# A sample: (t, category, confidence, sip_code, sip_phrase, call_id, callee_number, redress, trunk)
S_T, S_CATEGORY, S_CONFIDENCE, S_CODE, S_PHRASE, S_CALL_ID, S_CALLEE, S_REDRESS, S_TRUNK = range(9)


class KeyEvidence:
    """The matching calls of one scope key, per bucket (see the module docstring)."""

    __slots__ = ("buckets", "connectors", "samples")

    def __init__(self, sample_max: int) -> None:
        self.buckets: dict[int, dict[Detail, list[Any]]] = {}
        self.samples: deque[tuple[Any, ...]] = deque(maxlen=sample_max)
        self.connectors: set[str] = set()

    def add(self, bucket: int, oldest_bucket: int, t: float, detail: Detail, sample: tuple[Any, ...]) -> None:
        """Record one matching call at event time ``t`` in ``bucket``; forget buckets before ``oldest_bucket``."""
        buckets = self.buckets
        cell = buckets.get(bucket)
        if cell is None:
            if len(buckets) > 0:
                for old in [b for b in buckets if b < oldest_bucket]:
                    del buckets[old]
            cell = buckets[bucket] = {}
        connector = detail[4]
        entry = cell.get(detail)
        if entry is None and len(cell) >= MAX_DETAILS:
            detail = (detail[0], detail[1], detail[2], OTHER, OTHER, OTHER)
            entry = cell.get(detail)
        if entry is None:
            cell[detail] = [1, t, t]
        else:
            entry[0] += 1
            if t < entry[1]:
                entry[1] = t
            elif t > entry[2]:
                entry[2] = t
        if connector not in self.connectors:
            self.connectors.add(connector)
        self.samples.append(sample)


class Summary:
    """The figures of one threshold's window for one key (what an alert shows)."""

    __slots__ = ("categories", "codes", "connectors", "count", "first_seen", "last_seen", "pbxes", "trunks")

    def __init__(self) -> None:
        self.count = 0
        self.categories: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.trunks: dict[str, int] = {}
        self.connectors: dict[str, int] = {}
        self.pbxes: dict[str, int] = {}
        self.first_seen: float | None = None
        self.last_seen: float | None = None

    def context(self, name: str) -> dict[str, int]:
        """Counts per value of a context label (``trunk``, ``connector``, ``pbx``)."""
        return {"trunk": self.trunks, "connector": self.connectors, "pbx": self.pbxes}.get(name, {})


def _bump(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


def summarize(evidence: KeyEvidence | None, head: int, length: int, categories: Iterable[str],
              confidence: Iterable[str] | None, codes: Iterable[int] | None) -> Summary:
    """Sum the details of buckets ``head-length+1 .. head`` that pass a threshold's filter."""
    out = Summary()
    if evidence is None:
        return out
    cats = frozenset(categories)
    confs = frozenset(confidence) if confidence is not None else None
    code_set = frozenset(codes) if codes is not None else None
    low = head - length
    for bucket, cell in evidence.buckets.items():
        if bucket <= low or bucket > head:
            continue
        for (category, conf, code, trunk, connector, pbx), (n, first, last) in cell.items():
            if category not in cats or (confs is not None and conf not in confs) or (
                    code_set is not None and code not in code_set):
                continue
            out.count += n
            _bump(out.categories, category, n)
            _bump(out.codes, str(code) if code is not None else "none", n)
            if trunk is not None:
                _bump(out.trunks, trunk, n)
            _bump(out.connectors, connector, n)
            _bump(out.pbxes, pbx, n)
            if out.first_seen is None or first < out.first_seen:
                out.first_seen = first
            if out.last_seen is None or last > out.last_seen:
                out.last_seen = last
    return out
