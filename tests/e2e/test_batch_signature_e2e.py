"""A batch-signed verdict from a real worker, verified the way the README tells any language to.

The worker signs each micro-batch once (a Merkle tree head) and gives every
verdict its inclusion proof (``hg-proof``).  This test publishes a burst that
lands in one batch, then checks each verdict with the README's recipe written
out here from scratch (SHA-256 and integer shifts, nothing from holdgate) and
``openssl pkeyutl`` over the tree head: what an executor in another language does.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import time
from typing import Any, Callable

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from holdgate.events import ActionRequest, encode
from holdgate.routing import partition_for
from holdgate.settings import Settings

AGENT = "support-bot-1"
BURST = 40


def _tree_head(value: bytes, proof: bytes) -> bytes:
    """The README's recipe: leaf hash, walk the audit path (RFC 9162), prefix and size."""
    def h(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    index, size = struct.unpack(">II", proof[:8])
    path = [proof[i:i + 32] for i in range(8, len(proof), 32)]
    fn, sn, r = index, size - 1, h(b"\x00" + value)
    for p in path:
        assert sn > 0
        if fn % 2 == 1 or fn == sn:
            r = h(b"\x01" + p + r)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = h(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return b"holdgate tree head v1\n" + struct.pack(">I", size) + r


def _burst(settings: Settings) -> list[Any]:
    """Publish BURST actions in one produce request; return their verdict records."""
    partition = partition_for(AGENT, settings.partitions)
    tp = TopicPartition(settings.verdicts_topic, partition)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed")
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    consumer.position(tp)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, linger_ms=200)
    ids = set()
    for i in range(BURST):
        req = ActionRequest.create(agent_id=AGENT, action="tickets.read",
                                   resource={"type": "Ticket", "id": f"T-{i}"})
        ids.add(req.request_id)
        producer.send(settings.actions_topic, key=AGENT.encode(), value=encode(req),
                      partition=partition)
    producer.flush()
    producer.close()
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while len(found) < BURST and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            found += [r for r in recs if orjson.loads(r.value)["request_id"] in ids]
    consumer.close()
    assert len(found) == BURST
    return found


def test_batch_signed_verdicts_verify_with_openssl_over_the_tree_head(
        gate_settings: Settings, start_worker: Callable[..., Any], tmp_path: Any,
        verdict_keys: dict[str, str]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    start_worker(gate_settings)
    records = _burst(gate_settings)
    batched = [r for r in records if any(k == "hg-proof" for k, _ in r.headers)]
    assert batched, "the burst was never decided as one batch"
    record = batched[len(batched) // 2]
    headers = dict(record.headers)
    assert headers["hg-kid"].decode() == verdict_keys["key_id"]
    (tmp_path / "sig.bin").write_bytes(headers["hg-sig"])
    cmd = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", verdict_keys["trusted_keys"],
           "-rawin", "-in", str(tmp_path / "head.bin"), "-sigfile", str(tmp_path / "sig.bin")]
    (tmp_path / "head.bin").write_bytes(_tree_head(record.value, headers["hg-proof"]))
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout, ok.stdout + ok.stderr
    changed = record.value.replace(b'"tickets.read"', b'"tickets.reaD"')
    assert changed != record.value
    (tmp_path / "head.bin").write_bytes(_tree_head(changed, headers["hg-proof"]))
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode != 0                       # one changed byte: no longer verifies
