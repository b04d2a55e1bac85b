"""Publishing a simulation live to the actions topic, paced by its event times.

Why rewrite ``occurred_at``: the worker refuses actions whose ``occurred_at``
is more than ``max_clock_skew`` from the broker's append time (CLOCK_SKEW), so
a replayed January history published today would be denied wholesale.  Each
request is published with the wall clock at send time; ``request_id`` is kept,
so the labels (written alongside) still match the verdicts.

Why ``speed`` multiplies every rate: the gaps between events are divided by
it, so a 40/s batch job published at ``speed=10`` arrives at 400/s and trips
rate guards it would never trip in real time.  Compressed traffic is for
demos; fit baselines on a file (``write_history``) or at ``speed=1``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import IO, Callable, Iterable, Protocol

import orjson

from holdgate.errors import ConfigError
from holdgate.events import ActionRequest, encode
from holdgate.routing import partition_for
from holdgate.kafka_options import kafka_python_options
from holdgate.settings import Settings
from holdgate.sim.generate import Label
from holdgate.sim.output import Summary

__all__ = ["Sink", "KafkaSink", "publish"]


class Sink(Protocol):
    """Where published actions go: the Kafka topic, or a test double."""

    def partitions(self) -> int: ...

    def send(self, partition: int, key: bytes, value: bytes) -> None: ...

    def flush(self) -> None: ...


class KafkaSink:
    """kafka-python producer on ``settings.actions_topic`` (acks=all, idempotent)."""

    def __init__(self, settings: Settings) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topic = settings.actions_topic
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=settings.bootstrap, client_id=f"{settings.app_id}-simulate",
                acks="all", enable_idempotence=True, linger_ms=5,
                **kafka_python_options(settings))
        except KafkaError as exc:
            raise ConfigError(f"cannot reach Kafka at {settings.bootstrap}: {exc}; is it "
                              "running (holdgate kafka up)?") from None
        parts = self._producer.partitions_for(self.topic)
        if not parts:
            self._producer.close(timeout=1)
            raise ConfigError(f"topic {self.topic} does not exist on {settings.bootstrap}: "
                              "start the worker first (holdgate worker creates its topics)")
        self._count = len(parts)

    def partitions(self) -> int:
        return self._count

    def send(self, partition: int, key: bytes, value: bytes) -> None:
        self._producer.send(self.topic, key=key, value=value, partition=partition)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close(timeout=5)


def publish(pairs: Iterable[tuple[ActionRequest, Label]], sink: Sink, *, speed: float = 1.0,
            labels: IO[bytes] | None = None,
            on_sent: Callable[[ActionRequest, Label], None] | None = None,
            clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> Summary:
    """Send each request when its (compressed) time comes; return what was sent.

    Keyed by ``agent_id`` on partition ``partition_for(agent_id, n)``, ``n``
    being the topic's partition count (the routing contract).  When the
    producer falls behind the schedule, requests go out as fast as it can
    send them: the history's order is kept, its gaps are not.
    """
    if speed <= 0:
        raise ConfigError("speed must be > 0 (1 = real time)")
    n = sink.partitions()
    summary = Summary()
    wall0 = sim0 = None
    for request, label in pairs:
        if wall0 is None or sim0 is None:
            wall0, sim0 = clock(), request.occurred_at
        due = wall0 + (request.occurred_at - sim0) / speed
        wait = due - clock()
        if wait > 0.05:
            sink.flush()                       # nothing lingers in the buffer during a pause
            wait = due - clock()
        if wait > 0.0005:
            sleep(wait)
        live = replace(request, occurred_at=clock())
        sink.send(partition_for(live.agent_id, n), live.agent_id.encode("utf-8"), encode(live))
        summary.add(live.occurred_at, label)
        if labels is not None:
            labels.write(orjson.dumps(label) + b"\n")
        if on_sent is not None:
            on_sent(live, label)
    sink.flush()
    return summary
