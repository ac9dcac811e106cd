"""``kind: asterisk-db``: rest a caller ID in Asterisk's own database. Apply is AMI ``DBPut`` of
``family``/``key`` (``blockradar-rest``/``{caller_digits}``), restore is ``DBDel``; a dialplan checks the
entry before it uses a caller ID (``examples/asterisk/blockradar-rest.conf``, FreePBX and plain Asterisk).

It logs in as an AMI user of its own: DBPut and DBDel need the ``system`` write class, which the
monitoring user (``[blockradar]``, read-only) must never have (``examples/asterisk/manager_actions.conf``).
Each run is one short session: banner, Login, the action, Logoff, framed by the connector's ``AmiFramer``
(panoramisk's Manager brings a reconnect loop and a pinger a four-line exchange does not want).

Both are idempotent, which is what makes a retry after a crash safe: DBPut of the same entry writes the
same value; a DBDel that finds no entry ("Database entry could not be deleted") means the number is back
already, and counts as done.
A refused login or a refused action (the user lacks ``write = system``) is permanent; no answer, a
refused connection or a timeout is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from blockradar.actions.kinds.base import ActionBase, ActionFailed, ActionRun, check_template, one_line, render
from blockradar.alerting.notifiers.base import SecretValue, network_reason
from blockradar.connectors.ami_wire import BANNER_PREFIX, AmiFramer, parse_frame

_ids = itertools.count(1)


class AsteriskDbAction(ActionBase):
    kind: Literal["asterisk-db"] = "asterisk-db"
    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = Field(min_length=1)  # the actions user, not the monitoring one
    secret: SecretValue
    tls: bool = False
    ca_file: str | None = None
    family: str = Field(default="blockradar-rest", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key: str = "{caller_digits}"
    value: str = "{threshold}"  # what the dialplan (or an operator's `database show`) reads

    @field_validator("key", "value")
    @classmethod
    def _template(cls, value: str) -> str:
        check_template(value)
        if any(c in value for c in "\r\n"):
            raise ValueError("one line only")
        return value


class AsteriskDbExecutor:
    kind: ClassVar[str] = "asterisk-db"

    def __init__(self, config: AsteriskDbAction) -> None:
        self.config = config

    def entry(self, context: dict[str, str]) -> tuple[str, str]:
        return self.config.family, _clean(render(self.config.key, context))

    def describe(self, phase: str, context: dict[str, str]) -> list[str]:
        family, key = self.entry(context)
        if phase == "apply":
            return ["DBPut", f"{family}/{key}", _clean(render(self.config.value, context))]
        return ["DBDel", f"{family}/{key}"]

    def target(self, context: dict[str, str]) -> str:
        family, key = self.entry(context)
        return f"in Asterisk's database ({family}/{key})"

    async def run(self, run: ActionRun) -> str:
        family, key = self.entry(run.context)
        if run.phase == "apply":
            action = {"Action": "DBPut", "Family": family, "Key": key,
                      "Val": _clean(render(self.config.value, run.context)) or "1"}
        else:
            action = {"Action": "DBDel", "Family": family, "Key": key}
        try:
            async with asyncio.timeout(self.config.timeout):
                return await self._session(action)
        except TimeoutError:
            raise ActionFailed(f"AMI {self.where()}: no answer within {self.config.timeout:g}s") from None

    def where(self) -> str:
        return f"{'tls' if self.config.tls else 'tcp'}://{self.config.host}:{self.config.port}"

    async def _session(self, action: dict[str, str]) -> str:
        cfg = self.config
        context = ssl.create_default_context(cafile=cfg.ca_file) if cfg.tls else None
        try:
            reader, writer = await asyncio.open_connection(cfg.host, cfg.port, ssl=context)
        except (OSError, ssl.SSLError) as exc:
            raise ActionFailed(f"AMI {self.where()}: cannot connect: {network_reason(exc)}") from None
        framer = AmiFramer()
        pending: list[bytes] = []
        try:
            banner = await reader.readline()
            if not banner.startswith(BANNER_PREFIX):
                raise ActionFailed(f"AMI {self.where()}: not an Asterisk manager (greeting "
                                   f"{one_line(banner.decode('utf-8', 'replace'), 60)!r})")

            async def exchange(fields: dict[str, str]) -> dict[str, str]:
                action_id = f"blockradar-action-{next(_ids)}"
                writer.write("".join(f"{k}: {v}\r\n" for k, v in {**fields, "ActionID": action_id}.items())
                             .encode() + b"\r\n")
                await writer.drain()
                while True:
                    while pending:
                        frame = parse_frame(pending.pop(0))
                        if frame is not None and frame.get("ActionID") == action_id and "Response" in frame:
                            return frame
                    data = await reader.read(65536)
                    if not data:
                        raise ActionFailed(f"AMI {self.where()}: connection closed during {fields['Action']}")
                    pending.extend(framer.feed(data))

            login = await exchange({"Action": "Login", "Username": cfg.username, "Secret": cfg.secret.reveal(),
                                    "Events": "off"})
            if login.get("Response") != "Success":
                raise ActionFailed(f"AMI {self.where()}: login as {cfg.username} refused "
                                   f"({one_line(login.get('Message', ''), 80)})", retry=False)
            answer = await exchange(action)
            message = one_line(answer.get("Message", ""), 120)
            with contextlib.suppress(TimeoutError, ActionFailed, ConnectionError):
                await asyncio.wait_for(exchange({"Action": "Logoff"}), 2.0)
        except (ConnectionError, ssl.SSLError) as exc:
            raise ActionFailed(f"AMI {self.where()}: {network_reason(exc)}") from None
        finally:
            writer.close()
        if answer.get("Response") == "Success":
            return f"{action['Action']} {action['Family']}/{action['Key']}: {message or 'Success'}"
        # Asterisk 22 answers a DBDel of a missing key "Database entry could not be deleted" (lab, MANIFEST)
        if action["Action"] == "DBDel" and "could not be deleted" in message.lower():
            return f"DBDel {action['Family']}/{action['Key']}: no entry (the number is back already)"
        raise ActionFailed(f"AMI {action['Action']} {action['Family']}/{action['Key']} refused: {message or 'Error'}",
                           retry=False)

    async def aclose(self) -> None:
        return None


def _clean(text: str) -> str:
    """A value on one AMI line: no CR/LF (a header injection), bounded."""
    return " ".join(text.split())[:200]
