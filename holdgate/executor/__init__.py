"""holdgate executor SDK: run a tool only on a verified, unexpired, unused signed allow.

The gate decides; the executor is what actually touches the world, so it
trusts nobody's summary of the decision, not even the SDK's: it verifies the
worker's signature over the exact verdict bytes, that the action it is about
to run hashes to the verdict's digest, expiry and deadline, and that the
request_id was never run before (a durable, bounded replay store).

In the agent's process::

    from holdgate.client import Gate
    from holdgate.executor import Executor, ExecutionRefused, ReplayStore

    executor = Executor(trust=settings.trust(), replay=ReplayStore("replay.sqlite3"))
    checked = gate.check(action="payments.refund", resource=..., with_proof=True)
    try:
        executor.execute_checked(checked, lambda request: refund(request.resource.id))
    except ExecutionRefused as refused:
        print(refused.code)          # NOT_ALLOWED, EXPIRED, REPLAYED, ...

As a service that holds the tool's credentials (`ExecutorService`): it reads
the actions and verdicts topics, joins them by action digest, and runs the
handler registered for the action name for verified allows only, at most
once per request_id.

Layout: `refusals` (codes and `ExecutionRefused`), `replay` (`ReplayStore`,
SQLite), `executor` (`Executor`: the checks and the run), `join` (bounded
buffers pairing actions and verdicts), `service` (the Kafka loop).  This
package stands on the wire layer and the client SDK only.
"""
from __future__ import annotations

from holdgate.client.proof import Checked, SignedVerdict
from holdgate.executor.executor import Authorized, Executor, Handler, SignedRecord
from holdgate.executor.join import Joiner, Match
from holdgate.executor.refusals import CODES, ExecutionRefused, Refusal
from holdgate.executor.replay import Claim, ReplayStore
from holdgate.executor.service import ExecutorService

__all__ = [
    "CODES", "Authorized", "Checked", "Claim", "ExecutionRefused", "Executor", "ExecutorService",
    "Handler", "Joiner", "Match", "Refusal", "ReplayStore", "SignedRecord", "SignedVerdict",
]
