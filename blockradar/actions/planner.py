"""Alert transitions and time -> action decisions (``apply``, ``restore``, ``held``), for every action of
the config: the one policy the daemon executes and ``replay`` backtests. A decision is a record (the
``{"kind": "action", ...}`` JSON line of ``replay --json``) with what runs, in words without secrets.

The planner also says which numbers' guardrail state changed (``changed_states``), for the store to keep
with the decisions, takes that state back after a restart (``load``), and squares it with the alerts
the restarted daemon found firing (``reconcile``): a crash between an alert's state and its decision
being written neither loses the apply nor repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from blockradar.actions.guardrails import Guardrails, NumberState, Verdict
from blockradar.actions.kinds import executor_for
from blockradar.actions.kinds.base import ActionBase
from blockradar.outcome import from_iso


@dataclass(slots=True)
class ActionDecision:
    action: str
    phase: str  # apply | restore | held
    caller_number: str
    at: float
    dry_run: bool
    threshold: str = ""
    trunk: str | None = None
    fingerprint: str = ""
    reason: str = ""
    command: list[str] | None = None  # what runs, in words (no secrets)
    target: str = ""  # where a number rests: "in VICIdial CID group NATIONAL"
    context: dict[str, str] = field(default_factory=dict)  # the template fields, for the run

    @property
    def status(self) -> str:
        """What the queue makes of it: ``held`` and ``dry-run`` are only reported, ``pending`` runs."""
        return "held" if self.phase == "held" else "dry-run" if self.dry_run else "pending"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "action", "action": self.action, "phase": self.phase,
                               "caller_number": self.caller_number, "dry_run": self.dry_run, "at": self.at,
                               "threshold": self.threshold, "trunk": self.trunk, "fingerprint": self.fingerprint,
                               "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.command is not None:
            out["command"] = self.command
        if self.target:
            out["target"] = self.target
        return out


def why_or_what(record: Mapping[str, Any]) -> str:
    """A decision in words, for a table: why it was decided (held, an undo), else what runs (the command,
    the request, else where it rests a number). ``record`` is a decision's dict or its stored row."""
    return str(record.get("reason") or " ".join(record.get("command") or []) or record.get("target") or "")


def national_number(number: str) -> str:
    try:
        return str(phonenumbers.parse(number).national_number)
    except phonenumbers.NumberParseException:
        return number.lstrip("+")


@dataclass(slots=True)
class StateRow:
    """A number's guardrail state with what the store keeps beside it."""

    action: str
    state: NumberState
    context: dict[str, str]
    alert_fired_at: float | None


