"""Evidence: what the matching calls of one scope key were, kept with the window buckets.

The windows (``windows.py``) count; an alert also has to *say* what it counted: how many of each
category and SIP code, on which trunks and connectors, first and last seen, a few sample calls and
the carrier's redress contacts. :class:`KeyEvidence` keeps that per key, for matching outcomes only
(outcomes that add to some threshold's signal), in the same time buckets as the counters:

* ``cells``: (bucket index, *:class:`Detail`) -> (count, first_t, last_t). Summing the cells of a
  threshold's window with its filter gives figures that add up exactly to the window's matching
  count, whatever the window length (``summarize``). A key holds at most ``MAX_DETAILS`` cells (a
  hostile stream inventing trunks cannot grow it): further details are counted under ``(other)``
  trunk, connector and PBX. Buckets older than every window of the key are dropped on insert.
* ``samples``: the last ``sample_max`` matching calls (a bounded tuple), for sample calls and redress.
* ``connectors``: the connectors of the matching calls kept: an alert built on them is held while
  one of them is blind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_DETAILS = 256  # cells per key: (buckets in the longest window + 1) x distinct details
OTHER = "(other)"

# A detail key: (category, confidence, sip_code, trunk, connector, pbx); a cell is (bucket, *detail)
Detail = tuple[str, str, int | None, str | None, str, str]
Cell = tuple[int, str, str, int | None, str | None, str, str]
# A sample: (t, category, confidence, sip_code, sip_phrase, call_id, callee_number, redress, trunk)
S_T, S_CATEGORY, S_CONFIDENCE, S_CODE, S_PHRASE, S_CALL_ID, S_CALLEE, S_REDRESS, S_TRUNK = range(9)


class KeyEvidence:
    """The matching calls of one scope key, per bucket (see the module docstring).

    Kept small for the garbage collector (one per key with a matching call): one flat dict
    ``(bucket, *detail) -> (count, first_t, last_t)``, the oldest bucket in it, and a short tuple of
    samples."""

    __slots__ = ("cells", "oldest", "sample_max", "samples")

    def __init__(self, sample_max: int) -> None:
        self.cells: dict[tuple[Any, ...], tuple[int, float, float]] = {}
        self.oldest: int | None = None  # the oldest bucket with a cell
        self.samples: tuple[tuple[Any, ...], ...] = ()
        self.sample_max = sample_max

    @property
    def buckets(self) -> dict[int, dict[Detail, tuple[int, float, float]]]:
        """bucket -> {detail -> (count, first_t, last_t)} (a view for tests and tools)."""
        out: dict[int, dict[Detail, tuple[int, float, float]]] = {}
        for (bucket, *detail), entry in self.cells.items():
            out.setdefault(bucket, {})[tuple(detail)] = entry  # type: ignore[index]
        return out

    @property
    def connectors(self) -> set[str]:
        """Every connector of a matching call still kept (an alert adds them to its own at each look)."""
        return {key[5] for key in self.cells}

    def stale(self, oldest_bucket: int) -> bool:
        """True when nothing kept is in a window any more (every bucket is before ``oldest_bucket``)."""
        return self.oldest is not None and self.oldest < oldest_bucket and not self.prune(oldest_bucket)

    def prune(self, oldest_bucket: int) -> int:
        """Forget buckets before ``oldest_bucket``; returns how many cells are left."""
        cells = self.cells
        if self.oldest is not None and self.oldest < oldest_bucket:
            for key in [k for k in cells if k[0] < oldest_bucket]:
                del cells[key]
            self.oldest = min((k[0] for k in cells), default=None)
            if not cells:
                self.samples = ()
        return len(cells)

    def add(self, cell: Cell, t: float, sample: tuple[Any, ...], oldest_bucket: int) -> None:
        """Record one matching call at event time ``t``: ``cell`` is ``(bucket, *detail)``; forget buckets
        before ``oldest_bucket``. (The pipeline builds the cell tuple itself: one tuple, no unpacking.)"""
        cells = self.cells
        bucket = cell[0]
        oldest = self.oldest
        if oldest is not None and oldest < oldest_bucket:
            self.prune(oldest_bucket)
            oldest = self.oldest
        if oldest is None or bucket < oldest:
            self.oldest = bucket
        entry = cells.get(cell)
        if entry is None and len(cells) >= MAX_DETAILS:
            cell = (bucket, cell[1], cell[2], cell[3], OTHER, OTHER, OTHER)
            entry = cells.get(cell)
        # (count, first, last) as a tuple, replaced: tuples of numbers (and so the dict) are left alone by
        # the garbage collector, which a per-key list would make it walk on every full collection
        if entry is None:
            cells[cell] = (1, t, t)
        else:
            count, first, last = entry
            cells[cell] = (count + 1, t if t < first else first, t if t > last else last)
        samples = self.samples  # a tuple, rebuilt: untracked by the collector like the cells
        self.samples = (*samples[1 - self.sample_max :], sample) if len(samples) >= self.sample_max \
            else (*samples, sample)

    def context(self, head: int, length: int, categories: frozenset[str], confidence: frozenset[str] | None,
                codes: frozenset[int] | None) -> tuple[set[str], set[str], set[str], float | None]:
        """The trunks, connectors and PBXes of the matching calls in a window, and the newest call's time:
        what an alert's labels need when it fires (cheaper than a full ``summarize``)."""
        trunks: set[str] = set()
        connectors: set[str] = set()
        pbxes: set[str] = set()
        last_seen: float | None = None
        low = head - length
        for (bucket, category, conf, code, trunk, connector, pbx), entry in self.cells.items():
            if bucket <= low or bucket > head or category not in categories:
                continue
            if (confidence is not None and conf not in confidence) or (codes is not None and code not in codes):
                continue
            if trunk is not None:
                trunks.add(trunk)
            connectors.add(connector)
            pbxes.add(pbx)
            if last_seen is None or entry[2] > last_seen:
                last_seen = entry[2]
        return trunks, connectors, pbxes, last_seen


