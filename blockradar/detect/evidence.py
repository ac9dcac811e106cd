"""Evidence: what the matching calls of one scope key were, kept with the window buckets.

The windows (``windows.py``) count; an alert also has to *say* what it counted: how many of each
category and SIP code, on which trunks and connectors, first and last seen, a few sample calls and
the carrier's redress contacts. :class:`KeyEvidence` keeps that per key, for matching outcomes only
(outcomes that add to some threshold's signal), in the same time buckets as the counters:

* ``cells``: (bucket index, *:class:`Detail`) -> [count, first_t, last_t]. Summing the cells of a
  threshold's window with its filter gives figures that add up exactly to the window's matching
  count, whatever the window length (``summarize``). A key holds at most ``MAX_DETAILS`` cells (a
  hostile stream inventing trunks cannot grow it): further details are counted under ``(other)``
  trunk, connector and PBX. Buckets older than every window of the key are dropped on insert.
* ``samples``: the last ``sample_max`` matching calls (a bounded list), for sample calls and redress.
* ``connectors``: the connectors of the matching calls kept: an alert built on them is held while
  one of them is blind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_DETAILS = 256  # cells per key: (buckets in the longest window + 1) x distinct details
OTHER = "(other)"

# A detail key: (category, confidence, sip_code, trunk, connector, pbx)
Detail = tuple[str, str, int | None, str | None, str, str]
# A sample: (t, category, confidence, sip_code, sip_phrase, call_id, callee_number, redress, trunk)
S_T, S_CATEGORY, S_CONFIDENCE, S_CODE, S_PHRASE, S_CALL_ID, S_CALLEE, S_REDRESS, S_TRUNK = range(9)


class KeyEvidence:
    """The matching calls of one scope key, per bucket (see the module docstring).

    Kept small for the garbage collector (one per key with a matching call): one flat dict
    ``(bucket, *detail) -> [count, first_t, last_t]``, the oldest bucket in it, and a short list of
    samples."""

    __slots__ = ("cells", "oldest", "sample_max", "samples")

    def __init__(self, sample_max: int) -> None:
        self.cells: dict[tuple[Any, ...], list[Any]] = {}
        self.oldest: int | None = None  # the oldest bucket with a cell
        self.samples: list[tuple[Any, ...]] = []
        self.sample_max = sample_max

    @property
    def buckets(self) -> dict[int, dict[Detail, list[Any]]]:
        """bucket -> {detail -> [count, first_t, last_t]} (a view for tests and tools)."""
        out: dict[int, dict[Detail, list[Any]]] = {}
        for (bucket, *detail), entry in self.cells.items():
            out.setdefault(bucket, {})[tuple(detail)] = entry  # type: ignore[index]
        return out

    @property
    def connectors(self) -> set[str]:
        """Every connector of a matching call still kept (an alert adds them to its own at each look)."""
        return {key[5] for key in self.cells}

    def add(self, bucket: int, oldest_bucket: int, t: float, detail: Detail, sample: tuple[Any, ...]) -> None:
        """Record one matching call at event time ``t`` in ``bucket``; forget buckets before ``oldest_bucket``."""
        cells = self.cells
        oldest = self.oldest
        if oldest is None or oldest < oldest_bucket:
            if oldest is not None:
                for key in [k for k in cells if k[0] < oldest_bucket]:
                    del cells[key]
            self.oldest = oldest = min((k[0] for k in cells), default=bucket)
        if bucket < oldest:
            self.oldest = bucket
        key = (bucket, *detail)
        entry = cells.get(key)
        if entry is None and len(cells) >= MAX_DETAILS:
            key = (bucket, detail[0], detail[1], detail[2], OTHER, OTHER, OTHER)
            entry = cells.get(key)
        if entry is None:
            cells[key] = [1, t, t]
        else:
            entry[0] += 1
            if t < entry[1]:
                entry[1] = t
            elif t > entry[2]:
                entry[2] = t
        samples = self.samples
        if len(samples) >= self.sample_max:
            del samples[0]
        samples.append(sample)


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
    for (bucket, category, conf, code, trunk, connector, pbx), (n, first, last) in evidence.cells.items():
        if bucket <= low or bucket > head:
            continue
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
