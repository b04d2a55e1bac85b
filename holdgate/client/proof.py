"""What a check hands to an executor: the worker's signed record and the action's bytes.

Why a parsed `Verdict` is not enough: an executor (in this process, another
one, another language) must verify the worker's signature itself, over the
exact verdict bytes the worker signed, and hash the exact action bytes it is
about to run; a parsed object can prove neither.  So ``check(...,
with_proof=True)`` returns a `Checked`: the verdict `check()` would have
returned, the action bytes as published, and the verdict record as received.

`Checked.signed` is set only when the returned verdict *is* the worker's
record (it passed the SDK's checks): a local deny (timeout, unavailable, an
invalid verdict) has no worker record to show, so nothing that looks like
evidence travels with it.  An executor never trusts `SignedVerdict.verdict`;
it re-reads `value` after checking the signature (`holdgate.executor`).
"""
from __future__ import annotations

from dataclasses import dataclass

from holdgate.client.steps import Pending
from holdgate.events import Verdict

__all__ = ["Checked", "SignedVerdict", "checked"]


@dataclass(frozen=True, slots=True)
class SignedVerdict:
    """One verdicts-topic record as received: exact value bytes, headers (hg-sig/hg-kid)."""

    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    #: How the SDK parsed `value`: for display only, verifiers re-derive it from `value`.
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Checked:
    """A check's outcome with its evidence; `verdict` is what ``check()`` returns alone."""

    verdict: Verdict
    #: The action record value exactly as published (what the verdict's digest binds).
    action: bytes
    #: The worker's record behind `verdict`; None when `verdict` is a local deny.
    signed: SignedVerdict | None

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed


def checked(p: Pending, verdict: Verdict) -> Checked:
    """The evidence of the resolved check `p`, whose returned verdict is `verdict`."""
    signed = None
    raw, headers = p.record if p.record is not None else (None, ())
    if raw is not None and verdict is p.result:
        signed = SignedVerdict(bytes(raw), tuple((str(k), bytes(v)) for k, v in headers
                                                 if v is not None), verdict)
    return Checked(verdict, p.value, signed)