class ActionPlanner:
    """Every configured action with its guardrails; feed it transitions (``on_transition``) and time
    (``tick``)."""

    def __init__(self, actions: list[ActionBase]) -> None:
        self.actions = actions
        self.guards = {a.name: Guardrails(a) for a in actions}
        self.executors = {a.name: executor_for(a) for a in actions}
        self._context: dict[tuple[str, str], dict[str, str]] = {}  # (action, number) -> its alert's fields
        self._fired_at: dict[tuple[str, str], float | None] = {}  # the alert episode each decision was for
        self._dirty: set[tuple[str, str]] = set()
        # the alerts firing now per (action, number): with several thresholds in ``when`` the number is back
        # only once the last of them resolved
        self._firing: dict[tuple[str, str], set[str]] = {}

    # -- alerts -----------------------------------------------------------------------------------
    def on_transition(self, snapshot: dict[str, Any], now: float | None = None) -> list[ActionDecision]:
        scope = snapshot.get("scope") or {}
        number = scope.get("caller_number")
        if not number:
            return []  # actions act on calling numbers; a trunk alert has none
        threshold = str(snapshot.get("threshold") or "")
        labels = {**(snapshot.get("labels") or {}), **scope}
        state = snapshot.get("state")
        fired_at = from_iso(snapshot.get("fired_at"))
        at = now if now is not None else (
            from_iso(snapshot.get("resolved_at" if state == "resolved" else "fired_at")) or 0.0)
        out = []
        for action in self.actions:
            if threshold not in action.when or not all(m.matches(labels) for m in action.matchers()):
                continue
            guard = self.guards[action.name]
            trunks = snapshot.get("trunks") or {}
            key = (action.name, number)
            self._context[key] = {
                "caller_number": number, "caller_digits": number.lstrip("+"),
                "national_number": national_number(number),
                "threshold": threshold, "severity": str(snapshot.get("severity") or ""),
                "fingerprint": str(snapshot.get("fingerprint") or ""),
                "trunk": str(labels.get("trunk") or (max(trunks, key=trunks.get) if trunks else "")),
                "action": action.name}
            self._dirty.add(key)
            alert = str(snapshot.get("fingerprint") or threshold)
            if state == "firing":
                self._fired_at[key] = fired_at
                self._firing.setdefault(key, set()).add(alert)
                verdict = guard.fired(number, int(snapshot.get("count") or 0), at)
            elif state == "resolved":
                firing = self._firing.get(key, set())
                firing.discard(alert)
                if firing:
                    continue  # another of its alerts still fires: the number stays out
                self._firing.pop(key, None)
                self._fired_at.pop(key, None)  # the episode is over: a new firing is a new one
                verdict = guard.resolved(number, at)
            else:
                continue
            decision = self._decision(action, verdict, at)
            if decision is not None:
                out.append(decision)
        return out

    def reconcile(self, firing: list[dict[str, Any]], now: float) -> list[ActionDecision]:
        """After a restart: the alerts found firing that no decision was made for yet are decided now; a
        number resting with no firing alert left gets its restore scheduled; a waiting one whose alert is
        gone stops waiting."""
        out: list[ActionDecision] = []
        alive: dict[str, set[str]] = {a.name: set() for a in self.actions}
        for snapshot in firing:
            scope = snapshot.get("scope") or {}
            number = scope.get("caller_number")
            if not number:
                continue
            threshold = str(snapshot.get("threshold") or "")
            labels = {**(snapshot.get("labels") or {}), **scope}
            for action in self.actions:
                if threshold in action.when and all(m.matches(labels) for m in action.matchers()):
                    alive[action.name].add(number)
                    self._firing.setdefault((action.name, number), set()).add(
                        str(snapshot.get("fingerprint") or threshold))
            fired_at = from_iso(snapshot.get("fired_at"))
            if any(threshold in a.when and self._fired_at.get((a.name, number)) != fired_at for a in self.actions):
                out += self.on_transition({**snapshot, "state": "firing"}, now)
        for action in self.actions:
            guard = self.guards[action.name]
            for number in list(guard.resting):
                if number not in alive[action.name] and number not in guard.restore_due:
                    guard.resolved(number, now)
                    self._dirty.add((action.name, number))
            for number in list(guard.waiting):
                if number not in alive[action.name]:
                    guard.waiting.pop(number, None)
                    self._dirty.add((action.name, number))
        return out

    # -- time and people --------------------------------------------------------------------------
    def tick(self, now: float) -> list[ActionDecision]:
        out = []
        for action in self.actions:
            guard = self.guards[action.name]
            for verdict in guard.due(now):
                self._dirty.add((action.name, verdict.number))
                decision = self._decision(action, verdict, now)
                if decision is not None:
                    out.append(decision)
            for number in guard.forget_cooled(now):
                self._dirty.add((action.name, number))
        return out

    def set_holds(self, numbers: set[str]) -> None:
        """The numbers an operator holds (``blockradar actions hold``): no apply, no restore for them."""
        for action, guard in self.guards.items():
            for number in guard.holds - numbers:
                guard.release(number)
            for number in numbers - guard.holds:
                guard.hold(number)
                self._dirty.add((action, number))

    def undo(self, action_name: str, number: str, now: float, why: str) -> list[ActionDecision]:
        """Restore a resting number now (``blockradar actions undo``)."""
        action = next((a for a in self.actions if a.name == action_name), None)
        if action is None:
            return []
        verdict = self.guards[action_name].undo(number, now)
        self._dirty.add((action_name, number))
        decision = self._decision(action, Verdict(verdict.phase, number, why) if verdict.phase != "none" else verdict,
                                  now)
        return [decision] if decision is not None else []

    def run_failed(self, action_name: str, number: str, phase: str, now: float) -> None:
        """A run that failed for good (or was given up or cancelled): the dialer was not changed. A failed
        apply leaves the number in rotation (it no longer counts against the pool); a failed restore leaves
        it out (resting, with no restore due: ``blockradar actions undo`` tries again)."""
        guard = self.guards.get(action_name)
        if guard is None:
            return
        if phase == "apply":
            guard.resting.pop(number, None)
            guard.restore_due.pop(number, None)
        elif phase == "restore":
            guard.resting[number] = now
            guard.restored_at.pop(number, None)
        self._dirty.add((action_name, number))

    # -- what the store keeps ---------------------------------------------------------------------
    def changed_states(self) -> list[StateRow]:
        rows = [StateRow(action, self.guards[action].state_of(number), self._context.get((action, number), {}),
                         self._fired_at.get((action, number))) for action, number in sorted(self._dirty)
                if action in self.guards]
        self._dirty.clear()
        return rows

    def load(self, action: str, rows: list[StateRow], applies: list[float]) -> None:
        guard = self.guards.get(action)
        if guard is None:
            return
        guard.load([r.state for r in rows], applies)
        for row in rows:
            key = (action, row.state.caller_number)
            if row.context:
                self._context[key] = row.context
            self._fired_at[key] = row.alert_fired_at

    def context(self, action: str, number: str) -> dict[str, str]:
        return dict(self._context.get((action, number)) or {"caller_number": number, "action": action})

    # -- inside -----------------------------------------------------------------------------------
    def _decision(self, action: ActionBase, verdict: Verdict, at: float) -> ActionDecision | None:
        if verdict.phase == "none":
            return None
        context = self.context(action.name, verdict.number)
        context.setdefault("caller_digits", verdict.number.lstrip("+"))
        context.setdefault("national_number", national_number(verdict.number))
        context["phase"] = verdict.phase
        executor = self.executors[action.name]
        command = executor.describe(verdict.phase, context) if verdict.phase != "held" else None
        return ActionDecision(action=action.name, phase=verdict.phase, caller_number=verdict.number, at=at,
                              dry_run=action.dry_run, threshold=context.get("threshold", ""),
                              trunk=context.get("trunk") or None, fingerprint=context.get("fingerprint", ""),
                              reason=verdict.reason, command=command or None, target=executor.target(context),
                              context=context)
