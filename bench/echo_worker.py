"""The floor for hold latency: the same Faust app and codec, with no decision at all.

It reads each action's request_id/agent_id and sends back a deny verdict with
code ECHO on the same partition: Kafka round trips, Faust batching and JSON are
all still there, Cedar, signals and signing are not.  What the real worker
costs beyond this is what holdgate's decision logic costs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, MutableMapping, Sequence

import faust
import orjson

from holdgate.events import Reason, Verdict, encode
from holdgate.settings import Settings
from holdgate.stream.app import create_app
from holdgate.stream.records import BatchResult, Outgoing, RawRecord
from holdgate.topics import ensure_topics


@dataclass
class EchoDecider:
    policy_version: str = "echo"
    model_version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def decide_batch(self, records: Sequence[RawRecord],
                     states: MutableMapping[str, Any] | None = None,
                     guard: Any = None) -> BatchResult:
        out = BatchResult()
        for raw in records:
            obj = orjson.loads(raw.value or b"{}")
            v = Verdict(request_id=obj.get("request_id", ""), agent_id=obj.get("agent_id", ""),
                        decision="deny", reasons=(Reason("ECHO"),), policy_version="echo",
                        action_digest="", decided_at=0.0, expires_at=0.0)
            out.verdicts.append(Outgoing(raw.partition, raw.key or b"", encode(v)))
        return out


def main() -> None:
    settings = Settings.from_env()
    ensure_topics(settings)
    app = create_app(settings, EchoDecider())  # type: ignore[arg-type]
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    sys.exit(main())
