"""A tiny daemon for the crash tests: the real Store + Outbox + WebhookNotifier in its own process.

``python tests/servers/outbox_child.py --store DB --url URL [--enqueue N]`` enqueues N notifications
(printing ``ENQUEUED <ids>`` once they are committed), then delivers until nothing is pending
(printing ``DRAINED``). The test kills it with SIGKILL at the worst moments and starts it again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from blockradar.alerting.notifiers.base import Notification
from blockradar.alerting.notifiers.webhook import WebhookConfig, WebhookNotifier
from blockradar.alerting.outbox import Outbox, OutboxConfig
from blockradar.store import Store


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--enqueue", type=int, default=0)
    args = parser.parse_args()
    store = Store(args.store)
    notifier = WebhookNotifier(WebhookConfig(url=args.url, secret="s3cret", timeout=30))
    outbox = Outbox(store, [notifier], OutboxConfig(backoff_initial=0.05, backoff_max=0.2, poll_interval=0.05,
                                                     send_timeout=30))
    if args.enqueue:
        ids = []
        for i in range(args.enqueue):
            note = Notification(group_key=f"g{i}", group_labels={}, status="firing", alerts=[], created_at=time.time())
            ids += outbox.enqueue(note)
        print("ENQUEUED", *ids, flush=True)
    await outbox.start()
    while outbox.depth():
        await asyncio.sleep(0.02)
    await outbox.stop()
    print("DRAINED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
