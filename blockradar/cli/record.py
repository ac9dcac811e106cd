"""``blockradar record --connector NAME > file``: save a live PBX stream byte-exact, in the format
``blockradar replay`` reads, so operators can backtest rules and thresholds on their own traffic.
``blockradar record --hep`` saves the HEP datagrams the PBX mirrors instead: each a big-endian uint32
length and the datagram exactly as received."""

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


async def _record_hep(host: str, port: int, out: BinaryIO) -> int:
    from blockradar.connectors.hep.wire import record as hep_record

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    written = [0]

    class Writer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            chunk = hep_record(data)
            out.write(chunk)
            written[0] += len(chunk)

    transport, _ = await loop.create_datagram_endpoint(Writer, local_addr=(host, port))
    try:
        await stop.wait()
    finally:
        transport.close()
    return written[0]


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="The daemon config file that defines the connector (or the hep: section).")
@click.option("--connector", "name", default=None, help="Name of the connector to record.")
@click.option("--hep", "hep", is_flag=True, help="Record the HEP datagrams the PBX sends instead (on the config's "
              "hep.listen, or --listen).")
@click.option("--listen", default=None, metavar="HOST:PORT", help="With --hep: where to listen (default: the "
              "config's hep.listen, else 127.0.0.1:9060). Not while the daemon listens there.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write here instead of standard output.")
def record(config_path: str | None, name: str | None, hep: bool, listen: str | None, output: str | None) -> None:
    """Record a live AMI or ESL stream (or, with --hep, the HEP datagrams) until Ctrl-C (or SIGTERM)."""
    loaded = None
    if config_path is not None:
        try:
            loaded = load_config(config_path)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
    if hep:
        _hep(listen or (loaded.config.hep.listen if loaded and loaded.config.hep else "127.0.0.1:9060"), output)
        return
    if loaded is None or name is None:
        raise click.UsageError("give --config and --connector NAME (or --hep)")
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


def _hep(listen: str, output: str | None) -> None:
    from blockradar.config import split_host_port

    try:
        host, port = split_host_port(listen)
    except ValueError:
        raise click.BadParameter(f"expected host:port, not {listen!r}", param_hint="--listen") from None
    out: BinaryIO = open(output, "wb", buffering=0) if output else os.fdopen(  # noqa: SIM115 - closed below
        sys.stdout.fileno(), "wb", buffering=0, closefd=False)
    click.echo(f"recording HEP on udp {listen} until Ctrl-C", err=True)
    try:
        written = asyncio.run(_record_hep(host, port, out))
    except OSError as exc:
        click.echo(f"blockradar record: cannot listen on udp {listen}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    finally:
        out.close()
    click.echo(f"recorded {written} bytes of HEP from udp {listen}", err=True)
