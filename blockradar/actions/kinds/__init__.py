"""The kinds of action, one module each with its settings and its executor: ``exec`` (a program, no
shell), ``http`` (a request), ``vicidial`` (the non-agent API), ``asterisk-db`` (AMI DBPut/DBDel)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from blockradar.actions.kinds.asterisk_db import AsteriskDbAction, AsteriskDbExecutor
from blockradar.actions.kinds.base import ActionBase, ActionFailed, ActionRun, Executor
from blockradar.actions.kinds.exec import ExecAction, ExecExecutor
from blockradar.actions.kinds.http import HttpAction, HttpExecutor
from blockradar.actions.kinds.vicidial import VicidialAction, VicidialExecutor

ActionConfig = Annotated[ExecAction | HttpAction | VicidialAction | AsteriskDbAction, Field(discriminator="kind")]
EXECUTORS: dict[str, type] = {"exec": ExecExecutor, "http": HttpExecutor, "vicidial": VicidialExecutor,
                              "asterisk-db": AsteriskDbExecutor}
KINDS = tuple(EXECUTORS)


def executor_for(config: ActionBase) -> Executor:
    executor: Executor = EXECUTORS[config.kind](config)
    return executor


__all__ = ["KINDS", "ActionBase", "ActionConfig", "ActionFailed", "ActionRun", "Executor", "executor_for"]
