"""``blockradar record --connector NAME > file``: save a live PBX stream byte-exact, in the format
``blockradar replay`` reads, so operators can backtest rules and thresholds on their own traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import BinaryIO

import click

from blockradar.config import ConfigError, load_config


async def _record(connector_config: object, out: BinaryIO) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    kind = getattr(connector_config, "type", None)
    runtime = connector_config.to_runtime()  # type: ignore[attr-defined]
    if kind == "asterisk":
        from blockradar.connectors.asterisk import record_ami

        return await record_ami(runtime, out, stop)
    from blockradar.connectors.freeswitch import record_esl

    return await record_esl(runtime, out, stop)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The daemon config file that defines the connector.")
@click.option("--connector", "name", required=True, help="Name of the connector to record.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write here instead of standard output.")
def record(config_path: str, name: str, output: str | None) -> None:
    """Record a live AMI or ESL stream until Ctrl-C (or SIGTERM)."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    match = [c for c in loaded.config.connectors if c.name == name]
    if not match:
        names = ", ".join(c.name for c in loaded.config.connectors) or "none"
        click.echo(f"blockradar record: no connector {name!r} in {config_path} (connectors: {names})", err=True)
        sys.exit(2)
    # unbuffered: every chunk is on disk (or in the pipe) as soon as it arrives, for tail -f and crashes
    out: BinaryIO = open(output, "wb", buffering=0) if output else os.fdopen(  # noqa: SIM115 - closed below
        sys.stdout.fileno(), "wb", buffering=0, closefd=False)
    try:
        written = asyncio.run(_record(match[0], out))
    except OSError as exc:
        click.echo(f"blockradar record: cannot connect to {name}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # AmiAuthError / EslAuthError / EslCommandError: messages carry no secret
        click.echo(f"blockradar record: {name}: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    finally:
        out.close()
    click.echo(f"recorded {written} bytes from {name}", err=True)
