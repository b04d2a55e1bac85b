"""One settings object for worker, SDK and CLI, read from `HOLDGATE_*` env vars.

Flags override the environment, the environment overrides defaults.  Key
material is never in a setting: settings name files (the worker's private
key, the public keys a runtime or executor trusts), and private key files
must not be readable by others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

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
    partitions: int = 4
    replication_factor: int = 1
    policy_dir: str = ""            # empty: the bundle shipped in holdgate.policies.default
    model: str = ""                 # fitted baseline model folder (holdgate fit); empty: none
    signing_key_file: str = ""      # worker: Ed25519 private key (holdgate keys generate)
    trusted_keys: str = ""          # SDK/executor/tools: public key files or folders, comma list
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
    log_level: str = "warning"
    max_action_bytes: int = 65_536  # larger action records are denied TOO_LARGE
    instance_id: str = ""           # static group membership id; empty: host + datadir

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
        topics = {self.actions_topic, self.verdicts_topic, self.deadletter_topic}
        if len(topics) != 3:
            raise ConfigError("actions, verdicts and deadletter topics must differ")
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


def _coerce(name: str, annotation: Any, raw: str) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a {kind}") from None
    return raw
