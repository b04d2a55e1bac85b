"""Topic provisioning shared by the worker, the SDK checks, tests and the CLI.

Actions and verdicts must have the same partition count: a verdict goes back to
the partition number its action came from, so a client reads only the verdict
partitions of its own agents.  Mismatched existing topics are refused, loudly.
"""
from __future__ import annotations

from typing import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from holdgate.errors import ConfigError
from holdgate.settings import Settings

__all__ = ["ensure_topics", "partition_counts", "gate_topics"]


def gate_topics(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, config) for every topic the gate owns."""
    week = str(7 * 24 * 3600 * 1000)
    return [
        (settings.actions_topic, settings.partitions, {"retention.ms": week}),
        (settings.verdicts_topic, settings.partitions, {"retention.ms": week}),
        (settings.deadletter_topic, 1, {"retention.ms": week}),
    ]


def partition_counts(admin: KafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    wanted = set(names)
    counts: dict[str, int] = {}
    for meta in admin.describe_topics(list(wanted)):
        if meta.get("error_code", 0) == 0 and meta.get("partitions"):
            counts[meta.get("name") or meta.get("topic")] = len(meta["partitions"])
    return counts


def ensure_topics(settings: Settings, *, admin: KafkaAdminClient | None = None) -> dict[str, int]:
    """Create missing topics; refuse to run on actions/verdicts partition mismatch."""
    own = admin is None
    admin = admin or KafkaAdminClient(bootstrap_servers=settings.bootstrap,
                                      client_id=f"{settings.app_id}-admin")
    try:
        topics = gate_topics(settings)
        existing = set(admin.list_topics())
        missing = [NewTopic(name, parts, settings.replication_factor, topic_configs=conf)
                   for name, parts, conf in topics if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker won the race: fine, counts are checked below
        counts = partition_counts(admin, [t[0] for t in topics])
    finally:
        if own:
            admin.close()
    a, v = counts.get(settings.actions_topic), counts.get(settings.verdicts_topic)
    if a != v:
        raise ConfigError(f"{settings.actions_topic} has {a} partitions but "
                          f"{settings.verdicts_topic} has {v}; they must match so verdicts "
                          "return to their agent's partition")
    return counts
