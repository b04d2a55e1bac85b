"""Pairing action records with their verdicts, in bounded memory, for the executor service.

Actions and verdicts arrive on two topics in no guaranteed order, so each
side waits in a buffer for the other.  Both buffers are keyed by the *action
digest*, not the request_id: the actions topic is writable by every agent, and
a second record claiming the same request_id with other content must not
displace (or be mistaken for) the bytes the verdict binds.  Only the exact
bytes whose SHA-256 the verdict names can ever meet it.

Bounds, so that a flood on either topic costs memory no larger than chosen:

* an action waits at most `action_hold` seconds and at most `max_actions`
  actions wait (oldest dropped first): a dropped action is never run, which is
  the safe side;
* a verdict waits until its ``expires_at`` (afterwards it would be refused
  anyway) and at most `max_verdicts` wait (oldest dropped first).  Only
  verdicts whose signature already verified are offered here, so the verdict
  buffer cannot be filled with forgeries.

No I/O and no clock of its own: the service passes `now`, tests drive it directly.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from holdgate.client.proof import SignedVerdict
from holdgate.events import action_digest

__all__ = ["Joiner", "Match"]


@dataclass(frozen=True, slots=True)
class Match:
    """A verdict record and the action bytes its digest names: ready to execute."""

    signed: SignedVerdict
    action: bytes


class Joiner:
    """Two bounded buffers that meet on the action digest; see the module docstring."""

    def __init__(self, *, max_actions: int = 10_000, max_verdicts: int = 10_000,
                 action_hold: float = 300.0) -> None:
        if max_actions < 1 or max_verdicts < 1 or action_hold <= 0:
            raise ValueError("buffer sizes must be >= 1 and action_hold > 0")
        self.max_actions, self.max_verdicts = max_actions, max_verdicts
        self.action_hold = action_hold
        self._actions: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # digest -> (v, until)
        self._verdicts: OrderedDict[str, tuple[SignedVerdict, float]] = OrderedDict()
        self.dropped = {"actions": 0, "verdicts": 0}

    def __len__(self) -> int:
        return len(self._actions) + len(self._verdicts)

    @property
    def waiting(self) -> tuple[int, int]:
        """(actions, verdicts) currently buffered."""
        return len(self._actions), len(self._verdicts)

    def add_action(self, value: bytes, now: float) -> Match | None:
        """An action record arrived; its match if its verdict is already waiting."""
        digest = action_digest(value)
        waiting = self._verdicts.pop(digest, None)
        if waiting is not None:
            if now < waiting[1]:
                return Match(waiting[0], value)
            self.dropped["verdicts"] += 1
        self._actions[digest] = (value, now + self.action_hold)
        self._actions.move_to_end(digest)
        self._trim(self._actions, self.max_actions, "actions")
        return None

    def add_verdict(self, signed: SignedVerdict, digest: str, expires_at: float,
                    now: float) -> Match | None:
        """A verified allow for `digest` arrived; its match if the action is already waiting."""
        waiting = self._actions.pop(digest, None)
        if waiting is not None and now < waiting[1]:
            return Match(signed, waiting[0])
        if waiting is not None:
            self.dropped["actions"] += 1
        self._verdicts[digest] = (signed, expires_at)
        self._verdicts.move_to_end(digest)
        self._trim(self._verdicts, self.max_verdicts, "verdicts")
        return None

    def discard(self, digest: str) -> bool:
        """A deny arrived for `digest`: forget the action (it will never run here)."""
        return self._actions.pop(digest, None) is not None

    def expire(self, now: float) -> int:
        """Drop what waited past its time; how many were dropped."""
        dropped = 0
        for name, buffer in (("actions", self._actions), ("verdicts", self._verdicts)):
            stale = [k for k, (_, until) in buffer.items() if not now < until]
            for key in stale:
                del buffer[key]
            self.dropped[name] += len(stale)
            dropped += len(stale)
        return dropped

    def _trim(self, buffer: OrderedDict[str, Any], limit: int,
              name: str) -> None:
        while len(buffer) > limit:
            buffer.popitem(last=False)
            self.dropped[name] += 1
