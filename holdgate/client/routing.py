"""Where an action goes: configuration, partition choice and guard arguments.

The routing contract is what lets a client read *only* its own agents'
verdicts instead of the whole decision log:

* an action is produced with ``key = agent_id`` bytes to the EXPLICIT partition
  ``partition_for(agent_id, n)``, where ``n`` is the partition count of the
  actions topic (the SDK discovers it from the broker, it never trusts a
  configured number);
* the worker replies on the verdicts topic at the SAME partition number, with
  ``key = agent_id``; both topics must have the same partition count.

``partition_for`` is Kafka's Java default partitioner (``positive(murmur2(key))
% n``), so a runtime in another language using its stock Kafka client with
key = agent_id lands on the same partition as this SDK.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from holdgate.errors import ConfigError
from holdgate.kafka_options import KafkaSecurity
from holdgate.keys import TrustStore
from holdgate.routing import partition_for
from holdgate.settings import Settings

__all__ = ["partition_for", "GateConfig", "GuardSpec"]


@dataclass(frozen=True, slots=True)
class GateConfig:
    """What a gate needs from `Settings`, resolved once: explicit kwargs beat settings/env."""

    bootstrap: str
    actions_topic: str
    verdicts_topic: str
    trust: TrustStore
    client_id: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)  # SASL/TLS of its clients

    @classmethod
    def resolve(cls, *, bootstrap: str | None, settings: Settings | None,
                trusted_keys: TrustStore | str | Sequence[str] | None) -> GateConfig:
        """`settings` or, when None, `Settings.from_env()`; explicit arguments override.

        A gate trusts no key by default: with none configured it could never act
        on an allow, so that is refused here, at construction, with what to set.
        """
        base = settings.with_(bootstrap=bootstrap) if settings is not None \
            else Settings.from_env(bootstrap=bootstrap)
        if isinstance(trusted_keys, TrustStore):
            trust = trusted_keys
        elif trusted_keys:
            paths = [trusted_keys] if isinstance(trusted_keys, str) else list(trusted_keys)
            trust = TrustStore.from_paths(p for raw in paths for p in raw.split(",") if p)
        else:
            trust = base.trust()
        if not len(trust):
            raise ConfigError("no trusted verdict keys: set HOLDGATE_TRUSTED_KEYS (or "
                              "trusted_keys=) to the worker's public key file(s); without "
                              "one no allow could ever be verified")
        return cls(bootstrap=base.bootstrap, actions_topic=base.actions_topic,
                   verdicts_topic=base.verdicts_topic, trust=trust,
                   client_id=f"{base.app_id}-gate", security=KafkaSecurity.of(base))

    def missing_topics_message(self, missing: list[str]) -> str:
        """Say what is missing and how it gets created (the broker never auto-creates)."""
        names = ", ".join(repr(t) for t in missing)
        return (f"topic(s) {names} do not exist on {self.bootstrap}; the gate's topics are "
                "created by the worker (holdgate.topics.ensure_topics), never auto-created")

    def partition_counts_message(self, actions: int, verdicts: int) -> str:
        return (f"{self.actions_topic!r} has {actions} partitions but {self.verdicts_topic!r} "
                f"has {verdicts}; they must match for verdicts to return to the agent's partition")


Factory = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """A guarded function's action, built per call from the call's own arguments.

    `resource` and `context` may be values or callables; callables receive the
    call's arguments *by name* (bound to the function's signature, defaults
    applied), so ``lambda invoice_id, **kw: ...`` works whether the caller
    passed `invoice_id` positionally or by keyword.
    """

    action: str
    resource: Mapping[str, Any] | Factory
    context: Mapping[str, Any] | Factory | None
    signature: inspect.Signature

    @classmethod
    def for_function(cls, fn: Callable[..., Any], *, action: str,
                     resource: Mapping[str, Any] | Factory,
                     context: Mapping[str, Any] | Factory | None) -> GuardSpec:
        if not action:
            raise ConfigError("guard needs an action name such as 'payments.refund'")
        return cls(action=action, resource=resource, context=context,
                   signature=inspect.signature(fn))

    def build(self, args: tuple[Any, ...], kwargs: dict[str, Any]
              ) -> tuple[Any, Mapping[str, Any] | None]:
        """(resource, context) for one call; a factory's exception propagates (caller bug)."""
        named: dict[str, Any] | None = None

        def call(factory: Factory) -> Any:
            nonlocal named
            if named is None:
                named = self._named_arguments(args, kwargs)
            return factory(**named)

        resource = call(self.resource) if callable(self.resource) else self.resource
        context = call(self.context) if callable(self.context) else self.context
        return resource, context

    def _named_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)      # **kwargs of the function are passed flat
            else:
                named[name] = value      # *args stays a tuple under its own name
        return named
