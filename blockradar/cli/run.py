"""``blockradar run --config FILE``: the daemon beside the PBX.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 when the config, a rule file or the store is
unusable (nothing has started then), 1 on an unexpected crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from typing import Any

import click

from blockradar.config import SECRET_KEYS, ConfigError, DaemonConfig, LoadedConfig, load_config, read_env_file
from blockradar.logs import setup_logging

log = logging.getLogger("blockradar")


def config_secrets(config: DaemonConfig) -> list[str]:
    """Every secret value in a config, for the log redaction filter."""
    found: list[str] = []
    for connector in config.connectors:
        for attr in ("secret", "password"):
            value = getattr(connector, attr, None)
            if value is not None:
                found.append(value.get_secret_value())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in SECRET_KEYS and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config.notifiers)
    for action in config.actions:  # the vicidial password, the AMI secret, http URLs and header values
        found += action_secrets(action)
    if config.hep is not None and config.hep.password is not None:
        found.append(config.hep.password.get_secret_value())
    if config.fleet is not None:
        found += config.fleet.secrets()
    return found


def action_secrets(node: Any) -> list[str]:
    """The Secret values of an action's settings (nested ones too); of a templated one, its literal parts."""
    from pydantic import BaseModel

    from blockradar.secret import Secret

    out: list[str] = []
    values = [getattr(node, name) for name in type(node).model_fields] if isinstance(node, BaseModel) else (
        list(node.values()) if isinstance(node, dict) else [])
    for value in values:
        if isinstance(value, Secret):
            text = value.reveal()
            out += [piece for piece in re.split(r"\{[a-z_]+\}", text) if len(piece) >= 8] if "{" in text else [text]
        elif isinstance(value, BaseModel | dict):
            out += action_secrets(value)
    return [s for s in out if s]


async def serve(loaded: LoadedConfig) -> int:
    from blockradar.daemon import Daemon, StartupError

    daemon = Daemon(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.start()
    except StartupError as exc:
        click.echo(str(exc), err=True)
        await daemon.stop(flush_s=0)
        return 2
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    log.info("blockradar running (pid %d); SIGHUP reloads rules and thresholds, SIGTERM stops", os.getpid())
    await stop.wait()
    log.info("stopping: closing connectors, flushing the outbox")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(sig)
    drained = await daemon.stop()
    log.info("stopped%s", "" if drained else " (outbox not empty: it is kept for the next start)")
    return 0


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The daemon config file (see examples/blockradar.yaml).")
@click.option("--log-format", type=click.Choice(["human", "json"]), default=None,
              help="Log format (default: the config's log_format, else human).")
@click.option("--check", is_flag=True,
              help="Validate the config, the rule files and the store (nothing is written), then exit (0 ok, 2 not).")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help="Read ${VAR}s from this KEY=VALUE file too, as the unit's EnvironmentFile= does "
                   "(e.g. /etc/blockradar/blockradar.env for a --check outside systemd).")
@click.pass_context
def run(ctx: click.Context, config_path: str, log_format: str | None, check: bool, env_file: str | None) -> None:
    """Run the daemon: follow the PBXes, classify, alert."""
    try:
        if env_file is not None:
            os.environ.update(read_env_file(env_file))  # reloads read the same environment
        loaded = load_config(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if check:
        from blockradar.ruleset import build_ruleset

        ruleset, report = build_ruleset(loaded.config.rules)
        for problem in report.errors + report.warnings:
            click.echo(str(problem), err=True)
        if ruleset is None:
            sys.exit(2)
        cfg = loaded.config
        from blockradar.store import store_problem

        problem = store_problem(cfg.store)
        if problem is not None:
            click.echo(f"{config_path}: store: {problem}", err=True)
            sys.exit(2)
        live = sum(not a.dry_run for a in cfg.actions)
        actions = f", {len(cfg.actions)} action(s) ({live} run for real, {len(cfg.actions) - live} dry run)" \
            if cfg.actions else ""
        click.echo(f"ok: {config_path}: {len(cfg.connectors)} connector(s), {len(ruleset.rules)} rules, "
                   f"{len(cfg.effective_thresholds())} thresholds, {len(cfg.notifiers)} notifier(s){actions}")
        return
    verbose = ctx.find_root().params.get("verbose", 0) or 0
    setup_logging(log_format or loaded.config.log_format, logging.DEBUG if verbose > 1 else logging.INFO,
                  secrets=config_secrets(loaded.config))
    try:
        code = asyncio.run(serve(loaded))
    except Exception:
        log.exception("blockradar crashed")
        sys.exit(1)
    sys.exit(code)
