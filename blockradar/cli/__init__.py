"""The ``blockradar`` command line. Each subcommand lives in its own module and is imported only
when used, so ``blockradar explain`` does not pay for gevent or aiohttp."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

# command name -> "module:attribute" (a click.Command)
SUBCOMMANDS: dict[str, str] = {
    "explain": "blockradar.cli.explain:explain",
    "rules": "blockradar.cli.rules:rules",
    "replay": "blockradar.cli.replay:replay",
    "record": "blockradar.cli.record:record",
    "run": "blockradar.cli.run:run",
    "demo": "blockradar.cli.demo:demo",
    "report": "blockradar.cli.report:report",
    "silence": "blockradar.cli.silence:silence",
    "notify-test": "blockradar.cli.notify_test:notify_test",
    "actions": "blockradar.cli.actions:actions",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if self._available(name))

    @staticmethod
    def _available(name: str) -> bool:
        module = SUBCOMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None or not self._available(name):
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="blockradar")
def cli(verbose: int) -> None:
    """blockradar: know within seconds when carriers start blocking your outbound calls."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    cli(prog_name="blockradar")
