"""What one action may do now, for one calling number: the guardrails of issue 14, as pure state
driven by event time (the daemon's clock live, the recording's in ``replay``).

* **apply** (its alert fired) unless: an operator holds the number; it is resting already; the alert's
  evidence is below ``min_count``; the number was restored less than ``cooldown`` ago; ``max_per_hour``
  applies were made in the last hour; resting it would put more than ``max_pool_share`` of the pool at
  rest. A number the caps stop *waits*: it is applied once there is room again and its alert still
  fires (another number restored, the hour moved on), and reported ``held`` meanwhile.
* **restore** ``restore_after`` after its alert resolved (never without one); a new firing before then
  cancels the restore.
* **hold** / **release**: an operator freezes a number (no apply, no restore) and lets it go again (a
  restore that fell due meanwhile follows the release); ``undo`` restores a resting number at once.

The state of each number (``NumberState``) is what the store keeps (``action_state``), so a restarted
daemon knows what rests, what is due back and what cools down; the hourly cap is rebuilt from the log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from blockradar.actions.kinds.base import ActionBase

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guardrails say about one number now: ``apply``, ``restore``, ``held`` (with why), or
    ``none`` (nothing to do, nothing to report)."""

    phase: str
    number: str
    reason: str = ""


@dataclass(slots=True)
class NumberState:
    """One number's guardrail state in one action, as the store keeps it (``action_state``)."""

    caller_number: str
    resting_since: float | None = None
    restore_due: float | None = None
    restored_at: float | None = None
    waiting: int | None = None  # held back by a cap, with its alert's count

    def empty(self) -> bool:
        return self.resting_since is None and self.restore_due is None and self.waiting is None and (
            self.restored_at is None)


class Guardrails:
    """The resting numbers of one action and the caps around them."""

    def __init__(self, config: ActionBase) -> None:
        self.config = config
        self.pool = set(config.pool)
        self.cap = config.pool_cap()
        self.resting: dict[str, float] = {}  # number -> since
        self.restore_due: dict[str, float] = {}  # number -> when it is restored (its alert resolved)
        self.restored_at: dict[str, float] = {}  # number -> last restore (cooldown)
        self.waiting: dict[str, int] = {}  # numbers a cap held back, with their alert's count
        self.holds: set[str] = set()
        self._applies: deque[float] = deque()

    # -- alert transitions ------------------------------------------------------------------------
    def fired(self, number: str, count: int, now: float) -> Verdict:
        """The alert on ``number`` fires (or fires again): apply, or say why not."""
        self.restore_due.pop(number, None)  # firing again: no restore is due
        if number in self.holds:
            return Verdict("held", number, "held by an operator")
        if number in self.resting:
            return Verdict("none", number)
        if self.pool and number not in self.pool:
            return Verdict("held", number, "not in the action's pool")
        if count < self.config.min_count:
            return Verdict("held", number, f"{count} matching call(s), fewer than min_count {self.config.min_count}")
        last = self.restored_at.get(number)
        if last is not None and now - last < self.config.cooldown:
            return Verdict("held", number, f"cooling down until {self.config.cooldown - (now - last):.0f} s from now")
        blocked = self._cap_reason(now)
        if blocked:
            self.waiting[number] = count
            return Verdict("held", number, blocked)
        return self._apply(number, now)

    def resolved(self, number: str, now: float) -> Verdict:
        """The alert on ``number`` resolved: its restore is scheduled (``restore_after``)."""
        self.waiting.pop(number, None)
        if number in self.resting and self.config.restore_after is not None:
            self.restore_due[number] = now + self.config.restore_after  # a held number: once it is released
        return Verdict("none", number)

    # -- time -------------------------------------------------------------------------------------
    def due(self, now: float) -> list[Verdict]:
        """Restores that are due, then the waiting applies that now have room (oldest first)."""
        out = []
        for number, at in sorted(self.restore_due.items(), key=lambda kv: kv[1]):
            if at <= now and number not in self.holds:
                out.append(self._restore(number, now))
        for number in list(self.waiting):
            if number in self.holds:
                continue
            if self._cap_reason(now):
                break
            del self.waiting[number]
            out.append(self._apply(number, now))
        return out

    # -- an operator ------------------------------------------------------------------------------
    def hold(self, number: str) -> None:
        self.holds.add(number)  # its restore, if one is due, waits for the release

    def release(self, number: str) -> None:
        self.holds.discard(number)

    def undo(self, number: str, now: float) -> Verdict:
        """Restore a resting number now (an operator's ``undo``)."""
        if number not in self.resting:
            return Verdict("none", number)
        return self._restore(number, now)

    # -- what the store keeps --------------------------------------------------------------------
    def state_of(self, number: str) -> NumberState:
        return NumberState(number, self.resting.get(number), self.restore_due.get(number),
                           self.restored_at.get(number), self.waiting.get(number))

    def load(self, states: list[NumberState], applies: list[float]) -> None:
        """Take back what a previous run left: each number's state, and the applies of the last hour."""
        for st in states:
            if st.resting_since is not None:
                self.resting[st.caller_number] = st.resting_since
            if st.restore_due is not None:
                self.restore_due[st.caller_number] = st.restore_due
            if st.restored_at is not None:
                self.restored_at[st.caller_number] = st.restored_at
            if st.waiting is not None:
                self.waiting[st.caller_number] = st.waiting
        self._applies = deque(sorted(applies))

    def forget_cooled(self, now: float) -> list[str]:
        """Numbers whose cooldown is over and that neither rest nor wait: nothing left to keep."""
        done = [n for n, at in self.restored_at.items() if now - at >= self.config.cooldown
                and n not in self.resting and n not in self.waiting]
        for number in done:
            del self.restored_at[number]
        return done

    # -- inside -----------------------------------------------------------------------------------
    def _cap_reason(self, now: float) -> str:
        while self._applies and now - self._applies[0] >= HOUR:
            self._applies.popleft()
        if len(self._applies) >= self.config.max_per_hour:
            return f"hourly cap: {self.config.max_per_hour} applied in the last hour"
        if self.cap is not None and sum(1 for n in self.resting if n in self.pool) >= self.cap:
            return (f"pool share: {self.cap} of {len(self.pool)} numbers rest already "
                    f"(max_pool_share {self.config.max_pool_share:g})")
        return ""

    def _apply(self, number: str, now: float) -> Verdict:
        self.resting[number] = now
        self._applies.append(now)
        return Verdict("apply", number)

    def _restore(self, number: str, now: float) -> Verdict:
        self.resting.pop(number, None)
        self.restore_due.pop(number, None)
        self.restored_at[number] = now
        return Verdict("restore", number)
