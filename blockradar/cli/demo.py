"""``blockradar demo``: the whole daemon against emulated PBXes; no PBX, no config needed."""

from __future__ import annotations

import contextlib
import logging

import click

from blockradar.logs import setup_logging


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Also send the demo's alerts through this config's notifiers (Slack, email, webhook).")
@click.option("--duration", type=click.FloatRange(6, 120), default=20.0, show_default=True,
              help="Seconds of call traffic to stream.")
@click.option("--json", "as_json", is_flag=True, help="Print only a JSON summary (alerts go to stderr).")
@click.option("--quiet", is_flag=True, help="No live table, just alerts and the summary.")
@click.option("--store", "store_path", type=click.Path(dir_okay=False),
              help="Keep the demo's SQLite store here (then try `blockradar report --store FILE`).")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="Where the status page (and /metrics, /healthz) listens; port 0 picks a free one.")
@click.option("--serve", is_flag=True, help="After the traffic, keep the status page up until Ctrl-C.")
def demo(config_path: str | None, duration: float, as_json: bool, quiet: bool, store_path: str | None,
         listen: str, serve: bool) -> None:
    """Stream real recorded calls from emulated Asterisk and FreeSWITCH through the real daemon, and serve
    its status page meanwhile (the URL is printed first)."""
    setup_logging("human", logging.WARNING)
    from blockradar.demo.session import run_demo

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C while --serve keeps the page up
        run_demo(duration_s=duration, user_config=config_path, live=not quiet and not as_json, as_json=as_json,
                 store_path=store_path, listen=listen, serve=serve)
