"""One settings object for worker, SDK and CLI, read from `HOLDGATE_*` env vars.

Flags override the environment, the environment overrides defaults.  Key
material is never in a setting: settings name files (the worker's private
key, the public keys a runtime or executor trusts), and private key files
must not be readable by others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from holdgate.approvals import ApproverKeys
from holdgate.errors import ConfigError
from holdgate.keys import Signer, TrustStore, load_signer

__all__ = ["Settings", "ENV_PREFIX"]

ENV_PREFIX = "HOLDGATE_"


@dataclass(frozen=True)
class Settings:
    """Every knob, with the default a developer on one machine wants."""

    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "holdgate"
    actions_topic: str = "holdgate.actions"
    verdicts_topic: str = "holdgate.verdicts"
    deadletter_topic: str = "holdgate.deadletter"
    control_topic: str = "holdgate.control"
    approvals_topic: str = "holdgate.approvals"
    policies_topic: str = "holdgate.policies"   # published bundles + enforce/shadow pointers
    models_topic: str = "holdgate.models"       # published models + enforce/shadow pointers
    status_topic: str = "holdgate.status"       # what each worker enforces and shadows
    partitions: int = 4
    replication_factor: int = 1
    policy_dir: str = ""            # empty: the bundle shipped in holdgate.policies.default
    model: str = ""                 # fitted baseline model folder (holdgate fit); empty: none
    signing_key_file: str = ""      # worker: Ed25519 private key (holdgate keys generate)
    trusted_keys: str = ""          # SDK/executor/tools: public key files or folders, comma list
    operator_keys: str = ""         # worker: public keys whose control records it obeys
    operator_key_file: str = ""     # CLI: the operator's private key (revoke, suspend)
    approver_keys: str = ""         # worker: role=pub[;pub..],role=... who may approve what
    approver_key_file: str = ""     # CLI: an approver's private key (holdgate approve)
    verdict_ttl: float = 30.0       # seconds an allow stays actionable
    batch_max: int = 256            # micro-batch size cap
    batch_within: float = 0.002     # seconds to wait filling a micro-batch
    datadir: str = ".holdgate/worker"
    max_clock_skew: float = 10.0    # seconds occurred_at may differ from the broker append time
    recovery_hold: float = 60.0     # event-time seconds a partition with lost state is denied
    idle_ttl: float = 86_400.0      # evict an agent's state after this much event time unseen
    session_timeout: float = 10.0   # seconds before a crashed worker's partitions move
    signals: str = "on"             # "off" only for benchmarks: guards then see zeros
    web_port: int = 0               # metrics and health endpoints; 0 disables them
    web_host: str = "127.0.0.1"     # where they listen (0.0.0.0 in a container)
    log_level: str = "warning"
    max_action_bytes: int = 65_536  # larger action records are denied TOO_LARGE
    instance_id: str = ""           # static group membership id; empty: host + datadir
    # How every Kafka client authenticates: holdgate.kafka_options turns these into
    # kafka-python's and aiokafka's keyword arguments; docs/acls.md lists the ACLs.
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str = "PLAIN"   # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* only)
    sasl_username: str = ""         # the Kafka principal, e.g. worker -> User:worker
    sasl_password: str = field(default="", repr=False)  # secret: never in repr or logs
    sasl_password_file: str = ""    # or: a file whose first line is the password
    ssl_cafile: str = ""            # CA bundle that signed the brokers' certificates
    ssl_certfile: str = ""          # client certificate (mutual TLS), may hold the key too
    ssl_keyfile: str = ""           # its private key, if in a file of its own

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        if env.get(ENV_PREFIX + "SIGNING_KEY"):
            raise ConfigError("HOLDGATE_SIGNING_KEY (a shared HMAC secret) is no longer "
                              "supported: any holder could mint allows. Generate an Ed25519 "
                              "pair with `holdgate keys generate`, give the worker "
                              "HOLDGATE_SIGNING_KEY_FILE and everyone else "
                              "HOLDGATE_TRUSTED_KEYS")
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validated()

    def validated(self) -> Settings:
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if self.batch_max < 1 or self.batch_within < 0:
            raise ConfigError("batch_max must be >= 1 and batch_within >= 0")
        if self.verdict_ttl <= 0:
            raise ConfigError("verdict_ttl must be > 0 seconds")
        if self.signals not in ("on", "off"):
            raise ConfigError("signals must be 'on' or 'off'")
        if self.recovery_hold < 0 or self.idle_ttl <= 0:
            raise ConfigError("recovery_hold must be >= 0 and idle_ttl > 0 seconds")
        if not 1024 <= self.max_action_bytes <= 512 * 1024:
            # a verdict embeds its action; it must stay far below the broker's message limit
            raise ConfigError("max_action_bytes must be between 1024 and 524288")
        _check_security(self)
        names = [self.actions_topic, self.verdicts_topic, self.deadletter_topic,
                 self.control_topic, self.approvals_topic, self.policies_topic,
                 self.models_topic, self.status_topic]
        if len(set(names)) != len(names):
            raise ConfigError("the actions, verdicts, deadletter, control, approvals, policies, "
                              "models and status topics must differ")
        return self

    def to_env(self) -> dict[str, str]:
        """The `HOLDGATE_*` variables that recreate these settings in a child process."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @property
    def state_table(self) -> str:
        return "agent-state"

    @property
    def changelog_topic(self) -> str:
        """Faust's name for the table's changelog; holdgate creates it (compacted)."""
        return f"{self.app_id}-{self.state_table}-changelog"

    def signer(self) -> Signer:
        """The worker's signing key; a worker refuses to start without one."""
        if not self.signing_key_file:
            raise ConfigError("no signing key: set HOLDGATE_SIGNING_KEY_FILE (or "
                              "--signing-key-file) to a private key made by "
                              "`holdgate keys generate`; a worker never publishes unsigned "
                              "verdicts")
        return load_signer(self.signing_key_file)

    def operators(self) -> TrustStore:
        """Operator public keys: control records signed by anyone else are ignored."""
        paths = [p.strip() for p in self.operator_keys.split(",") if p.strip()]
        return TrustStore.from_paths(paths) if paths else TrustStore()

    def approvers(self) -> ApproverKeys | None:
        """Approver public keys per role; None: approvals are refused (holds stay held)."""
        return ApproverKeys.parse(self.approver_keys) if self.approver_keys else None

    def trust(self) -> TrustStore:
        """Public keys whose signatures this reader accepts (empty: accepts no allow)."""
        paths = [p.strip() for p in self.trusted_keys.split(",") if p.strip()]
        return TrustStore.from_paths(paths) if paths else TrustStore()

    @property
    def policy_path(self) -> Path:
        if self.policy_dir:
            return Path(self.policy_dir)
        from importlib.resources import files
        return Path(str(files("holdgate.policies") / "default"))


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _check_security(s: Settings) -> None:
    """Refuse half-configured security rather than silently talk plaintext."""
    if s.security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"security_protocol {s.security_protocol!r} is not one of "
                          f"{', '.join(SECURITY_PROTOCOLS)}")
    if s.security_protocol.startswith("SASL_"):
        if s.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"sasl_mechanism {s.sasl_mechanism!r} is not one of "
                              f"{', '.join(SASL_MECHANISMS)}")
        if not s.sasl_username or not (s.sasl_password or s.sasl_password_file):
            raise ConfigError(f"security_protocol {s.security_protocol} needs "
                              "HOLDGATE_SASL_USERNAME and HOLDGATE_SASL_PASSWORD (or "
                              "HOLDGATE_SASL_PASSWORD_FILE)")
    elif s.sasl_username or s.sasl_password or s.sasl_password_file:
        raise ConfigError(f"SASL credentials are set but security_protocol is "
                          f"{s.security_protocol}; set HOLDGATE_SECURITY_PROTOCOL=SASL_SSL "
                          "(or SASL_PLAINTEXT) for them to be used")
    if not s.security_protocol.endswith("SSL") and (s.ssl_cafile or s.ssl_certfile
                                                    or s.ssl_keyfile):
        raise ConfigError(f"TLS files are set but security_protocol is {s.security_protocol}; "
                          "set HOLDGATE_SECURITY_PROTOCOL=SSL (or SASL_SSL) for them to be used")
    if s.ssl_keyfile and not s.ssl_certfile:
        raise ConfigError("ssl_keyfile needs the ssl_certfile it belongs to (mutual TLS)")


def _coerce(name: str, annotation: Any, raw: str) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        what = {"int": "an integer", "float": "a number"}.get(kind, f"a {kind}")
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not {what}") from None
    return raw
