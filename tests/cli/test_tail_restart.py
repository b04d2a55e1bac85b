"""`holdgate tail` keeps following across a broker restart, and `kafka up` right after
`kafka down` starts at once.

A broker of this module's own on free ports (restarting the session broker would
disturb every other test).  Stopping it while `tail` is connected leaves the
broker's side of those connections in TIME_WAIT on its port: the start right
after must not take that for a port in use.  Then `tail`, whose client used to
back off reconnecting for up to 30 s, must show what is published after the
restart within a few seconds.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from holdgate.settings import Settings

CATCH_UP_S = 6.0   # reconnect backoff is capped at 1 s; slack for a loaded machine


def _publish(bootstrap: str, topic: str, first: int, count: int) -> None:
    from kafka import KafkaProducer

    from holdgate.client.verify import local_deny
    from holdgate.events import ActionRequest, encode

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(first, first + count):
        request = ActionRequest.create(agent_id=f"bot-{i}", action="tickets.read",
                                       resource={"type": "Ticket", "id": f"T-{i}"})
        producer.send(topic, partition=i % 2,
                      value=encode(local_deny(request, code="TIMEOUT", message="test")))
    producer.flush()
    producer.close()


def _wait_lines(lines: list[str], n: int, timeout: float) -> float:
    t0 = time.monotonic()
    while len(lines) < n and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    return time.monotonic() - t0


def test_tail_follows_across_a_broker_restart(tmp_path: Path) -> None:
    from holdgate.cli.localkafka import LocalKafka
    from holdgate.topics import ensure_topics

    broker = LocalKafka(workdir=tmp_path / "kafka")
    broker.start(timeout=120)
    tail = None
    try:
        settings = Settings(bootstrap=broker.bootstrap, partitions=2, app_id="hg-tail-test")
        ensure_topics(settings)
        tail = subprocess.Popen([sys.executable, "-m", "holdgate", "tail"], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, **settings.to_env()})
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(tail.stdout.readline, "")),
                         daemon=True).start()
        time.sleep(3)                                   # tail is assigned and at the end
        _publish(broker.bootstrap, settings.verdicts_topic, 0, 3)
        _wait_lines(lines, 3, 20)
        assert len(lines) == 3, lines

        broker.stop()                                   # tail stays connected meanwhile
        broker.start(timeout=120)                       # same ports, straight away
        _publish(broker.bootstrap, settings.verdicts_topic, 100, 3)
        took = _wait_lines(lines, 6, 60)
        assert len(lines) == 6, lines
        assert took < CATCH_UP_S, f"tail caught up {took:.1f}s after the restart"
        assert {line.split()[2] for line in lines[3:]} == {"bot-100", "bot-101", "bot-102"}
        assert tail.poll() is None, "tail must keep following"
    finally:
        if tail is not None:
            tail.terminate()
            tail.wait(10)
        broker.stop()
