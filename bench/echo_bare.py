"""The floor: a bare aiokafka consume -> produce loop, no Faust, no decision, no transaction.

It reads each action's request_id/agent_id and answers with a deny verdict
(code ECHO) on the same partition number of the verdicts topic, through the
same topics and the same SDK as holdgate.  Kafka round trips, batching and JSON
are all there; Cedar, signals, state, signing and transactions are not.  What
holdgate costs beyond this is what its decision and its guarantees cost.
"""
from __future__ import annotations

import asyncio
import signal
import sys

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from holdgate.events import Reason, Verdict, encode
from holdgate.kafka_options import aiokafka_options
from holdgate.settings import Settings


def echo(value: bytes | None) -> bytes:
    obj = orjson.loads(value or b"{}")
    return encode(Verdict(request_id=obj.get("request_id", ""), agent_id=obj.get("agent_id", ""),
                          decision="deny", reasons=(Reason("ECHO"),), policy_version="echo",
                          action_digest="", decided_at=0.0, expires_at=0.0))


async def main() -> None:
    s = Settings.from_env()
    consumer = AIOKafkaConsumer(s.actions_topic, bootstrap_servers=s.bootstrap,
                                group_id=s.app_id, auto_offset_reset="latest",
                                enable_auto_commit=True, fetch_max_wait_ms=100,
                                **aiokafka_options(s))
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=0, acks="all",
                                enable_idempotence=True, **aiokafka_options(s))
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=s.batch_max)
            sends = [await producer.send(s.verdicts_topic, echo(r.value), key=r.key,
                                         partition=tp.partition)
                     for tp, records in batches.items() for r in records]
            if sends:
                await asyncio.gather(*sends)
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
