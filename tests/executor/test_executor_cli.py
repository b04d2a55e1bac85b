"""`holdgate executor`: handler specs, and a real run next to a real worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from holdgate.cli import cli
from holdgate.cli.executor_cmd import load_handler
from holdgate.client import Gate
from holdgate.settings import Settings


def test_handler_specs_name_what_is_wrong() -> None:
    action, fn = load_handler("paths.join=os.path:join")
    assert action == "paths.join" and fn is os.path.join
    for bad, says in [("os.path:join", "ACTION=module:function"),
                      ("a.b=os.path", "ACTION=module:function"),
                      ("a.b=no_such_module_xyz:f", "cannot import"),
                      ("a.b=os.path:nope", "has no"),
                      ("a.b=os:sep", "not callable")]:
        with pytest.raises(click.BadParameter, match=says):
            load_handler(bad)


def test_cli_refuses_a_bad_handler_before_connecting() -> None:
    result = CliRunner().invoke(cli, ["executor", "--handler", "oops"])
    assert result.exit_code != 0 and "ACTION=module:function" in result.output


@pytest.mark.kafka
def test_cli_runs_an_allowed_action_once_and_stops_on_sigterm(
        gate_settings: Settings, start_worker: Callable[..., Any], tmp_path: Path) -> None:
    start_worker(gate_settings)
    runs = tmp_path / "runs.txt"
    (tmp_path / "exec_tools.py").write_text(textwrap.dedent(f"""
        def read_ticket(request):
            with open({str(runs)!r}, "a") as f:
                f.write(request.request_id + "\\n")
    """))
    env = {**os.environ, **gate_settings.to_env(),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "executor.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "holdgate", "executor", "--lookback", "0",
             "--handler", "tickets.read=exec_tools:read_ticket",
             "--replay-store", str(tmp_path / "replay.sqlite3")],
            env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while b"executor ready:" not in log.read_bytes():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            with Gate(settings=gate_settings, agent_id="support-bot-1") as gate:
                v = gate.check(action="tickets.read", resource={"type": "Ticket", "id": "T-c"},
                               timeout=10)
            assert v.allowed
            while not runs.exists() or v.request_id not in runs.read_text():
                assert proc.poll() is None and time.monotonic() < deadline + 30, \
                    log.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
    assert code == 0, log.read_text()
    assert runs.read_text().splitlines().count(v.request_id) == 1
    assert f"executed tickets.read {v.request_id}" in log.read_text()
