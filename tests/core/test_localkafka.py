"""The project's broker script: clear refusals, status of a broker that is not there."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from holdgate.errors import KafkaSetupError
from holdgate.cli.localkafka import LocalKafka, free_port


def test_busy_port_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = LocalKafka(workdir=tmp_path, port=port, controller_port=free_port())
        with pytest.raises(KafkaSetupError, match=f"port {port} .* already in use"):
            broker.start(timeout=5)
    assert broker.pid() is None


def test_status_and_stop_of_a_broker_that_never_ran(tmp_path: Path) -> None:
    broker = LocalKafka(workdir=tmp_path / "none")
    info = broker.status()
    assert info["running"] is False and info["ready"] is False
    assert broker.stop() is False


def test_the_session_broker_answers(kafka_bootstrap: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert admin.describe_cluster()["controller_id"] == 1
    finally:
        admin.close()
