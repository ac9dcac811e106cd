"""Waking asyncio workers from any thread: the outbox's and the actions' workers sleep on events that the
loop, the store writer's thread or a signal handler may set."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


def wake(loop: asyncio.AbstractEventLoop | None, events: Iterable[asyncio.Event]) -> None:
    """Set ``events`` on ``loop`` (safe from any thread; nothing once the loop is gone)."""
    if loop is None or loop.is_closed():
        return
    for event in events:
        loop.call_soon_threadsafe(event.set)
