"""Alert transitions and time -> action decisions (``apply``, ``restore``, ``held``), for every action of
the config: the one policy the daemon executes and ``replay`` backtests. A decision is a record (the
``{"kind": "action", ...}`` JSON line of ``replay --json``) with what would run: the rendered command."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blockradar.actions.config import ActionConfig, render
from blockradar.actions.guardrails import Guardrails, Verdict
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
    command: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "action", "action": self.action, "phase": self.phase,
                               "caller_number": self.caller_number, "dry_run": self.dry_run, "at": self.at,
                               "threshold": self.threshold, "trunk": self.trunk, "fingerprint": self.fingerprint}
        if self.reason:
            out["reason"] = self.reason
        if self.command is not None:
            out["command"] = self.command
        return out


class ActionPlanner:
    """Every configured action with its guardrails; feed it transitions (``on_transition``) and time
    (``tick``)."""

    def __init__(self, actions: list[ActionConfig]) -> None:
        self.actions = actions
        self.guards = {a.name: Guardrails(a) for a in actions}
        self._context: dict[tuple[str, str], dict[str, str]] = {}  # (action, number) -> its alert's fields

    def on_transition(self, snapshot: dict[str, Any], now: float | None = None) -> list[ActionDecision]:
        scope = snapshot.get("scope") or {}
        number = scope.get("caller_number")
        if not number:
            return []  # actions act on calling numbers; a trunk alert has none
        threshold = str(snapshot.get("threshold") or "")
        labels = {**(snapshot.get("labels") or {}), **scope}
        state = snapshot.get("state")
        at = now if now is not None else (
            from_iso(snapshot.get("resolved_at" if state == "resolved" else "fired_at")) or 0.0)
        out = []
        for action in self.actions:
            if threshold not in action.when or not all(m.matches(labels) for m in action.matchers()):
                continue
            guard = self.guards[action.name]
            trunks = snapshot.get("trunks") or {}
            context = {"caller_number": number, "caller_digits": number.lstrip("+"), "threshold": threshold,
                       "severity": str(snapshot.get("severity") or ""), "fingerprint": str(snapshot.get("fingerprint")
                                                                                            or ""),
                       "trunk": str(labels.get("trunk") or (max(trunks, key=trunks.get) if trunks else "")),
                       "action": action.name}
            self._context[(action.name, number)] = context
            if state == "firing":
                verdict = guard.fired(number, int(snapshot.get("count") or 0), at)
            elif state == "resolved":
                verdict = guard.resolved(number, at)
            else:
                continue
            decision = self._decision(action, verdict, at)
            if decision is not None:
                out.append(decision)
        return out

    def set_holds(self, numbers: set[str]) -> None:
        """The numbers an operator holds (``blockradar actions hold``): no apply, no restore for them."""
        for guard in self.guards.values():
            for number in guard.holds - numbers:
                guard.release(number)
            for number in numbers - guard.holds:
                guard.hold(number)

    def tick(self, now: float) -> list[ActionDecision]:
        out = []
        for action in self.actions:
            for verdict in self.guards[action.name].due(now):
                decision = self._decision(action, verdict, now)
                if decision is not None:
                    out.append(decision)
        return out

    def _decision(self, action: ActionConfig, verdict: Verdict, at: float) -> ActionDecision | None:
        if verdict.phase == "none":
            return None
        context = dict(self._context.get((action.name, verdict.number)) or {"caller_number": verdict.number})
        context["phase"] = verdict.phase
        template = action.command if verdict.phase == "apply" else action.restore_command
        command = [render(arg, context) for arg in template] if template and verdict.phase != "held" else None
        return ActionDecision(action=action.name, phase=verdict.phase, caller_number=verdict.number, at=at,
                              dry_run=action.dry_run, threshold=context.get("threshold", ""),
                              trunk=context.get("trunk") or None, fingerprint=context.get("fingerprint", ""),
                              reason=verdict.reason, command=command)

