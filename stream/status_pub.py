"""A worker says what it decides with: signed `WorkerStatus` records on the status topic.

Published on every change (a swap, an assignment, readiness) and every
`HEARTBEAT` seconds otherwise, so `holdgate status` can tell a worker that
moved to a new version from one that is stuck on the old one or silent.
Signed with the worker's verdict key: only a worker can speak for a worker.
Best effort by design: a status that cannot be sent is retried on the next
beat and never holds up a decision.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaProducer

from holdgate.kafka_options import aiokafka_options
from holdgate.keys import Signer
from holdgate.settings import Settings
from holdgate.signing import sign_headers
from holdgate.status import WorkerStatus

__all__ = ["StatusPublisher", "HEARTBEAT"]

log = logging.getLogger("holdgate.worker")

#: Seconds between two status records when nothing changes (holdgate.status.STALE_AFTER
#: flags a worker after 30 s of silence).
HEARTBEAT = 10.0


class StatusPublisher:
    """Publishes `describe()` now and then; `changed()` asks for one at once."""

    def __init__(self, settings: Settings, signer: Signer | None,
                 describe: Callable[[], WorkerStatus]) -> None:
        self.settings = settings
        self.signer = signer
        self.describe = describe
        self.sent = 0
        self._event = asyncio.Event()

    def changed(self) -> None:
        self._event.set()

    async def run(self) -> None:
        if self.signer is None:
            return                              # unsigned status would be ignored anyway
        s = self.settings
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap,
                                    client_id=f"{s.app_id}-status", linger_ms=0,
                                    request_timeout_ms=10_000, **aiokafka_options(s))
        started = False
        try:
            while True:
                try:
                    if not started:
                        await asyncio.wait_for(producer.start(), 15.0)
                        started = True
                    status = self.describe()
                    value = status.to_bytes()
                    await asyncio.wait_for(producer.send_and_wait(
                        s.status_topic, value, key=status.key.encode(),
                        headers=list(sign_headers(self.signer, value))), 15.0)
                    self.sent += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - best effort: next beat retries
                    log.debug("status not published: %r", exc)
                try:
                    await asyncio.wait_for(self._event.wait(), HEARTBEAT)
                except asyncio.TimeoutError:
                    pass
                self._event.clear()
        finally:
            if started:
                try:
                    await asyncio.wait_for(producer.stop(), 5.0)
                except Exception:  # noqa: BLE001 - shutting down whatever the broker's state
                    log.debug("status producer stop failed", exc_info=True)
