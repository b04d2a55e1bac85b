"""Kafka's own access control: SASL settings reach every client; the broker enforces the ACLs.

The unit half checks that `Settings` turn into the right keyword arguments for
kafka-python and aiokafka and that the password stays secret.  The broker half
starts a broker of its own (SASL_PLAINTEXT, PLAIN, StandardAuthorizer, deny by
default, User:admin super user), creates the topics and grants the ACLs of
docs/acls.md as admin, and then shows what each principal may and may not do,
every client configured only through `Settings`.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from holdgate.errors import ConfigError
from holdgate.kafka_options import KafkaSecurity, aiokafka_options, kafka_python_options
from holdgate.settings import Settings

SASL = dict(security_protocol="SASL_PLAINTEXT", sasl_username="runtime",
            sasl_password="s3cret-pw")


# ---------------------------------------------------------------- settings -> kwargs

def test_plaintext_adds_no_options() -> None:
    assert kafka_python_options(Settings()) == {} and aiokafka_options(Settings()) == {}


def test_sasl_options_for_both_libraries() -> None:
    s = Settings(**SASL, sasl_mechanism="SCRAM-SHA-512")
    want = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "runtime", "sasl_plain_password": "s3cret-pw"}
    assert kafka_python_options(s) == want and aiokafka_options(s) == want


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "holdgate-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_tls_files_for_kafka_python_and_an_ssl_context_for_aiokafka(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    s = Settings(**{**SASL, "security_protocol": "SASL_SSL"}, ssl_cafile=cert,
                 ssl_certfile=cert, ssl_keyfile=key)
    kp = kafka_python_options(s)
    assert kp["security_protocol"] == "SASL_SSL"
    assert (kp["ssl_cafile"], kp["ssl_certfile"], kp["ssl_keyfile"]) == (cert, cert, key)
    aio = aiokafka_options(s)
    assert not any(k.startswith("ssl_") and k != "ssl_context" for k in aio)
    ctx = aio["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname and len(ctx.get_ca_certs()) == 1
    plain_tls = kafka_python_options(Settings(security_protocol="SSL", ssl_cafile=cert))
    assert plain_tls == {"security_protocol": "SSL", "ssl_cafile": cert}


def test_the_password_is_never_in_a_repr(tmp_path: Path) -> None:
    from holdgate.client.routing import GateConfig
    from holdgate.keys import generate_keypair

    s = Settings(**SASL)
    _, public, _ = generate_keypair(tmp_path, "w")
    config = GateConfig.resolve(bootstrap=None, settings=s, trusted_keys=str(public))
    for obj in (s, KafkaSecurity.of(s), config):
        assert "s3cret-pw" not in repr(obj) and "s3cret-pw" not in str(obj)
    assert config.security.sasl_password == "s3cret-pw"       # but the clients get it


def test_settings_from_env_and_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("from-a-file\n")
    s = Settings.from_env({"HOLDGATE_SECURITY_PROTOCOL": "SASL_SSL",
                           "HOLDGATE_SASL_MECHANISM": "SCRAM-SHA-256",
                           "HOLDGATE_SASL_USERNAME": "worker",
                           "HOLDGATE_SASL_PASSWORD_FILE": str(secret)})
    assert Settings.from_env(s.to_env()) == s
    opts = KafkaSecurity.of(s).kafka_python()
    assert opts["sasl_plain_username"] == "worker"
    assert opts["sasl_plain_password"] == "from-a-file"
    with pytest.raises(ConfigError, match="cannot read"):
        KafkaSecurity.of(s.with_(sasl_password_file=str(tmp_path / "missing")))


@pytest.mark.parametrize("given, match", [
    (dict(security_protocol="sasl_ssl"), "not one of"),
    (dict(security_protocol="SASL_SSL", sasl_username="w"), "needs HOLDGATE_SASL_USERNAME"),
    (dict(security_protocol="SASL_SSL", sasl_password="p"), "needs HOLDGATE_SASL_USERNAME"),
    (dict(SASL, sasl_mechanism="GSSAPI"), "sasl_mechanism"),
    (dict(sasl_username="w", sasl_password="p"), "SASL credentials are set"),
    (dict(security_protocol="SASL_PLAINTEXT", sasl_username="w", sasl_password="p",
          ssl_cafile="ca.pem"), "TLS files are set"),
    (dict(security_protocol="SSL", ssl_keyfile="k.pem"), "ssl_keyfile needs"),
])
def test_half_configured_security_is_refused(given: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings(**given).validated()  # type: ignore[arg-type]


# ---------------------------------------------------------------- a broker with ACLs

@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker of this module's own: SASL_PLAINTEXT + StandardAuthorizer, on free ports."""
    from holdgate.cli.localkafka import LocalKafka

    broker = LocalKafka(workdir=tmp_path_factory.mktemp("kafka-sasl"), security="sasl_plain")
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def grant_gate_acls(admin: Any, s: Settings) -> None:
    """The ACLs of docs/acls.md for one deployment (app id and topic names of `s`)."""
    from kafka.admin import (ACL, ACLFilter, ACLOperation as Op, ACLPermissionType,
                             ACLResourcePatternType as Pattern, ResourcePattern,
                             ResourcePatternFilter, ResourceType as Res)

    from holdgate.topics import gate_topics

    def acl(user: str, op: Op, res: Res, name: str, pattern: Pattern = Pattern.LITERAL) -> ACL:
        return ACL(f"User:{user}", "*", op, ACLPermissionType.ALLOW,
                   ResourcePattern(res, name, pattern))

    every = [name for name, _, _ in gate_topics(s)]      # whatever topics the gate has today
    writes = [s.verdicts_topic, s.deadletter_topic, s.changelog_topic]
    acls = [
        # runtimes: write actions, read verdicts; no group (they assign partitions)
        acl("runtime", Op.WRITE, Res.TOPIC, s.actions_topic),
        acl("runtime", Op.READ, Res.TOPIC, s.verdicts_topic),
        # the worker: reads actions in its group, the changelog on restore, the control
        # (and approvals) tables; writes verdicts, deadletter and changelog transactionally
        *(acl("worker", Op.READ, Res.TOPIC, t) for t in every
          if t not in (s.verdicts_topic, s.deadletter_topic)),
        *(acl("worker", Op.WRITE, Res.TOPIC, t) for t in writes),
        acl("worker", Op.READ, Res.GROUP, s.app_id),
        acl("worker", Op.WRITE, Res.TRANSACTIONAL_ID, f"{s.app_id}.decide.", Pattern.PREFIXED),
        # analysts: read everything, write nothing
        *(acl("analyst", Op.READ, Res.TOPIC, t) for t in every),
    ]
    result = admin.create_acls(acls)
    assert not result["failed"], result["failed"]
    # The controller has them now; the broker's authorizer a moment later.  DescribeAcls
    # is answered from that authorizer: poll it rather than sleep.
    everything = ACLFilter(None, None, Op.ANY, ACLPermissionType.ANY,
                           ResourcePatternFilter(Res.ANY, None, Pattern.ANY))
    want = {(a.principal, a.operation, a.resource_pattern.resource_type,
             a.resource_pattern.resource_name) for a in acls}
    deadline = time.monotonic() + 30
    while True:
        found, _ = admin.describe_acls(everything)
        have = {(a.principal, a.operation, a.resource_pattern.resource_type,
                 a.resource_pattern.resource_name) for a in found}
        if want <= have:
            return
        assert time.monotonic() < deadline, f"ACLs not in force after 30s: {want - have}"
        time.sleep(0.1)


