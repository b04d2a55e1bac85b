"""Small things an operator trips over: ports, banners, flags, help, `./dev`, `tail --max`."""
from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from holdgate.cli.localkafka import free_port
from holdgate.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)


# ----------------------------------------------------------------------------- ports

def _time_wait_on(port: int) -> None:
    """Leave a TIME_WAIT connection on `port`, as a stopped broker does on its own.

    The listener sets SO_REUSEADDR as Kafka's does; its side closes first, so its
    end of the connection (local port `port`) lingers in TIME_WAIT for a minute.
    """
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()                      # the "broker" closes first: TIME_WAIT is ours
        client.recv(1)
        client.close()
    time.sleep(0.1)


def test_port_probe_ignores_time_wait_but_not_a_listener() -> None:
    from holdgate.cli.preflight import describe_listener, port_taken

    port = free_port()
    _time_wait_on(port)
    with socket.socket() as plain:          # the old probe: bind without SO_REUSEADDR
        with pytest.raises(OSError) as err:
            plain.bind(("127.0.0.1", port))
        assert err.value.errno == errno.EADDRINUSE
    assert not port_taken(port), "a TIME_WAIT leftover is not a listener"
    with socket.socket() as taken:         # a live listener still counts, TIME_WAIT or not
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert port_taken(port)
        assert f"pid {os.getpid()}" in describe_listener(port)


