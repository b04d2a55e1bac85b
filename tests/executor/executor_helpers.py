"""Signed verdicts made by hand, exactly as the worker makes them, for the executor tests."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from holdgate.client.proof import SignedVerdict
from holdgate.events import ActionRequest, Reason, Verdict, action_digest, encode
from holdgate.keys import Signer
from holdgate.reasons import NO_PERMIT, PERMITTED
from holdgate.signing import sign_headers

__all__ = ["NOW", "Clock", "Made", "make", "sign"]

NOW = 1_700_000_000.0


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Made:
    request: ActionRequest
    action: bytes
    verdict: Verdict
    signed: SignedVerdict


def sign(signer: Signer, verdict: Verdict | bytes) -> SignedVerdict:
    value = verdict if isinstance(verdict, bytes) else encode(verdict)
    parsed = verdict if isinstance(verdict, Verdict) else None
    return SignedVerdict(value, sign_headers(signer, value), parsed)  # type: ignore[arg-type]


def make(signer: Signer, *, decision: str = "allow", action: str = "payments.refund",
         agent_id: str = "billing-bot-1", amount: int = 100, now: float = NOW,
         decided_after: float = 0.1, ttl: float = 30.0, timeout: float = 5.0,
         request_id: str | None = None, **verdict_fields: Any) -> Made:
    """An action as the SDK publishes it and the worker's signed verdict on it."""
    request = ActionRequest.create(agent_id=agent_id, action=action,
                                   resource={"type": "Payment", "id": "pay-1"},
                                   context={"amount_cents": amount}, occurred_at=now,
                                   deadline=now + timeout, request_id=request_id)
    raw = encode(request)
    decided = now + decided_after
    fields: dict[str, Any] = {
        "request_id": request.request_id, "agent_id": request.agent_id, "decision": decision,
        "reasons": (Reason(PERMITTED),) if decision == "allow" else (Reason(NO_PERMIT, "no"),),
        "policy_version": "test", "action_digest": action_digest(raw), "decided_at": decided,
        "expires_at": decided + ttl, "request": request.to_obj()}
    fields.update(verdict_fields)
    verdict = Verdict(**fields)
    return Made(request, raw, verdict, sign(signer, verdict))
