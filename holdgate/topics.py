"""Topic provisioning shared by the worker, the SDK checks, tests and the CLI.

Actions and verdicts must have the same partition count: a verdict goes back to
the partition number its action came from, so a client reads only the verdict
partitions of its own agents.  Mismatched existing topics are refused, loudly.
"""
from __future__ import annotations

import time
from typing import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from holdgate.errors import ConfigError
from holdgate.kafka_options import kafka_python_options
from holdgate.settings import Settings

__all__ = ["ensure_topics", "partition_counts", "gate_topics", "ARTIFACT_MAX_BYTES"]

#: Largest published bundle or model record (topic max.message.bytes; producers match it).
ARTIFACT_MAX_BYTES = 8 * 2**20


def gate_topics(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, config) for every topic the gate owns."""
    week = str(7 * 24 * 3600 * 1000)
    return [
        # LogAppendTime: the broker stamps each action, a time the agent cannot forge
        # and a replay reads back unchanged (see stream.decider._event_view).
        (settings.actions_topic, settings.partitions,
         {"retention.ms": week, "message.timestamp.type": "LogAppendTime"}),
        (settings.verdicts_topic, settings.partitions, {"retention.ms": week}),
        (settings.deadletter_topic, 1, {"retention.ms": week}),
        # Approval tokens go to the agent's partition, where its held action waits.
        (settings.approvals_topic, settings.partitions,
         {"retention.ms": week, "message.timestamp.type": "LogAppendTime"}),
        # Operator controls: one partition every worker reads whole; the latest per target.
        (settings.control_topic, 1, {"cleanup.policy": "compact"}),
        # Published policy bundles and models (content by version, plus the history of
        # enforce/shadow pointers), read whole by every worker; a large model fits.
        (settings.policies_topic, 1, {"cleanup.policy": "compact",
                                      "max.message.bytes": str(ARTIFACT_MAX_BYTES)}),
        (settings.models_topic, 1, {"cleanup.policy": "compact",
                                    "max.message.bytes": str(ARTIFACT_MAX_BYTES)}),
        # What each worker enforces and shadows, latest per worker.
        (settings.status_topic, 1, {"cleanup.policy": "compact"}),
        # Per-agent state: compacted, so it keeps the latest state of every agent forever.
        (settings.changelog_topic, settings.partitions, {
            "cleanup.policy": "compact", "segment.ms": str(15 * 60 * 1000),
            "min.cleanable.dirty.ratio": "0.2", "delete.retention.ms": str(24 * 3600 * 1000)}),
    ]


def partition_counts(admin: KafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    wanted = set(names)
    counts: dict[str, int] = {}
    try:
        described = admin.describe_topics(list(wanted))
    except KafkaError:
        return {}                       # not there yet (or being deleted): caller retries
    for meta in described:
        if meta.get("error_code", 0) == 0 and meta.get("partitions"):
            counts[meta.get("name") or meta.get("topic")] = len(meta["partitions"])
    return counts


def ensure_topics(settings: Settings, *, admin: KafkaAdminClient | None = None) -> dict[str, int]:
    """Create missing topics; refuse to run on actions/verdicts partition mismatch."""
    own = admin is None
    admin = admin or KafkaAdminClient(bootstrap_servers=settings.bootstrap,
                                      client_id=f"{settings.app_id}-admin",
                                      **kafka_python_options(settings))
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
        # Creation is asynchronous on the controller: poll until metadata shows every topic.
        names = [t[0] for t in topics]
        deadline = time.monotonic() + 15.0
        counts = partition_counts(admin, names)
        while len(counts) < len(names) and time.monotonic() < deadline:
            time.sleep(0.05)
            counts = partition_counts(admin, names)
    finally:
        if own:
            admin.close()
    a = counts.get(settings.actions_topic)
    for other in (settings.verdicts_topic, settings.changelog_topic, settings.approvals_topic):
        if counts.get(other) != a:
            raise ConfigError(f"{settings.actions_topic} has {a} partitions but {other} has "
                              f"{counts.get(other)}; they must match so verdicts and state "
                              "stay with their agent's partition")
    if a != settings.partitions:
        raise ConfigError(f"{settings.actions_topic} has {a} partitions but settings say "
                          f"{settings.partitions}; set HOLDGATE_PARTITIONS={a}")
    return counts