def test_kafka_up_on_a_taken_port_says_who_and_promises_no_download(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _run("kafka", "up", "--dir", str(tmp_path / "k"), "--port", str(port),
                   "--controller-port", str(free_port()))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "45 MB" not in out.stdout + out.stderr and "download" not in out.stdout
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()} (python" in err
    assert "holdgate kafka up --port N" in err


def test_the_jar_download_is_announced_only_when_it_happens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake `mvn` stands in for Maven Central: announced once, then cached and silent."""
    from holdgate.cli.localkafka import ensure_jars

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in -DoutputDirectory=*) '
                   'touch "${a#-DoutputDirectory=}/kafka_2.13-0.0.jar";; esac; done\n')
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    heard: list[str] = []
    libs = ensure_jars(tmp_path / "cache", "0.0", announce=heard.append)
    assert (libs / "kafka_2.13-0.0.jar").exists()
    assert len(heard) == 1 and "45 MB" in heard[0]
    ensure_jars(tmp_path / "cache", "0.0", announce=heard.append)
    assert len(heard) == 1, "a cached run must not announce a download"


# ------------------------------------------------------------------- flags and help

@pytest.fixture
def settings_probe() -> object:
    """A throwaway subcommand printing the settings it got, with the global options."""
    from holdgate.cli import cli, global_options

    @click.command("hg-test-settings")
    @click.pass_obj
    def probe(settings: Settings) -> None:
        ctx = click.get_current_context()
        from holdgate.cli.preflight import connect_timeout
        click.echo(f"{settings.bootstrap} {settings.partitions} {connect_timeout(ctx):g}")

    cli.add_command(global_options(probe))
    yield cli
    cli.commands.pop("hg-test-settings")


@pytest.mark.parametrize(("argv", "env", "expected"), [
    ([], {}, "127.0.0.1:9092 4 3"),
    ([], {"HOLDGATE_BOOTSTRAP": "env:1", "HOLDGATE_PARTITIONS": "6"}, "env:1 6 3"),
    (["--bootstrap", "pre:1", "--partitions", "2", "{cmd}"], {"HOLDGATE_BOOTSTRAP": "env:1"},
     "pre:1 2 3"),
    (["{cmd}", "--bootstrap", "post:1", "--partitions", "3", "--connect-timeout", "0.5"],
     {"HOLDGATE_BOOTSTRAP": "env:1"}, "post:1 3 0.5"),
    (["--bootstrap", "pre:1", "{cmd}", "--bootstrap", "post:1"], {}, "post:1 4 3"),
    (["--bootstrap", "pre:1", "--partitions", "5", "{cmd}"], {"HOLDGATE_PARTITIONS": "6"},
     "pre:1 5 3"),
])
def test_global_options_before_or_after_the_subcommand(
        settings_probe: click.Group, argv: list[str], env: dict[str, str],
        expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOLDGATE_BOOTSTRAP", "HOLDGATE_PARTITIONS", "HOLDGATE_CONNECT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    args = [a.replace("{cmd}", "hg-test-settings") for a in argv] or ["hg-test-settings"]
    result = CliRunner().invoke(settings_probe, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == expected


@pytest.mark.parametrize("cmd", [["worker"], ["send"], ["tail"], ["demo"], ["revoke"],
                                 ["approvals"], ["policy", "test"]])
def test_every_kafka_command_takes_the_global_options_late(cmd: list[str]) -> None:
    out = _run(*cmd, "--help")
    assert out.returncode == 0, out.stderr
    for flag in ("--bootstrap", "--partitions", "--connect-timeout"):
        assert flag in out.stdout, (cmd, flag)


def test_a_late_flag_reaches_the_command(tmp_path: Path) -> None:
    port = free_port()
    out = _run("tail", "--bootstrap", f"127.0.0.1:{port}",
               env={"HOLDGATE_BOOTSTRAP": "127.0.0.1:1"})
    assert out.returncode == 3 and f"127.0.0.1:{port}" in out.stderr, out.stderr


@pytest.mark.parametrize(("cmd", "needles"), [
    ([], ["env var: HOLDGATE_BOOTSTRAP", "default: 127.0.0.1:9092", "HOLDGATE_PARTITIONS",
          "default: 4", "HOLDGATE_CONNECT_TIMEOUT", "Exit codes: 0 ok"]),
    (["worker"], ["HOLDGATE_POLICY_DIR", "HOLDGATE_APP_ID", "default: holdgate",
                  "HOLDGATE_BATCH_MAX", "default: 256", "HOLDGATE_DATADIR"]),
    (["kafka", "up"], ["HOLDGATE_KAFKA_PORT", "default: 9092", "HOLDGATE_KAFKA_CONTROLLER_PORT"]),
    (["send"], ["default: 5.0"]),
    (["demo"], ["default: 90.0"]),
])
def test_help_shows_defaults_and_env_vars(cmd: list[str], needles: list[str]) -> None:
    out = _run(*cmd, "--help", env={"COLUMNS": "200"})
    text = " ".join(out.stdout.split())
    for needle in needles:
        assert needle in text, (cmd, needle)


def test_a_bad_number_in_the_environment_reads_like_click(tmp_path: Path) -> None:
    out = _run("tail", env={"HOLDGATE_PARTITIONS": "abc"})
    assert out.returncode == 2
    assert "'abc' is not a valid integer" in out.stderr and "HOLDGATE_PARTITIONS" in out.stderr
    assert "is not a int" not in out.stderr


# --------------------------------------------------------------------------- ./dev

def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "dev"), *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "HOLDGATE_VENV": "/nonexistent"},
                          check=False)


def test_dev_without_a_verb_prints_usage_and_exits_2() -> None:
    out = _dev()
    assert out.returncode == 2
    assert out.stderr.startswith("usage: ./dev VERB")
    for verb in ("demo", "test", "worker", "bench", "setup", "down", "help"):
        assert f"\n  {verb} " in out.stderr, verb
    assert "set -euo" not in out.stderr and "#!/" not in out.stderr


def test_dev_help_exits_0_and_an_unknown_verb_2() -> None:
    out = _dev("help")
    assert out.returncode == 0 and out.stdout.startswith("usage: ./dev VERB")
    out = _dev("bogus")
    assert out.returncode == 2 and "unknown verb 'bogus'" in out.stderr


# ------------------------------------------------------------------------ tail --max

def test_tail_max_stops_at_n_lines_even_within_one_poll_batch(gate_settings: Settings) -> None:
    from kafka import KafkaProducer

    from holdgate.client.verify import local_deny
    from holdgate.events import ActionRequest, encode

    producer = KafkaProducer(bootstrap_servers=gate_settings.bootstrap)
    for i in range(40):
        request = ActionRequest.create(agent_id=f"bot-{i}", action="tickets.read",
                                       resource={"type": "Ticket", "id": f"T-{i}"})
        producer.send(gate_settings.verdicts_topic, partition=0,
                      value=encode(local_deny(request, code="TIMEOUT", message="test")))
    producer.flush()
    producer.close()
    out = _run("tail", "--from-beginning", "--max", "3", env=gate_settings.to_env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3, out.stdout
    assert [line.split()[2] for line in lines] == ["bot-0", "bot-1", "bot-2"]
