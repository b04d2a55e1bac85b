"""Settings to Kafka client keyword arguments: how every holdgate client authenticates.

Every Kafka client the project makes (worker consumer and transactional
producers, restore consumer, topic admin, both SDK transports, the CLI tools)
spreads one of these into its constructor, so one set of `HOLDGATE_*`
variables secures them all::

    KafkaConsumer(bootstrap_servers=s.bootstrap, ..., **kafka_python_options(s))
    AIOKafkaProducer(bootstrap_servers=s.bootstrap, ..., **aiokafka_options(s))

The two libraries name things differently: kafka-python takes the TLS file
names itself, aiokafka wants an ``ssl.SSLContext`` (built here with
``aiokafka.helpers.create_ssl_context``, imported only when TLS is on, so the
sync SDK never loads aiokafka).  With the default ``PLAINTEXT`` both return an
empty dict: the clients are built exactly as before.

The password is a secret: `KafkaSecurity` keeps it out of its ``repr`` as
`Settings` does, and nothing here logs.  Which principal needs which ACL is
in docs/acls.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holdgate.errors import ConfigError
from holdgate.settings import Settings

__all__ = ["KafkaSecurity", "kafka_python_options", "aiokafka_options"]


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The security part of `Settings`, password resolved (a file is read here)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @classmethod
    def of(cls, settings: Settings) -> KafkaSecurity:
        password = settings.sasl_password
        if settings.security_protocol.startswith("SASL_") and not password \
                and settings.sasl_password_file:
            try:
                lines = Path(settings.sasl_password_file).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read HOLDGATE_SASL_PASSWORD_FILE "
                                  f"{settings.sasl_password_file}: {exc.strerror}") from None
            password = lines[0] if lines else ""
            if not password:
                raise ConfigError(f"{settings.sasl_password_file} holds no password")
        return cls(protocol=settings.security_protocol, sasl_mechanism=settings.sasl_mechanism,
                   sasl_username=settings.sasl_username, sasl_password=password,
                   ssl_cafile=settings.ssl_cafile, ssl_certfile=settings.ssl_certfile,
                   ssl_keyfile=settings.ssl_keyfile)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    def _common(self) -> dict[str, Any]:
        if self.protocol == "PLAINTEXT":
            return {}
        opts: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl:
            opts.update(sasl_mechanism=self.sasl_mechanism,
                        sasl_plain_username=self.sasl_username,
                        sasl_plain_password=self.sasl_password)
        return opts

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaConsumer/KafkaProducer/KafkaAdminClient."""
        opts = self._common()
        if self.tls:
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name):
                    opts[name] = getattr(self, name)
        return opts

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's AIOKafkaConsumer/AIOKafkaProducer."""
        opts = self._common()
        if self.tls:
            from aiokafka.helpers import create_ssl_context

            opts["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile or None,
                                                     certfile=self.ssl_certfile or None,
                                                     keyfile=self.ssl_keyfile or None)
        return opts


def _security(source: Settings | KafkaSecurity) -> KafkaSecurity:
    return source if isinstance(source, KafkaSecurity) else KafkaSecurity.of(source)


def kafka_python_options(source: Settings | KafkaSecurity) -> dict[str, Any]:
    """``security_protocol``, ``sasl_*`` and ``ssl_*`` kwargs for a kafka-python client."""
    return _security(source).kafka_python()


def aiokafka_options(source: Settings | KafkaSecurity) -> dict[str, Any]:
    """``security_protocol``, ``sasl_*`` and ``ssl_context`` kwargs for an aiokafka client."""
    return _security(source).aiokafka()
