"""``kind: exec``: run a program of the operator's (``command:`` an argv list, no shell), each argument a
template (``{caller_number}``, ``{trunk}``, ``{threshold}`` ...), with a timeout and a clean environment.

The environment holds only ``PATH`` (the system's directories), ``LANG=C.UTF-8``, what ``env:`` sets and
``BLOCKRADAR_*``: ``ACTION``, ``PHASE`` (apply | restore), ``KEY`` (the same on every attempt of one run:
a command that already did the work for a key may skip it), ``ATTEMPT``, ``CALLER_NUMBER``, ``TRUNK``,
``THRESHOLD``. Nothing of the daemon's own environment (its secrets) reaches the command.

Exit status: 0 done; 75 (``EX_TEMPFAIL``) try again later; anything else a permanent failure. A command
that outlives ``timeout`` is killed with its whole process group and tried again. The first line of what
it printed (bounded) is kept as the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from blockradar.actions.kinds.base import ActionBase, ActionFailed, ActionRun, check_template, one_line, render

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EX_TEMPFAIL = 75
OUTPUT_BYTES = 65_536  # read at most this much of a command's output


class ExecAction(ActionBase):
    kind: Literal["exec"] = "exec"
    # argv lists (no shell), every argument a template ({caller_number}, {trunk}, {threshold} ...)
    command: list[str] = Field(min_length=1)
    restore_command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)  # added to the clean environment

    @field_validator("command", "restore_command")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        for argument in value or []:
            check_template(argument)
        if value and "{" in value[0]:
            raise ValueError("the program (the first item) cannot be a template")
        return value

    @model_validator(mode="after")
    def _program_exists(self) -> ExecAction:
        if not self.dry_run:  # a dry run may name a program this machine does not have yet
            for argv in (self.command, self.restore_command):
                if argv and program_path(argv[0]) is None:
                    raise ValueError(f"program {argv[0]!r} not found (PATH={CLEAN_PATH}) or not executable")
        return self


def program_path(program: str) -> str | None:
    return shutil.which(program, path=CLEAN_PATH) if os.sep not in program else (
        program if os.access(program, os.X_OK) else None)


def process_start_ticks(pid: int) -> int | None:
    """When a running process started (clock ticks since boot, /proc/PID/stat field 22): with the PID it
    names one process, so a restarted daemon can tell its own orphaned command from an unrelated one.
    None when there is no such process, or only its zombie (an init that does not reap, in a container)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


class ExecExecutor:
    kind: ClassVar[str] = "exec"

    def __init__(self, config: ExecAction) -> None:
        self.config = config

    def argv(self, phase: str, context: dict[str, str]) -> list[str] | None:
        template = self.config.command if phase == "apply" else self.config.restore_command
        return [render(argument, context) for argument in template] if template else None

    def describe(self, phase: str, context: dict[str, str]) -> list[str]:
        return self.argv(phase, context) or []

    def target(self, context: dict[str, str]) -> str:
        return f"with {os.path.basename(self.config.command[0])}"

    async def run(self, run: ActionRun) -> str:
        argv = self.argv(run.phase, run.context)
        if argv is None:
            return "no restore_command: nothing to run"
        program = program_path(argv[0])
        if program is None:
            raise ActionFailed(f"program {argv[0]!r} not found or not executable", retry=False)
        env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", **self.config.env,
               "BLOCKRADAR_ACTION": self.config.name, "BLOCKRADAR_PHASE": run.phase, "BLOCKRADAR_KEY": run.key,
               "BLOCKRADAR_ATTEMPT": str(run.attempt),
               "BLOCKRADAR_CALLER_NUMBER": run.context.get("caller_number", ""),
               "BLOCKRADAR_TRUNK": run.context.get("trunk", ""),
               "BLOCKRADAR_THRESHOLD": run.context.get("threshold", "")}
        try:
            proc = await asyncio.create_subprocess_exec(
                program, *argv[1:], stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, cwd="/", start_new_session=True)
        except OSError as exc:
            raise ActionFailed(f"cannot start {argv[0]}: {exc.strerror or exc}", retry=False) from None
        if run.on_started is not None:
            try:
                run.on_started(proc.pid, process_start_ticks(proc.pid))
            except BaseException:  # not recorded: a restart could not tell it runs; never leave it behind
                kill_group(proc.pid)
                await proc.wait()
                raise
        try:
            async with asyncio.timeout(self.config.timeout):
                assert proc.stdout is not None
                output = await proc.stdout.read(OUTPUT_BYTES)
                while await proc.stdout.read(OUTPUT_BYTES):  # drain the rest, unkept
                    pass
                status = await proc.wait()
        except TimeoutError:
            kill_group(proc.pid)
            await proc.wait()
            raise ActionFailed(f"{argv[0]} did not finish within {self.config.timeout:g}s (killed)") from None
        except asyncio.CancelledError:
            kill_group(proc.pid)
            raise
        text = one_line(output.decode("utf-8", "replace"))
        if status == 0:
            return text or "exit 0"
        if status == EX_TEMPFAIL:
            raise ActionFailed(f"{argv[0]} exit {status} (try again later){': ' + text if text else ''}")
        reason = f"killed by signal {-status}" if status < 0 else f"exit {status}"
        raise ActionFailed(f"{argv[0]} {reason}{': ' + text if text else ''}", retry=False)

    async def aclose(self) -> None:
        return None


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
