"""What the blocking and the asyncio gate share: configuration, knobs, counters.

The two gates differ only in how they wait (threads and locks versus an event
loop); everything they are configured with, and the bookkeeping operators read
(`stats`, assigned partitions), is built here once so the twins cannot drift.
"""
from __future__ import annotations

import logging
from typing import Any, Generic

from holdgate.client.routing import AgentSlot, E, GateConfig
from holdgate.settings import Settings

__all__ = ["GateCore"]

log = logging.getLogger("holdgate.client")

COUNTERS = ("sent", "verdicts", "ignored", "timeouts", "unavailable")


class GateCore(Generic[E]):
    """Resolved config and the state both gates keep about topics and partitions."""

    def __init__(self, *, name: str, bootstrap: str | None, agent_id: str | None,
                 settings: Settings | None, signing_key: str | bytes | None,
                 default_timeout: float, connect_timeout: float, poll_interval: float,
                 linger_ms: int) -> None:
        self._cfg = GateConfig.resolve(bootstrap=bootstrap, settings=settings,
                                       signing_key=signing_key)
        if self._cfg.key is None:
            log.warning("holdgate %s has no signing key: allow verdicts are not "
                        "authenticated", name)
        self._agent_id = agent_id
        self._default_timeout = default_timeout
        self._connect_timeout = connect_timeout
        self._poll_ms = max(1, int(poll_interval * 1000))
        self._linger_ms = linger_ms
        self._slots: dict[str, AgentSlot[E]] = {}
        self._requests: list[AgentSlot[E]] = []   # slots for the poll loop to make ready
        self._status = f"connecting to {self._cfg.bootstrap}"
        self._partitions: int | None = None      # partition count of actions == verdicts
        self._ready_partitions: set[int] = set()
        self._stats: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    @staticmethod
    def _fail_slots(slots: list[AgentSlot[Any]], message: str) -> None:
        for slot in slots:
            slot.fail(message)
