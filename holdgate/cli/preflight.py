"""Find out in seconds, before a command waits on Kafka, whether Kafka is there at all.

Without this, `holdgate worker`, `tail`, `send` and `demo` with the broker down
sat through kafka-python's 30 s bootstrap and ended in a 50-line traceback, or
waited 90 s and blamed the worker.  `require_kafka` opens a TCP connection to
the bootstrap servers and, if one answers, makes one metadata request with the
settings' own TLS/SASL options (`holdgate.kafka_options`), all within a short
timeout (``--connect-timeout``), and turns any failure into one line that says
what is wrong and what to do.

It also says who holds a local port (`describe_listener`), for `holdgate kafka
up` on a port that is taken.

Exit codes every command keeps to (`holdgate --help` shows them too):

=====  ==============================================================
0      success; `send`: the gate allowed the action
1      `send`: the gate (a worker verdict) denied or held the action;
       `kafka status`: not running; a command's own "no"
2      usage or configuration error (bad flag, bad HOLDGATE_* value,
       missing key, invalid policy bundle, port taken for `kafka up`)
3      unavailable: Kafka cannot be reached, or no worker verdict came
       in time (`send`: a local UNAVAILABLE, TIMEOUT or INVALID_VERDICT
       deny, whose policy_version is "local"; `demo`: no worker answers)
130    interrupted (Ctrl-C)
=====  ==============================================================
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from holdgate.settings import Settings

__all__ = ["CONNECT_TIMEOUT_KEY", "DEFAULT_CONNECT_TIMEOUT", "EXIT_CODES_HELP", "EXIT_DENIED",
           "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "Unavailable", "connect_timeout",
           "describe_listener", "kafka_problem", "port_taken", "require_kafka"]

EXIT_OK, EXIT_DENIED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

EXIT_CODES_HELP = ("Exit codes: 0 ok (send: allowed); 1 denied or held by the gate (send), "
                   "or a command's own 'no'; 2 usage or configuration error; 3 unavailable: "
                   "Kafka unreachable or no worker verdict in time; 130 interrupted.")

#: Seconds the reachability probe may take: long enough for a TLS + SASL handshake
#: to a remote cluster, short enough that a developer whose broker is down knows at once.
DEFAULT_CONNECT_TIMEOUT = 3.0
#: Where the --connect-timeout value lives in click's shared `Context.meta`.
CONNECT_TIMEOUT_KEY = "holdgate.connect_timeout"

_HINT = "start it with `holdgate kafka up`, or point --bootstrap / HOLDGATE_BOOTSTRAP at it"


class Unavailable(click.ClickException):
    """Kafka (or the gate behind it) cannot be reached: one line, exit code 3."""

    exit_code = EXIT_UNAVAILABLE

    def show(self, file: IO[Any] | None = None) -> None:
        click.secho(f"error: {self.format_message()}", fg="red", err=True)


def connect_timeout(ctx: click.Context | None = None) -> float:
    """The --connect-timeout in force (global flag, HOLDGATE_CONNECT_TIMEOUT or default)."""
    ctx = ctx or click.get_current_context(silent=True)
    value = ctx.meta.get(CONNECT_TIMEOUT_KEY) if ctx is not None else None
    return float(value) if value else DEFAULT_CONNECT_TIMEOUT


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    """`host:port[,host:port]` (an optional ``PROTO://`` prefix, ``[v6]`` hosts) as pairs."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip().rpartition("://")[2]
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            host, port = item, "9092"
        out.append((host.strip("[]") or "localhost", int(port)))
    return out


def _tcp_problem(servers: list[tuple[str, int]], deadline: float) -> str | None:
    """None once one server accepts a TCP connection, else why none did."""
    reasons: list[str] = []
    for host, port in servers:
        left = max(0.05, deadline - time.monotonic())
        try:
            with socket.create_connection((host, port), timeout=left):
                return None
        except socket.gaierror:
            reasons.append(f"unknown host {host}")
        except ConnectionRefusedError:
            reasons.append("connection refused")
        except TimeoutError:
            reasons.append(f"no answer within {left:.1f}s")
        except OSError as exc:
            reasons.append((exc.strerror or str(exc)).lower())
    return "; ".join(dict.fromkeys(reasons)) or "no bootstrap server given"


@contextmanager
def _kafka_log() -> Iterator[list[str]]:
    """Collect kafka-python's warnings (they say *why* a bootstrap failed), show none."""
    seen: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("kafka")
    handler, saved = _Keep(logging.WARNING), (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


_FAILED = re.compile(r"^Bootstrap connection to \S+ failed: (.*?)(?: \(backoff [\d.]+ secs\))?$")


def _why(seen: list[str]) -> str | None:
    """kafka-python's own reason for the last failed bootstrap connection, if it gave one."""
    for message in reversed(seen):
        match = _FAILED.match(message)
        if match:
            return match.group(1)
    return None


def kafka_problem(settings: Settings, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> str | None:
    """None if Kafka at ``settings.bootstrap`` answers a metadata request within `timeout`.

    Otherwise one sentence saying what failed: no TCP connection (refused, unknown
    host, no answer), or a connection but no metadata answer (typically a TLS or
    SASL mismatch: kafka-python's last complaint is quoted).
    """
    from holdgate.kafka_options import kafka_python_options

    options = kafka_python_options(settings)   # a bad password file is a config error (2)
    deadline = time.monotonic() + timeout
    where = settings.bootstrap
    tcp = _tcp_problem(_servers(where), deadline)
    if tcp is not None:
        return f"cannot reach Kafka at {where} ({tcp})"
    from kafka import KafkaAdminClient

    left_ms = max(100, int((deadline - time.monotonic()) * 1000))
    with _kafka_log() as seen:
        try:
            admin = KafkaAdminClient(bootstrap_servers=where, client_id="holdgate-preflight",
                                     bootstrap_timeout_ms=left_ms, request_timeout_ms=left_ms,
                                     reconnect_backoff_max_ms=500, **options)
            admin.close()
            return None
        except Exception as exc:  # noqa: BLE001 - kafka-python raises many kinds: all mean no
            why = _why(seen) or f"{type(exc).__name__}: {exc}"
    return (f"Kafka at {where} accepts connections but answered no metadata request within "
            f"{timeout:g}s ({why[:200]}); check HOLDGATE_SECURITY_PROTOCOL and the "
            "HOLDGATE_SASL_* / HOLDGATE_SSL_* settings")


def require_kafka(settings: Settings, timeout: float | None = None) -> None:
    """Raise `Unavailable` (exit 3) with one line saying what to do if Kafka is not there."""
    problem = kafka_problem(settings, connect_timeout() if timeout is None else timeout)
    if problem is not None:
        hint = _HINT if problem.startswith("cannot reach") else ""
        raise Unavailable(f"{problem}" + (f" — {hint}" if hint else ""))


# ----------------------------------------------------------------------- local ports

_TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == _TCP_LISTEN \
                    and int(cols[1].rpartition(":")[2], 16) == port:
                inodes.add(cols[9])
    return inodes


def _owner(inodes: set[str]) -> tuple[int, list[str]] | None:
    """(pid, argv) of a process holding one of these sockets, if we may look."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with os.scandir(f"/proc/{entry.name}/fd") as fds:
                hit = any(os.readlink(fd.path) in wanted for fd in fds)
            if hit:
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
                return int(entry.name), [a.decode(errors="replace") for a in argv if a]
        except OSError:
            continue
    return None


def port_taken(port: int) -> bool:
    """True if something listens on `port` (or holds it in a way Kafka's bind would hit).

    SO_REUSEADDR as Kafka's own listener sets it: connections a stopped broker
    closed linger in TIME_WAIT (a minute) on its port, which must not count as
    busy, or `kafka up` right after `kafka down` would refuse to start.  A live
    listener still makes this bind fail (Linux never lets two sockets share a
    port while one listens).
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def describe_listener(port: int) -> str:
    """Who listens on 127.0.0.1:`port`, as far as we can tell ("another process" if not).

    Linux only in detail (/proc); elsewhere, or for another user's process, it
    says only that something answers there.
    """
    found = _owner(_listening_inodes(port)) if Path("/proc/net/tcp").exists() else None
    if found is None:
        return ("another process (it accepts connections)" if _answers(port)
                else "a socket that does not accept connections")
    pid, argv = found
    if "kafka.Kafka" in argv:
        config = Path(argv[-1])
        if config.name == "server.properties":     # one of ours: say how to stop it
            return (f"another Kafka broker (pid {pid}; `holdgate kafka down --dir "
                    f"{config.parent}` stops it)")
        return f"another Kafka broker (pid {pid}, config {config})"
    shown = " ".join(" ".join([Path(argv[0]).name, *argv[1:4]]).split())
    return f"pid {pid} ({shown[:80]})"
