"""Which PBX legs are outbound carrier attempts, and why a leg is not.

A PBX's SIP legs include phones ringing phones (an internal call to extension 405), phones rung by an
inbound carrier call, and the outbound legs to a carrier that blockradar is about. Counting the first
two turns extensions into "trunks" and external callers into "calling numbers". ``LegSelector`` is the
one place that decides, for both connectors (live and replay):

* ``trunks`` set (names or glob patterns such as ``carrier-*``): a leg counts when its endpoint or
  gateway name matches one; nothing else is looked at (the operator said what a trunk is).
* otherwise: a leg counts when the number it dialled is an **external number**, a possible full number
  of ``numbers.default_region`` once normalized (``+15551230008``, ``5551230008``); an extension such
  as ``405`` is internal. A leg whose dialled number is unknown counts (a block must not be missed).

FreeSWITCH adds ``gateways_only`` (default true: only legs through a sofia gateway are trunks) before
these rules; its ``gateways`` patterns are the ``trunks`` patterns here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from blockradar.globs import compile_globs
from blockradar.numbers import NumberPlan

# why a leg did not count (the /metrics label and what `replay --legs` prints)
NOT_A_TRUNK = "not_a_trunk"  # its endpoint/gateway matches none of the trunks patterns
INTERNAL_NUMBER = "internal_number"  # it dialled an extension, not an external number
NO_GATEWAY = "no_gateway"  # FreeSWITCH gateways_only: not through a sofia gateway
INBOUND = "not_outbound"  # FreeSWITCH: the caller's side of a call or an inbound leg, or not a sofia leg
SKIP_REASONS = (NOT_A_TRUNK, INTERNAL_NUMBER, NO_GATEWAY, INBOUND)


@dataclass(frozen=True, slots=True)
class LegVerdict:
    """One leg as judged: ``reason`` is None when it counts."""

    trunk: str | None
    callee: str | None
    reason: str | None

    @property
    def counted(self) -> bool:
        return self.reason is None

    def explain(self) -> str:
        if self.reason is None:
            return f"counted: {self.callee or 'an unknown number'} via {self.trunk}"
        if self.reason == NOT_A_TRUNK:
            return f"skipped: {self.trunk!r} matches none of the trunks patterns"
        if self.reason == INTERNAL_NUMBER:
            return f"skipped: {self.callee!r} is not an external number (an extension?); set trunks to be explicit"
        if self.reason == NO_GATEWAY:
            return "skipped: not through a sofia gateway (gateways_only)"
        return "skipped: not an outbound sofia leg (the caller's side of the call, or an inbound call)"


@dataclass(slots=True)
class LegSelector:
    """Decides whether a leg counts; counts what it skipped, per reason."""

    trunks: tuple[str, ...] | None = None  # names or glob patterns; None: decide by the dialled number
    numbers: NumberPlan = field(default_factory=NumberPlan)
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    _match: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.trunks is not None:
            self._match = compile_globs(self.trunks)

    def judge(self, trunk: str | None, callee: str | None) -> LegVerdict:
        """The verdict for a leg through ``trunk`` to ``callee`` (both as the PBX wrote them)."""
        found = self.numbers.normalize(callee) if callee else None
        if self._match is not None:
            reason = None if trunk is not None and self._match.fullmatch(trunk) else NOT_A_TRUNK
        else:
            reason = None if found is None or found.e164 else INTERNAL_NUMBER
        if reason is not None:
            self.skipped[reason] += 1
        return LegVerdict(trunk, found.text if found is not None else callee, reason)  # as the outcome shows it

    def skip(self, reason: str, trunk: str | None = None, callee: str | None = None) -> LegVerdict:
        """A leg the connector itself ruled out before judging (FreeSWITCH direction, gateway)."""
        self.skipped[reason] += 1
        return LegVerdict(trunk, callee, reason)
