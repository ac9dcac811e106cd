"""The actions' durable queue: every apply or restore that is to run (not a dry run) is a row of the
store's ``action_log``, committed before anything runs, and one worker per action runs the rows of each
number **in order** (an apply never overtakes the restore before it), the numbers side by side.

* **Retries.** A run that may succeed later (a timeout, a 5xx, a dialer or PBX that is down) is tried
  again after a growing pause (the action's ``backoff_initial`` doubling to ``backoff_max``, with
  jitter, or the peer's ``Retry-After``); the other numbers' rows go on meanwhile. A permanent failure
  marks the row ``failed`` (the planner is told: the dialer did not change); a row older than the
  action's ``give_up_after`` fails with its last error.
* **Idempotency.** Each row has a key, ``<action>.<row id>``, the same on every attempt and after a
  restart: ``Idempotency-Key`` for http, ``BLOCKRADAR_KEY`` for exec. The kinds set a state rather than
  toggle one (deactivate a CID, put a DB entry), so a repeat of a run changes nothing.
* **kill -9.** A row is marked ``running`` (committed) before it runs and ``done`` after. A restart finds
  a ``running`` row *in doubt*: if its command (exec) still runs, orphaned, it waits for it to end (and
  kills it once it has run past the action's ``timeout``); then it runs the row again with the same key.
  Nothing queued is lost (``pending`` rows run after the restart) and nothing done is run again
  (``done`` rows are never looked at).
* **A clean stop** puts the running row back to ``pending``; the next start runs it.

It also keeps, per number, the latest word on each action (``notes``) for the notifications: "rested
+15557650001 in VICIdial CID group NATIONAL".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blockradar.actions.kinds import ActionFailed, ActionRun
from blockradar.actions.kinds.base import one_line
from blockradar.actions.kinds.exec import kill_group, process_start_ticks
from blockradar.actions.planner import ActionDecision, ActionPlanner
from blockradar.clock import Clock, SystemClock
from blockradar.logs import fields
from blockradar.outcome import iso
from blockradar.store import STORE_ERRORS, Store
from blockradar.wakeups import wake

log = logging.getLogger(__name__)

MAX_NOTES = 10_000  # numbers whose latest action word is kept for the notifications
ORPHAN_POLL_S = 0.5

VERBS = {  # (phase, status) -> what a message says
    ("apply", "dry-run"): "would rest", ("apply", "pending"): "resting", ("apply", "running"): "resting",
    ("apply", "done"): "rested", ("apply", "failed"): "could not rest",
    ("restore", "dry-run"): "would put back", ("restore", "pending"): "putting back",
    ("restore", "running"): "putting back", ("restore", "done"): "put back",
    ("restore", "failed"): "could not put back",
}


@dataclass(slots=True)
class ActionNote:
    """The latest word on one action for one number."""

    action: str
    phase: str
    status: str
    target: str
    detail: str = ""  # why held, or what failed

    def line(self, number: str) -> str:
        if self.phase == "held":
            return f"{self.action}: did not rest {number}: {self.detail}"
        verb = VERBS.get((self.phase, self.status), self.status)
        text = f"{self.action}: {verb} {number} {self.target}".rstrip()
        if self.status == "dry-run":
            text += " (dry run)"
        if self.status == "failed" and self.detail:
            text += f": {self.detail}"
        return text


class ActionQueue:
    def __init__(self, store: Store, planner: ActionPlanner, *, clock: Clock | None = None,
                 poll_interval: float = 1.0, rng: random.Random | None = None,
                 on_result: Callable[[str, str, str, str, int], None] | None = None) -> None:
        self.store = store
        self.planner = planner
        self.clock = clock or SystemClock()
        self.poll_interval = poll_interval
        self.rng = rng or random.Random()
        # (action, phase, result: done | retried | failed, what happened in words, failures in a row)
        self.on_result = on_result
        self.notes: OrderedDict[str, dict[str, ActionNote]] = OrderedDict()  # number -> action -> note
        self.stats: dict[str, dict[str, int]] = {a.name: {"done": 0, "retried": 0, "failed": 0}
                                                 for a in planner.actions}
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what the notifications say ---------------------------------------------------------------
    def note(self, decisions: list[ActionDecision]) -> None:
        for d in decisions:
            self._note(d.caller_number, ActionNote(d.action, d.phase, d.status, d.target, d.reason))

    def lines_for(self, number: str) -> list[str]:
        """What the actions did for ``number``, one line each, with when a resting number comes back."""
        out = []
        for note in (self.notes.get(number) or {}).values():
            line = note.line(number)
            guard = self.planner.guards.get(note.action)
            due = guard.restore_due.get(number) if guard is not None else None
            if due is not None and note.phase == "apply" and note.status in ("done", "dry-run"):
                line += f"; back in rotation at {iso(due)}"
            out.append(line)
        return out

    def _note(self, number: str, note: ActionNote) -> None:
        entry = self.notes.pop(number, None) or {}
        entry[note.action] = note
        self.notes[number] = entry
        while len(self.notes) > MAX_NOTES:
            self.notes.popitem(last=False)

    # -- running ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for action in self.planner.actions:
            if action.dry_run:
                continue
            self._events[action.name] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._worker(action.name), name=f"action:{action.name}"))
        self._cancel_unconfigured()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for executor in self.planner.executors.values():
            with contextlib.suppress(Exception):
                await executor.aclose()

    def wake(self) -> None:
        """Look at the queue now (safe from any thread: the store writer calls it after a commit)."""
        wake(self._loop, self._events.values())

    def depth(self) -> int:
        return self.store.action_depth()

    async def drain(self, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.store.action_depth() > 0:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _cancel_unconfigured(self) -> None:
        """Rows left by an action the config no longer has (or that is a dry run now): never run."""
        live = {name for name in self._events}
        for action in {a.name for a in self.planner.actions} | self.store.action_queued_names():
            if action in live:
                continue
            while (row := self.store.action_head(action)) is not None:
                self.store.action_finished(row["id"], "cancelled", "the action is no longer configured to run",
                                           self.clock.now())
                log.warning("action %s: queued %s of %s cancelled: the action is no longer configured to run",
                            action, row["phase"], row["caller_number"])

    async def _worker(self, action: str) -> None:
        event = self._events[action]
        while True:
            try:
                await self._step(action, event)
            except asyncio.CancelledError:
                raise
            except STORE_ERRORS as exc:
                self.store.report_error(exc)
                await asyncio.sleep(self.poll_interval)
            except Exception:  # never a silent death: the rows wait, the next look tries again
                log.exception("action %s: the queue worker failed; it looks again in %.0f s", action,
                              self.poll_interval)
                await asyncio.sleep(self.poll_interval)

    async def _step(self, action: str, event: asyncio.Event) -> None:
        row = self.store.action_head(action)
        now = self.clock.now()
        due = None if row is None else (row["next_attempt_at"] or 0.0)
        if row is None or (due is not None and due > now and row["status"] == "pending"):
            wait = self.poll_interval if due is None else min(self.poll_interval, due - now)
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=max(wait, 0.001))
            return
        config = next(a for a in self.planner.actions if a.name == action)
        if row["status"] == "running":  # in doubt: the daemon stopped (kill -9, power) while it ran
            if row["pid"] and row["pid_start"] and process_start_ticks(row["pid"]) == row["pid_start"]:
                if now - (row["started_at"] or now) <= config.timeout:
                    await asyncio.sleep(ORPHAN_POLL_S)  # its command still runs, orphaned: let it end first
                    return
                kill_group(row["pid"])  # orphaned and past its timeout: as if it had timed out under us
                log.warning("action %s: the orphaned command of %s (pid %d) ran past its timeout; killed",
                            action, row["caller_number"], row["pid"])
            log.warning("action %s: %s of %s was running when blockradar stopped; running it again with the same "
                        "key %s.%d (attempt %d)", action, row["phase"], row["caller_number"], action, row["id"],
                        row["attempts"] + 1, extra=fields(action=action, caller_number=row["caller_number"]))
        if now - row["at"] >= config.give_up_after:
            self._finish(row, "failed", f"gave up after {row['attempts']} attempt(s): {row['result'] or 'no answer'}")
            return
        await self._run(action, row, config.timeout)

    async def _run(self, action: str, row: dict[str, Any], timeout: float) -> None:
        log_id = row["id"]
        self.store.action_started(log_id, self.clock.now())
        run = ActionRun(key=f"{action}.{log_id}", phase=row["phase"], context=row["context"] or {},
                        attempt=row["attempts"] + 1,
                        on_started=lambda pid, ticks: self.store.action_process(log_id, pid, ticks))
        self._note(row["caller_number"], ActionNote(action, row["phase"], "running", row["target"] or ""))
        executor = self.planner.executors[action]
        try:
            result = await asyncio.wait_for(executor.run(run), timeout=timeout + 5.0)  # each kind times itself
        except asyncio.CancelledError:
            with contextlib.suppress(*STORE_ERRORS):  # a clean stop: the next start runs it again
                self.store.action_retry(log_id, self.clock.now(), "interrupted by a shutdown")
            raise
        except ActionFailed as exc:
            if exc.retry:
                self._retry(row, str(exc), exc.retry_after)
            else:
                self._finish(row, "failed", str(exc))
        except TimeoutError:
            self._retry(row, f"no result within {timeout:g}s", None)
        except Exception as exc:  # a kind's bug must not kill the worker
            log.exception("action %s: unexpected error", action)
            self._retry(row, f"unexpected {type(exc).__name__}", None)
        else:
            self._finish(row, "done", one_line(result))

    def _retry(self, row: dict[str, Any], error: str, retry_after: float | None) -> None:
        action = row["action"]
        streak = row["attempts"]  # this row's failed attempts before this one
        if retry_after is None:
            config = next(a for a in self.planner.actions if a.name == action)
            full = min(config.backoff_max, config.backoff_initial * 2 ** min(streak, 30))
            retry_after = full / 2 + self.rng.uniform(0, full / 2)
        self.store.action_retry(row["id"], self.clock.now() + retry_after, one_line(error))
        self.stats[action]["retried"] += 1
        if self.on_result is not None:
            words = (f"{action}: {row['phase']} of {row['caller_number']} failing ({streak + 1} tries): "
                     f"{one_line(error)}")
            self.on_result(action, row["phase"], "retried", words, streak + 1)
        level = logging.WARNING if streak == 0 or streak % 10 == 0 else logging.DEBUG
        log.log(level, "action %s: %s of %s failed (%s); trying again in %.1f s (attempt %d)", action, row["phase"],
                row["caller_number"], error, retry_after, row["attempts"] + 1,
                extra=fields(action=action, caller_number=row["caller_number"]))

    def _finish(self, row: dict[str, Any], status: str, result: str) -> None:
        action, number = row["action"], row["caller_number"]
        streak = row["attempts"]
        self.store.action_finished(row["id"], status, result, self.clock.now())
        if status != "done":  # the dialer was not changed: the planner must not believe it was
            self.planner.run_failed(action, number, row["phase"], self.clock.now())
        counts = self.stats.setdefault(action, {"done": 0, "retried": 0, "failed": 0})
        counts["done" if status == "done" else "failed"] += 1
        self._note(number, ActionNote(action, row["phase"], status, row["target"] or "", result))
        words = ActionNote(action, row["phase"], status, row["target"] or "", result).line(number)
        if self.on_result is not None:
            self.on_result(action, row["phase"], "done" if status == "done" else "failed", words, streak)
        if status == "done":
            log.info("action %s (attempt %d): %s", words, row["attempts"] + 1, result,
                     extra=fields(action=action, phase=row["phase"], caller_number=number))
        else:
            log.error("action %s (attempt %d)", words, row["attempts"] + 1,
                      extra=fields(action=action, phase=row["phase"], caller_number=number))
