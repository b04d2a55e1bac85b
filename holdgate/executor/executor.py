"""The executor: the last hand before a tool runs, and the one that checks everything itself.

The SDK's `Gate.check` already verifies a verdict, but it runs in the agent's
own process: whoever controls that process could skip the check, call the
tool with other arguments, or call it twice.  An executor does not take the
runtime's word.  It runs an action only after verifying, on the exact bytes,

1. the verdict record is signed (hg-sig / hg-kid, and hg-proof for a batch) by a key it trusts
   (`TrustStore`: several at once while keys rotate);
2. the verdict is an allow, and now < its ``expires_at``;
3. the action bytes it was handed decode to the request the verdict names
   (request_id and agent_id) and hash to the verdict's ``action_digest``;
4. the verdict was decided no later than the request's ``deadline``;
5. the request_id was never executed before (`ReplayStore`, claimed *before*
   the handler runs, shared across threads, processes and restarts).

Anything else raises `ExecutionRefused` with its own code.  The handler is
called with the `ActionRequest` decoded from the verified bytes: it should
take its parameters (resource, context) from there, since that is exactly
what was allowed, not from arguments the runtime could have changed.

    executor = Executor(trust=settings.trust(), replay=ReplayStore("replay.sqlite3"))
    checked = gate.check(action="payments.refund", resource=..., with_proof=True)
    executor.execute_checked(checked, refund)      # or execute(signed, action_bytes, refund)
"""
from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol, Self, TypeVar

from holdgate.client.proof import Checked
from holdgate.errors import ConfigError
from holdgate.events import ActionRequest, Verdict, action_digest, decode_request, decode_verdict
from holdgate.executor import refusals as r
from holdgate.executor.refusals import ExecutionRefused, Refusal
from holdgate.executor.replay import Claim, ReplayStore
from holdgate.keys import TrustStore
from holdgate.settings import Settings
from holdgate.signing import read_signature, verify_record

__all__ = ["MAX_ACTION_BYTES", "Authorized", "Executor", "Handler", "SignedRecord"]

log = logging.getLogger("holdgate.executor")
T = TypeVar("T")

#: Runs one verified action; gets the request decoded from the verified bytes.
Handler = Callable[[ActionRequest], T]
#: The largest action a worker can be configured to accept (`Settings.max_action_bytes`).
MAX_ACTION_BYTES = 512 * 1024


class SignedRecord(Protocol):
    """A verdicts-topic record: its exact value and headers (`SignedVerdict` is one)."""

    @property
    def value(self) -> bytes: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Authorized:
    """What verification proved: this request, allowed by this verdict, as these exact bytes."""

    request: ActionRequest
    #: Decoded from the signed bytes; `key_id` names the key whose signature verified.
    verdict: Verdict
    action: bytes


def _refuse(code: str, message: str, request_id: str | None = None) -> NoReturn:
    raise ExecutionRefused(Refusal(code, message, request_id))


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


