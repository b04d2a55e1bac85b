"""The blocking gate's Kafka I/O over kafka-python: the `Transport` seam, implemented.

Two things here go beyond kafka-python's public API, both to keep the
promise that an action is never delivered after its check returned:

* `fence()` force-closes the producer's sender thread (``_sender.force_close``)
  and waits briefly for it: kafka-python's ``close(timeout=0)`` first *flushes*
  with a zero timeout and raises without closing when records are pending, and
  its graceful close would deliver them.  A forced close aborts every
  unacknowledged batch, which is exactly what a fence must do.
* Idempotence stays on (no duplicate actions on retry); a producer that failed
  in any way is fenced and replaced, never reused, so its sequence state
  cannot wedge the gate after a broker restart.

Timeouts come from `ClientTimeouts` (see there for the reasons).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Collection, Mapping, Sequence

import kafka.errors as kerrors
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from holdgate.client.routing import GateConfig
from holdgate.client.transport import (Received, ClientTimeouts, Consumer, OnDelivery, Producer,
                                       Transport, TransportError)

__all__ = ["KafkaTransport"]

log = logging.getLogger("holdgate.client")

# Seconds a fence waits for the force-closed sender thread to stop (it takes about a
# millisecond): long enough that nothing drained before the fence is still being
# written after it, short enough to keep the check that fences close to its timeout.
FENCE_JOIN = 0.25
CONSUMER_REQUEST_MS = 10_000
FETCH_MAX_WAIT_MS = 100  # a fetch returns at once when data arrives; this is the idle bound
RETRY_BACKOFF_MS = 10    # pause between metadata requests; set-up makes a few in a row
# kafka-python backs off reconnecting exponentially up to 30 s by default: after a
# broker restart the gate would stay blind that long.  A gate is latency-critical
# and talks to a handful of brokers: trying again every second at most is cheap.
RECONNECT_BACKOFF_MAX_MS = 1000

#: Errors that belong to one record: deny that check, keep the producer.
_RECORD_ERRORS = (kerrors.MessageSizeTooLargeError, kerrors.InvalidRecordError,
                  kerrors.CorruptRecordError, kerrors.RecordListTooLargeError)


def _error(what: str, exc: BaseException) -> TransportError:
    return TransportError(f"{what}: {exc!r}", fatal=not isinstance(exc, _RECORD_ERRORS))


class KafkaTransport(Transport):
    """Opens kafka-python producer and consumer sessions for one `Gate`."""

    def __init__(self, config: GateConfig, timeouts: ClientTimeouts, *, linger_ms: int) -> None:
        self.config, self.timeouts, self.linger_ms = config, timeouts, linger_ms

    def open_consumer(self, timeout: float) -> _KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self.config.bootstrap, client_id=self.config.client_id,
            group_id=None, enable_auto_commit=False, auto_offset_reset="latest",
            isolation_level="read_committed",   # a verdict of an aborted transaction never counts
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS, request_timeout_ms=CONSUMER_REQUEST_MS,
            bootstrap_timeout_ms=max(1, int(timeout * 1000)),
            retry_backoff_ms=RETRY_BACKOFF_MS, reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **self.config.security.kafka_python())
        return _KafkaConsumer(consumer, self.config.verdicts_topic)

    def open_producer(self, timeout: float) -> _KafkaProducer:
        t = self.timeouts
        producer = KafkaProducer(
            bootstrap_servers=self.config.bootstrap, client_id=self.config.client_id,
            acks="all", enable_idempotence=True, linger_ms=self.linger_ms,
            delivery_timeout_ms=t.delivery_ms, request_timeout_ms=t.request_ms,
            max_block_ms=t.max_block_ms, bootstrap_timeout_ms=max(1, int(timeout * 1000)),
            retry_backoff_ms=RETRY_BACKOFF_MS, reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **self.config.security.kafka_python())
        return _KafkaProducer(producer, self.config.actions_topic)


class _KafkaProducer(Producer):
    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.raw, self.topic = producer, topic
        self._lock = threading.Lock()
        self._fenced = False

    def send(self, partition: int, key: bytes, value: bytes, on_delivery: OnDelivery) -> None:
        if self._fenced:
            raise TransportError("the producer was fenced")
        metadata: Any = getattr(self.raw, "_metadata", None)
        if metadata is not None and metadata.partitions_for_topic(self.topic) is None:
            # send() would block up to max_block_ms for it, past a short check's timeout:
            # refuse instead; the replacement producer loads it off the check path.
            raise TransportError(f"the producer lost the metadata of {self.topic!r}")
        try:
            future = self.raw.send(self.topic, value=value, key=key, partition=partition)
        except Exception as exc:
            raise _error("the producer refused the action", exc) from exc
        future.add_callback(lambda _: on_delivery(None))
        future.add_errback(lambda exc: on_delivery(self._failure(exc)))

    def _failure(self, exc: BaseException) -> TransportError:
        if self._fenced:                  # our own fence aborted it: expected, not a new fault
            return TransportError("action dropped: its producer was fenced", fatal=False)
        return _error("delivery failed", exc)

    def prepare(self, timeout: float) -> None:
        # Bounded by max_block_ms; the topic is known to exist when this is called.
        self.raw.partitions_for(self.topic)

    def fence(self) -> None:
        with self._lock:
            if self._fenced:
                return
            self._fenced = True
        sender: Any = getattr(self.raw, "_sender", None)
        if sender is not None and hasattr(sender, "force_close"):
            sender.force_close()          # aborts unacknowledged batches, sends nothing more
            if threading.current_thread() is not sender:
                sender.join(FENCE_JOIN)
        else:                             # pragma: no cover - other kafka-python layouts
            log.warning("kafka-python has no force_close: fencing by close(timeout=0)")
        try:
            self.raw.close(timeout=0)
        except Exception:
            log.debug("closing a fenced producer failed", exc_info=True)


class _KafkaConsumer(Consumer):
    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        self.raw, self.topic = consumer, topic

    def partition_counts(self, topics: Sequence[str], timeout: float) -> Mapping[str, int]:
        return {t: len(self.raw.partitions_for_topic(t) or ()) for t in topics}

    def assign(self, partitions: Collection[int], timeout: float) -> Mapping[int, str]:
        wanted = {TopicPartition(self.topic, p) for p in partitions}
        current = self.raw.assignment()
        new = wanted - current
        if new:
            # kafka-python keeps the positions of partitions present before and after.
            self.raw.assign(list(current | new))
            self.raw.seek_to_end(*new)
        errors: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        for tp in sorted(wanted):
            left = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                position = self.raw.position(tp, timeout_ms=left)
            except Exception as exc:
                errors[tp.partition] = repr(exc)
                continue
            if position is None:
                errors[tp.partition] = "offset lookup timed out"
        return errors

    def poll(self, timeout: float) -> list[Received]:
        try:
            batch = self.raw.poll(timeout_ms=max(0, int(timeout * 1000)))
        except Exception as exc:
            raise TransportError(f"verdict consumer failed: {exc!r}") from exc
        return [(record.value, tuple(record.headers or ())) for records in batch.values()
                for record in records]

    def close(self) -> None:
        try:
            self.raw.close(autocommit=False)
        except Exception:
            log.debug("consumer close failed", exc_info=True)
