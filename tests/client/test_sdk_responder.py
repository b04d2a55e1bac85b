"""A tiny stand-in worker for the SDK tests, and proof of the routing contract.

It consumes the actions topic group-less (manual assignment of every
partition), asserts each action arrived on `partition_for(agent_id, n)` with
key = agent_id, and replies with a signed Verdict on the SAME partition number
of the verdicts topic, key = agent_id: allow for "tickets.read", deny with a
reason otherwise.  The request's context can ask for misbehaviour (`respond`:
silent, tamper, wrong_key, expired, bad_digest, unsigned, garbage; `delay_ms`) so the
tests can drive every verification path through a real broker, and for a verdict
written in a Kafka transaction (`respond`: committed, aborted), as the worker
writes them, to prove that the SDK reads only committed verdicts.

The Gate and AsyncGate test modules build their `responder` fixture from
`running_responder` here.
"""
from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from holdgate.client import partition_for
from holdgate.events import ActionRequest, Reason, Verdict, decode_request, encode
from holdgate.settings import Settings
from holdgate.keys import Signer, load_signer
from holdgate.signing import sign_headers

ALLOWED_ACTION = "tickets.read"


class Responder(threading.Thread):
    """Replies to every action on the actions topic the way the worker contract says."""

    def __init__(self, settings: Settings, *, ttl: float = 30.0) -> None:
        super().__init__(name="test-responder", daemon=True)
        self.settings, self.ttl = settings, ttl
        self.signer = load_signer(settings.signing_key_file)
        # Reconnect within a second after a broker restart (kafka-python's default
        # backoff grows to 30 s), so that the restart test measures the SDK, not this.
        self.consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None,
                                      enable_auto_commit=False, auto_offset_reset="latest",
                                      fetch_max_wait_ms=50, reconnect_backoff_max_ms=1000)
        parts = sorted(self.consumer.partitions_for_topic(settings.actions_topic))
        self.partitions = len(parts)
        tps = [TopicPartition(settings.actions_topic, p) for p in parts]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:                   # resolved now: no action of the test can be missed
            assert self.consumer.position(tp, timeout_ms=10000) is not None
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=1,
                                      acks="all", reconnect_backoff_max_ms=1000)
        self._txn: KafkaProducer | None = None      # made on first use (transactions)
        self.violations: list[str] = []
        self.seen: list[tuple[int, ActionRequest]] = []
        self.replied = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                for record in records:
                    self._handle(record)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.producer.flush(5)
        self.producer.close(timeout=2)
        if self._txn is not None:
            self._txn.close(timeout=2)
        self.consumer.close(autocommit=False)

    def wait_replied(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.replied < count and time.monotonic() < deadline:
            time.sleep(0.01)
        self.producer.flush(5)
        assert self.replied >= count, f"responder replied {self.replied} < {count}"

    def _handle(self, record: Any) -> None:
        request = decode_request(record.value)
        expected = partition_for(request.agent_id, self.partitions)
        if record.partition != expected or record.key != request.agent_id.encode():
            self.violations.append(f"{request.agent_id}: partition {record.partition} "
                                   f"(expected {expected}), key {record.key!r}")
        with self._lock:
            self.seen.append((record.partition, request))
        mode = str(request.context.get("respond", "normal"))
        if mode == "silent":
            return
        value, headers = self._reply(request, mode)
        if mode in ("committed", "aborted"):
            self._send_in_transaction(value, headers, record.partition, request.agent_id,
                                      commit=mode == "committed")
            return
        delay = int(request.context.get("delay_ms", 0)) / 1000
        send = lambda: self._send(value, headers, record.partition, request.agent_id)  # noqa
        if delay:
            threading.Timer(delay, send).start()
        else:
            send()

    def _send(self, value: bytes, headers: list[tuple[str, bytes]], partition: int,
              agent_id: str) -> None:
        self.producer.send(self.settings.verdicts_topic, value=value, headers=headers,
                           key=agent_id.encode(), partition=partition)
        with self._lock:
            self.replied += 1

    def _send_in_transaction(self, value: bytes, headers: list[tuple[str, bytes]],
                             partition: int, agent_id: str, *, commit: bool) -> None:
        """Write one verdict in its own transaction, then commit or abort it."""
        if self._txn is None:
            self._txn = KafkaProducer(bootstrap_servers=self.settings.bootstrap, linger_ms=1,
                                      transactional_id=f"test-responder-{uuid.uuid4()}")
            self._txn.init_transactions()
        self._txn.begin_transaction()
        self._txn.send(self.settings.verdicts_topic, value=value, key=agent_id.encode(),
                       partition=partition, headers=headers)
        self._txn.flush(5)                # the record is in the log before the outcome
        if commit:
            self._txn.commit_transaction()
        else:
            self._txn.abort_transaction()
        with self._lock:
            self.replied += 1

    def _reply(self, request: ActionRequest, mode: str) -> tuple[bytes, list[tuple[str, bytes]]]:
        if mode == "garbage":   # has a request_id but is not a verdict
            return orjson.dumps({"request_id": request.request_id, "decision": "maybe"}), []
        now = time.time()
        allowed = request.action == ALLOWED_ACTION
        verdict = Verdict(
            request_id=request.request_id, agent_id=request.agent_id,
            decision="allow" if allowed else "deny",
            reasons=(Reason("PERMITTED"),) if allowed else
            (Reason("NO_PERMIT", f"test responder permits only {ALLOWED_ACTION}"),),
            policy_version="test", action_digest=request.digest, decided_at=now,
            expires_at=now - 1 if mode == "expired" else now + self.ttl,
            request=request.to_obj())
        if mode == "bad_digest":
            verdict = replace(verdict, action_digest="sha256:" + "0" * 64)
        value = encode(verdict)
        if mode == "unsigned":
            return value, []
        headers = list(sign_headers(Signer.generate() if mode == "wrong_key" else self.signer,
                                    value))
        if mode == "tamper":          # signed, then changed on the way
            value = encode(replace(verdict, reasons=(Reason("PERMITTED", "tampered"),)))
        return value, headers


@contextmanager
def running_responder(settings: Settings) -> Iterator[Responder]:
    """A started responder; on exit it is stopped and must have seen no routing violation."""
    r = Responder(settings)
    r.start()
    try:
        yield r
    finally:
        r.stop()
    assert not r.violations, r.violations


@pytest.fixture
def responder(gate_settings: Settings) -> Iterator[Responder]:
    with running_responder(gate_settings) as r:
        yield r


def agents_by_partition(partitions: int, prefix: str = "agent") -> dict[int, str]:
    """One agent id per partition number (deterministic: murmur2 is)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        name = f"{prefix}-{i}"
        found.setdefault(partition_for(name, partitions), name)
        i += 1
    return found


def test_responder_replies_on_the_action_partition(gate_settings: Settings,
                                                   responder: Responder) -> None:
    """The routing contract end to end, without the SDK: raw produce, raw consume."""
    n = responder.partitions
    agents = agents_by_partition(n)
    consumer = KafkaConsumer(bootstrap_servers=gate_settings.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    producer = KafkaProducer(bootstrap_servers=gate_settings.bootstrap, acks="all")
    try:
        consumer.assign([TopicPartition(gate_settings.verdicts_topic, p) for p in range(n)])
        for partition, agent in agents.items():
            request = ActionRequest.create(agent_id=agent, action=ALLOWED_ACTION,
                                           resource={"type": "Ticket", "id": "t1"})
            producer.send(gate_settings.actions_topic, encode(request), key=agent.encode(),
                          partition=partition)
        producer.flush(5)
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + 10
        while len(got) < n and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    got[tp.partition] = record.key
        assert got == {p: a.encode() for p, a in agents.items()}
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=2)