class Executor:
    """Verifies signed allows and runs each allowed request_id at most once.

    `trust`: the public keys whose verdicts count (at least one).  `replay`:
    the store of executed request_ids; share one file between every executor
    that could be handed the same verdict.  `clock`: wall-clock seconds (the
    verdict's times are the worker's wall clock).
    """

    def __init__(self, *, trust: TrustStore, replay: ReplayStore,
                 clock: Callable[[], float] = time.time,
                 max_action_bytes: int = MAX_ACTION_BYTES) -> None:
        if not len(trust):
            raise ConfigError("an executor needs at least one trusted verdict key "
                              "(HOLDGATE_TRUSTED_KEYS): with none it could never run anything")
        self.trust, self.replay = trust, replay
        self._clock, self._max_action_bytes = clock, max_action_bytes

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      replay_path: str | os.PathLike[str] | None = None,
                      **store_options: Any) -> Executor:
        """Trusted keys from `settings`; the replay store at `replay_path`.

        Default path: ``executor/replay.sqlite3`` beside the worker's datadir.
        """
        path = Path(replay_path) if replay_path is not None \
            else Path(settings.datadir).parent / "executor" / "replay.sqlite3"
        return cls(trust=settings.trust(), replay=ReplayStore(path, **store_options))

    # ------------------------------------------------------------------ verification
    def verify_record(self, proof: SignedRecord | None, *, now: float | None = None) -> Verdict:
        """The checks that need only the verdict record: signature, decision, expiry.

        Returns the verdict decoded from the signed bytes (with `key_id`).
        A `SignedVerdict`'s parsed `verdict` is never trusted: it is how somebody
        else read the bytes.
        """
        at = self._clock() if now is None else now
        if proof is None or not proof.value:
            _refuse(r.NO_VERDICT, "no verdict record from the worker (a local deny or timeout)")
        value = bytes(proof.value)
        kid, sig = read_signature(proof.headers)
        if not kid or not sig:
            _refuse(r.UNSIGNED, "the verdict record carries no hg-sig/hg-kid signature")
        if kid not in self.trust:
            _refuse(r.UNKNOWN_KEY, f"signed by {kid!r}, not one of the trusted keys "
                                   f"{self.trust.key_ids}")
        problem = verify_record(self.trust, value, proof.headers)
        if problem is not None:
            _refuse(r.BAD_SIGNATURE, problem)
        try:
            verdict = decode_verdict(value)
        except Exception as exc:  # noqa: BLE001 - anything undecodable is refused
            _refuse(r.MALFORMED_VERDICT, f"signed record is not a verdict: {exc}")
        problem = self._malformed(verdict)
        if problem is not None:
            _refuse(r.MALFORMED_VERDICT, problem)
        verdict = replace(verdict, key_id=kid)
        if verdict.decision != "allow":
            _refuse(r.NOT_ALLOWED, f"the verdict is a deny: {', '.join(verdict.codes)}",
                    verdict.request_id)
        if not at < verdict.expires_at:
            _refuse(r.EXPIRED, f"the allow expired at {verdict.expires_at:.3f} "
                               f"(now {at:.3f})", verdict.request_id)
        return verdict

    @staticmethod
    def _malformed(verdict: Verdict) -> str | None:
        for name in ("request_id", "agent_id", "action_digest"):
            if not isinstance(getattr(verdict, name), str):
                return f"{name} is not a string"
        for name in ("decided_at", "expires_at"):
            if not _is_time(getattr(verdict, name)):
                return f"{name} is not a finite number of seconds"
        return None

    def verify(self, proof: SignedRecord | None, action: bytes | None, *,
               now: float | None = None) -> Authorized:
        """Every check except replay: may `action` run under `proof`?  Claims nothing."""
        at = self._clock() if now is None else now
        verdict = self.verify_record(proof, now=at)
        rid = verdict.request_id
        if not action:
            _refuse(r.MALFORMED_ACTION, "no action bytes", rid)
        action = bytes(action)
        try:
            request = decode_request(action, max_bytes=self._max_action_bytes)
        except Exception as exc:  # noqa: BLE001 - anything undecodable is refused
            _refuse(r.MALFORMED_ACTION, f"the action does not decode: {exc}", rid)
        if request.request_id != rid or request.agent_id != verdict.agent_id:
            _refuse(r.MISMATCHED_REQUEST, f"the verdict is for request {rid} of agent "
                    f"{verdict.agent_id!r}, the action is request {request.request_id} of "
                    f"agent {request.agent_id!r}", rid)
        digest = action_digest(action)
        if digest != verdict.action_digest:
            _refuse(r.DIGEST_MISMATCH, f"the verdict binds {verdict.action_digest}, these "
                                       f"action bytes are {digest}", rid)
        if request.deadline is not None and verdict.decided_at > request.deadline:
            _refuse(r.LATE, f"decided at {verdict.decided_at:.3f}, after the request's "
                            f"deadline {request.deadline:.3f}", rid)
        return Authorized(request, verdict, action)

    # ------------------------------------------------------------------ execution
    def execute(self, proof: SignedRecord | None, action: bytes | None,
                handler: Handler[T] | Mapping[str, Handler[T]]) -> T:
        """Verify, record the request_id, then run `handler(request)` once and return its result.

        `handler` may be a mapping from action name to handler (NO_HANDLER when
        the action has none; nothing is recorded then).  An exception from
        the handler propagates; the request stays recorded, so it is not run
        again (at most once).  Raises `ExecutionRefused` for every refusal.
        """
        auth = self.verify(proof, action)
        if isinstance(handler, Mapping):
            fn = handler.get(auth.request.action)
            if fn is None:
                _refuse(r.NO_HANDLER, f"no handler for action {auth.request.action!r}",
                        auth.request.request_id)
        else:
            fn = handler
        self._claim(auth)
        try:
            result = fn(auth.request)
        except BaseException:
            self._finish(auth, ok=False)
            raise
        self._finish(auth, ok=True)
        return result

    def execute_checked(self, checked: Checked,
                        handler: Handler[T] | Mapping[str, Handler[T]]) -> T:
        """`execute` with what ``Gate.check(..., with_proof=True)`` returned."""
        return self.execute(checked.signed, checked.action, handler)

    def _claim(self, auth: Authorized) -> None:
        v, rid = auth.verdict, auth.request.request_id
        try:
            claim = self.replay.claim(rid, expires_at=v.expires_at, agent_id=v.agent_id,
                                      action_digest=v.action_digest, now=self._clock())
        except (sqlite3.Error, ValueError) as exc:
            _refuse(r.STORE_ERROR, f"could not record the execution: {exc}", rid)
        if claim is Claim.DUPLICATE:
            _refuse(r.REPLAYED, "this request_id was already executed", rid)
        if claim is Claim.FULL:
            _refuse(r.STORE_FULL, f"the replay store holds {self.replay.max_entries} live "
                                  "entries; refusing rather than forgetting one", rid)

    def _finish(self, auth: Authorized, *, ok: bool) -> None:
        try:
            self.replay.finish(auth.request.request_id, ok=ok)
        except sqlite3.Error:  # the claim stands; only its outcome note is lost
            log.warning("could not note the outcome of %s", auth.request.request_id,
                        exc_info=True)

    def close(self) -> None:
        self.replay.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
