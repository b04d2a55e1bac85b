"""Why an executor did not run an action: one machine code per reason.

These are not verdict reason codes (`holdgate.reasons`): a verdict is the
worker's decision, a refusal is the executor's own finding that it may not
act on what it was given.  Each check the executor makes has its own code, so
an operator can tell a forged record (BAD_SIGNATURE) from a stale one
(EXPIRED) or a replay (REPLAYED) without parsing prose.

    HoldgateError
    └── ExecutionRefused      carries a `Refusal` (code, message, request_id)
"""
from __future__ import annotations

from dataclasses import dataclass

from holdgate.errors import HoldgateError

__all__ = [
    "BAD_SIGNATURE", "CODES", "DIGEST_MISMATCH", "EXPIRED", "LATE", "MALFORMED_ACTION",
    "MALFORMED_VERDICT", "MISMATCHED_REQUEST", "NOT_ALLOWED", "NO_HANDLER", "NO_VERDICT",
    "REPLAYED", "STORE_ERROR", "STORE_FULL", "UNKNOWN_KEY", "UNSIGNED",
    "ExecutionRefused", "Refusal",
]

NO_VERDICT = "NO_VERDICT"                # no worker record at all (a local deny, a timeout)
UNSIGNED = "UNSIGNED"                    # the record has no hg-sig / hg-kid headers
UNKNOWN_KEY = "UNKNOWN_KEY"              # signed by a key this executor does not trust
BAD_SIGNATURE = "BAD_SIGNATURE"          # the signature does not verify over the exact bytes
MALFORMED_VERDICT = "MALFORMED_VERDICT"  # signed, but not a verdict this executor can read
NOT_ALLOWED = "NOT_ALLOWED"              # a valid verdict, but a deny
MALFORMED_ACTION = "MALFORMED_ACTION"    # the action bytes do not decode to a request
MISMATCHED_REQUEST = "MISMATCHED_REQUEST"  # the verdict names another request or agent
DIGEST_MISMATCH = "DIGEST_MISMATCH"      # the action bytes are not the ones the verdict binds
EXPIRED = "EXPIRED"                      # now >= the verdict's expires_at
LATE = "LATE"                            # decided after the request's own deadline
NO_HANDLER = "NO_HANDLER"                # nothing registered for this action name
REPLAYED = "REPLAYED"                    # this request_id was executed (or claimed) before
STORE_FULL = "STORE_FULL"                # the replay store is at capacity with live entries
STORE_ERROR = "STORE_ERROR"              # the replay store could not record the execution

CODES = (NO_VERDICT, UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, MALFORMED_VERDICT, NOT_ALLOWED,
         MALFORMED_ACTION, MISMATCHED_REQUEST, DIGEST_MISMATCH, EXPIRED, LATE, NO_HANDLER,
         REPLAYED, STORE_FULL, STORE_ERROR)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused execution: the code to switch on, prose for humans, the request if known."""

    code: str
    message: str
    request_id: str | None = None

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{where}"


class ExecutionRefused(HoldgateError):
    """Raised by `Executor.execute` instead of running the handler; see `refusal.code`."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal

    @property
    def code(self) -> str:
        return self.refusal.code

    @property
    def request_id(self) -> str | None:
        return self.refusal.request_id
