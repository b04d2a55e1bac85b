"""Turning what came back (or did not) into a verdict the runtime may act on.

The rule is fail closed: the only path to an allow is a verdict from the
worker that names this request, binds this exact action (digest), has not
expired, was decided before its deadline and carries a valid signature by a
trusted key over the exact bytes received.
Everything else becomes a *local deny*: a real `Verdict` with decision deny,
so callers handle one type and never mistake "no answer" for "yes".
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import NamedTuple

import orjson

from holdgate.events import ActionRequest, Reason, Verdict, decode_verdict
from holdgate.reasons import INVALID_VERDICT
from holdgate.keys import TrustStore
from holdgate.signing import Headers, read_signature, verify_record

__all__ = ["LOCAL_POLICY_VERSION", "local_deny", "verify_verdict", "Failure", "parse_record"]

log = logging.getLogger("holdgate.client")

LOCAL_POLICY_VERSION = "local"


class Failure(NamedTuple):
    """A pending check resolved without a usable verdict: becomes `local_deny(code, message)`."""

    code: str
    message: str


def local_deny(request: ActionRequest, *, code: str, message: str,
               now: float | None = None, digest: str | None = None) -> Verdict:
    """A deny decided by the SDK itself (timeout, unavailable, invalid verdict).

    It names the request and binds its digest like a worker verdict, so audit
    logs can join it, but `policy_version` is "local", it is unsigned and it
    expires the moment it is made: nobody can replay it as a permission.
    `digest` is that of the bytes actually published, when the caller has it.
    """
    at = time.time() if now is None else now
    return Verdict(
        request_id=request.request_id, agent_id=request.agent_id, decision="deny",
        reasons=(Reason(code=code, message=message),), policy_version=LOCAL_POLICY_VERSION,
        action_digest=digest or request.digest, decided_at=at, expires_at=at,
        request=request.to_obj(),
    )


def verify_verdict(verdict: Verdict, request: ActionRequest, now: float, *,
                   digest: str | None = None) -> Verdict:
    """Return `verdict` if it may be acted on as is, else a local INVALID_VERDICT deny.

    A worker deny is returned unchanged once it is known to be about this
    request (it is already a deny; its reasons are worth keeping).  An allow
    must additionally carry a verified signature (`parse_record` sets
    ``key_id`` only then), bind the action digest, be unexpired and have been
    decided before the request's deadline.  Any surprise while checking is
    itself a failure.  `digest` is that of the bytes the SDK published.
    """
    try:
        problem = _problem(verdict, request, now, digest or request.digest)
    except Exception as exc:  # malformed field types: never let them become an allow
        problem = f"verdict could not be checked: {type(exc).__name__}: {exc}"
    if problem is None:
        return verdict
    log.warning("verdict for request %s rejected: %s", request.request_id, problem)
    return local_deny(request, code=INVALID_VERDICT, message=problem, now=now, digest=digest)


def _problem(verdict: Verdict, request: ActionRequest, now: float,
             digest: str) -> str | None:
    if verdict.request_id != request.request_id:
        return f"verdict is for request {verdict.request_id!r}, not {request.request_id!r}"
    if verdict.agent_id != request.agent_id:
        return f"verdict is for agent {verdict.agent_id!r}, not {request.agent_id!r}"
    if verdict.decision in ("deny", "pending"):    # holds the action; frees nothing
        return None
    if verdict.decision != "allow":
        return f"unknown decision {verdict.decision!r}"
    if verdict.action_digest != digest:
        return f"action digest mismatch: verdict binds {verdict.action_digest!r}, " \
               f"the request is {digest!r}"
    if not verdict.key_id:
        return "allow carries no verified signature"
    if not float(verdict.expires_at) > now:
        return f"allow expired at {verdict.expires_at:.3f} (now {now:.3f})"
    if request.deadline is not None and float(verdict.decided_at) > request.deadline:
        return f"allow decided at {verdict.decided_at:.3f}, after the deadline " \
               f"{request.deadline:.3f}"
    return None


def parse_record(raw: bytes | None, headers: Headers | None,
                 trust: TrustStore) -> tuple[str | None, Verdict | Failure]:
    """(request_id, verdict-or-failure) from one verdicts-topic record.

    The signature (record headers) is checked over the exact value bytes; a
    verified verdict names its key in ``key_id``.  An allow whose signature is
    missing, unknown or wrong becomes an INVALID_VERDICT failure; a deny stays
    a deny (unsigned, it can only hold an action, never free one).  A record
    that does not decode still resolves its request quickly when a request_id
    can be read from it, instead of leaving the caller to wait for the timeout.
    """
    if raw is None:
        return None, Failure(INVALID_VERDICT, "empty verdict record")
    try:
        verdict = decode_verdict(raw)
    except Exception as exc:
        request_id = None
        try:
            obj = orjson.loads(raw)
            if isinstance(obj, dict) and isinstance(obj.get("request_id"), str):
                request_id = obj["request_id"]
        except orjson.JSONDecodeError:
            pass
        return request_id, Failure(INVALID_VERDICT, f"verdict does not decode: {exc}")
    problem = verify_record(trust, raw, headers)
    if problem is None:
        return verdict.request_id, dataclasses.replace(
            verdict, key_id=read_signature(headers)[0])
    if verdict.decision == "allow":
        return verdict.request_id, Failure(INVALID_VERDICT, f"allow {problem}")
    return verdict.request_id, verdict