# What a key's evidence becomes once everything in it left every window: shared and never written to
# (the pipeline replaces it with a fresh one at the key's next matching call), so a key that had a
# matching call once costs nothing more than one that never had.
EXPIRED = KeyEvidence(0)


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


def summarize(evidence: KeyEvidence | None, head: int, length: int, categories: Iterable[str],
              confidence: Iterable[str] | None, codes: Iterable[int] | None) -> Summary:
    """Sum the details of buckets ``head-length+1 .. head`` that pass a threshold's filter."""
    out = Summary()
    if evidence is None or not evidence.cells:
        return out
    cats = categories if isinstance(categories, frozenset) else frozenset(categories)
    confs = confidence if confidence is None or isinstance(confidence, frozenset) else frozenset(confidence)
    code_set = codes if codes is None or isinstance(codes, frozenset) else frozenset(codes)
    low = head - length
    count = 0
    first_seen = last_seen = None
    by_category, by_code, trunks, connectors, pbxes = out.categories, out.codes, out.trunks, out.connectors, out.pbxes
    for (bucket, category, conf, code, trunk, connector, pbx), (n, first, last) in evidence.cells.items():
        if bucket <= low or bucket > head or category not in cats:
            continue
        if (confs is not None and conf not in confs) or (code_set is not None and code not in code_set):
            continue
        count += n
        by_category[category] = by_category.get(category, 0) + n
        key = str(code) if code is not None else "none"
        by_code[key] = by_code.get(key, 0) + n
        if trunk is not None:
            trunks[trunk] = trunks.get(trunk, 0) + n
        connectors[connector] = connectors.get(connector, 0) + n
        pbxes[pbx] = pbxes.get(pbx, 0) + n
        if first_seen is None or first < first_seen:
            first_seen = first
        if last_seen is None or last > last_seen:
            last_seen = last
    out.count, out.first_seen, out.last_seen = count, first_seen, last_seen
    return out