@pytest.fixture
def principals(sasl_broker: Any, tmp_path: Path,
               verdict_keys: dict[str, str]) -> dict[str, Settings]:
    """Settings per principal (admin, worker, runtime, analyst) for one fresh deployment."""
    from kafka import KafkaAdminClient

    from holdgate.topics import ensure_topics

    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = dict(
        bootstrap=sasl_broker.bootstrap, app_id=f"hg-sec-{tag}", partitions=2,
        datadir=str(tmp_path / "worker"), signing_key_file=verdict_keys["signing_key_file"],
        trusted_keys=verdict_keys["trusted_keys"])
    base.update({f.name: f"s{tag}.{f.name.removesuffix('_topic')}" for f in fields(Settings)
                 if f.name.endswith("_topic")})       # control, approvals, ... as they come
    roles = {user: Settings(**base, **sasl_broker.settings_for(user)).validated()
             for user in ("admin", "worker", "runtime", "analyst")}
    ensure_topics(roles["admin"])                     # topics made by the admin, as in prod
    admin = KafkaAdminClient(bootstrap_servers=sasl_broker.bootstrap,
                             **kafka_python_options(roles["admin"]))
    try:
        grant_gate_acls(admin, roles["admin"])
    finally:
        admin.close()
    return roles


def _denied_write(s: Settings, topic: str) -> BaseException:
    """What kafka-python raises when `s`'s principal produces one record to `topic`."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=s.bootstrap, max_block_ms=10_000,
                             **kafka_python_options(s))
    try:
        producer.send(topic, key=b"support-bot-1", value=b"{}", partition=0).get(timeout=15)
    except Exception as exc:  # noqa: BLE001 - returned for the caller to assert on
        return exc
    finally:
        producer.close(timeout=5)
    raise AssertionError(f"User:{s.sasl_username} wrote to {topic}")


@pytest.mark.kafka
def test_a_runtime_cannot_write_verdicts(principals: dict[str, Settings]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import TopicAuthorizationFailedError as AioDenied
    from kafka.errors import TopicAuthorizationFailedError

    runtime = principals["runtime"]
    exc = _denied_write(runtime, runtime.verdicts_topic)
    assert isinstance(exc, TopicAuthorizationFailedError), repr(exc)

    async def aio_write() -> None:              # the asyncio SDK's library, same refusal
        producer = AIOKafkaProducer(bootstrap_servers=runtime.bootstrap,
                                    **aiokafka_options(runtime))
        await producer.start()
        try:
            await producer.send_and_wait(runtime.verdicts_topic, b"{}", key=b"a", partition=0)
        finally:
            await producer.stop()

    with pytest.raises(AioDenied):
        asyncio.run(aio_write())
    # nor the deadletter or changelog; an analyst writes nothing at all
    for topic in (runtime.deadletter_topic, runtime.changelog_topic):
        assert isinstance(_denied_write(runtime, topic), TopicAuthorizationFailedError)
    # (kafka-python's idempotent producer asks for a producer id first; with WRITE on no
    # topic at all that is what Kafka refuses: ClusterAuthorizationFailed, KIP-679)
    analyst = principals["analyst"]
    for topic in (analyst.actions_topic, analyst.verdicts_topic):
        assert "AuthorizationFailed" in repr(_denied_write(analyst, topic))


@pytest.mark.kafka
def test_a_wrong_password_is_a_deny_not_a_bypass(principals: dict[str, Settings]) -> None:
    from holdgate.client import Gate
    from holdgate.reasons import UNAVAILABLE

    wrong = principals["runtime"].with_(sasl_password="not-the-password")
    with Gate(settings=wrong, agent_id="support-bot-1", default_timeout=2.0) as gate:
        verdict = gate.check(action="tickets.read", resource={"type": "Ticket", "id": "t-1"})
    assert not verdict.allowed and verdict.codes == [UNAVAILABLE], verdict


def _cli(*args: str, s: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "holdgate", *args], capture_output=True,
                          text=True, timeout=90, env={**os.environ, **s.to_env()})


@pytest.mark.kafka
def test_worker_decides_for_a_runtime_each_as_its_own_principal(
        principals: dict[str, Settings], start_worker: Callable[..., Any]) -> None:
    """A real `holdgate worker` as User:worker; SDK, CLI and analyst reads as their own."""
    from holdgate.client import AsyncGate, Gate
    from holdgate.cli.fleet import wait_for_gate
    from holdgate.stream.history import read_topic

    worker = start_worker(principals["worker"], wait=False)
    runtime = principals["runtime"]
    ticket = {"type": "Ticket", "id": "T-7"}
    started = time.time()
    with Gate(settings=runtime, agent_id="support-bot-1") as gate:
        assert wait_for_gate(gate, 90, progress=lambda _: worker.assert_alive()), worker.log()
        allowed = gate.check(action="tickets.read", resource=ticket, timeout=10)
        denied = gate.check(action="repo.push", resource={"type": "Repository", "id": "x"},
                            timeout=10)
    assert allowed.allowed and allowed.key_id, allowed       # signed by the worker, verified
    assert not denied.allowed and denied.policy_version != "local", denied

    async def aio_check() -> Any:
        async with AsyncGate(settings=runtime, agent_id="support-bot-1") as agate:
            return await agate.check(action="tickets.read", resource=ticket, timeout=10)

    assert asyncio.run(aio_check()).allowed

    out = _cli("send", "--agent", "support-bot-1", "--action", "tickets.read",
               "--resource", "Ticket:T-8", s=runtime)
    assert out.returncode == 0 and "ALLOW" in out.stdout, out.stdout + out.stderr
    out = _cli("tail", "--from-beginning", "--agent", "support-bot-1", "--max", "1", s=runtime)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and lines, out.stdout + out.stderr
    assert all("support-bot-1" in line for line in lines)

    # analysts read the decision record (actions and their verdicts), write nothing
    history = read_topic(principals["analyst"], started - 60, time.time() + 1)
    assert len(history.records) >= 4 and len(history.recorded) >= 4
    worker.assert_alive()
