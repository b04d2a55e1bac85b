"""holdgate client SDK: hold each intended action until the gate allows it.

    from holdgate.client import Gate

    with Gate(bootstrap="127.0.0.1:9092", agent_id="billing-bot-1") as gate:
        verdict = gate.check(action="payments.refund",
                             resource={"type": "Invoice", "id": "inv-1"})
        if verdict.allowed:
            ...

`check()` returns a `Verdict` and never raises for a deny, a timeout or an
unreachable gate: those are denies (fail closed).  ``check(...,
with_proof=True)`` returns a `Checked` (the verdict, the action bytes and the
worker's signed record) for an executor that verifies on its own
(`holdgate.executor`).  `guard()` turns a deny into
`ActionDenied`.  `AsyncGate` is the asyncio twin.  Both run on aiokafka, which
is loaded only when the first gate is made (`AsyncGate` is imported lazily).
Importing this package never imports faust, numpy, scikit-learn, cedarpy or
aiokafka.

Layout: `core` is the protocol with no I/O (`steps` its vocabulary), which
`aio.AsyncGate` drives over a transport (`transport`: the seam;
`kafka_async`: aiokafka; `mock`: an in-memory broker for tests).  `sync.Gate`
is a blocking facade over an `AsyncGate` on a private event-loop thread
(`loop`).  `verify`, `routing` and `proof` are shared.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from holdgate.client.proof import Checked, SignedVerdict
from holdgate.client.routing import partition_for
from holdgate.client.sync import Gate
from holdgate.client.verify import local_deny, verify_verdict

if TYPE_CHECKING:  # pragma: no cover
    from holdgate.client.aio import AsyncGate

__all__ = ["Gate", "AsyncGate", "local_deny", "verify_verdict", "partition_for", "Checked",
           "SignedVerdict"]


def __getattr__(name: str) -> Any:
    if name == "AsyncGate":
        from holdgate.client.aio import AsyncGate

        return AsyncGate
    raise AttributeError(f"module 'holdgate.client' has no attribute {name!r}")
