"""Hot swap: the snapshot the published policies and models name, rebuilt as they change.

Workers follow the compacted ``holdgate.policies`` and ``holdgate.models`` topics
(operator-signed records, `holdgate.artifacts`; `stream.published` turns them
into the enforced and shadow versions).  When what is published changes, the
new snapshot is built off the event loop (loading Cedar and a model takes a
while) and handed to the driver, which swaps it in between two batches: a batch
is decided under one snapshot, so no verdict names versions that did not decide
it, and nothing is dropped or decided twice (the swap touches no offsets).

What is published wins over the local ``--policy-dir``/``--model``; with nothing
published the local ones are enforced.  A publish that cannot be loaded (signed
but broken, or names content that is missing) leaves the version in force and
is reported (`problems`, log, metric, status).  Until both topics are read to
their end nothing is decided under a guess: the snapshot in force denies every
action ``STATE_RECOVERING`` ("versions not known yet"), and the driver keeps its
partitions paused for the first seconds, so that only a lasting outage of the
topics turns into those denies.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from holdgate.artifacts import Artifact, parse_value
from holdgate.kafka_options import aiokafka_options
from holdgate.settings import Settings
from holdgate.stream.core import Shadow, Snapshot
from holdgate.stream.published import Published
from holdgate.stream.signed_table import SignedTable, follow

__all__ = ["Versions", "assemble", "VERSIONS_UNKNOWN"]

log = logging.getLogger("holdgate.worker")

VERSIONS_UNKNOWN = ("the published policy and model versions are not known yet (their "
                    "topics could not be read); nothing is decided under a guess")


def assemble(settings: Settings, bundle: Any, model: Any, *, shadow_bundle: Any = None,
             shadow_model: Any = None, shadow_model_set: bool = False) -> Snapshot:
    """The snapshot for a bundle and model (objects, loaded), with an optional shadow.

    `shadow_model_set` says a shadow *model* is published (it may be None only
    when the enforced model is, which publishing refuses); a shadow policy
    alone is decided from the enforced signals.
    """
    from holdgate.models import SignalComputer
    from holdgate.policies import PolicyEngine

    on = settings.signals == "on"
    signals = SignalComputer(model=model, roles=bundle.agent_roles) if on else None
    engine = PolicyEngine(bundle)
    shadow = None
    if shadow_bundle is not None or shadow_model_set:
        candidate = shadow_bundle if shadow_bundle is not None else bundle
        computer = SignalComputer(model=shadow_model, roles=candidate.agent_roles) \
            if on and shadow_model_set else None
        shadow = Shadow(
            # a model-only candidate is decided by the enforced engine (its cache too)
            engine=PolicyEngine(candidate) if shadow_bundle is not None else engine,
            policy_version=candidate.version, signals=computer,
            model_version=(computer.model_version if computer is not None else
                           signals.model_version if signals is not None else None))
    base = Snapshot(engine=engine, policy_version=bundle.version,
                    signals=signals, roles=bundle.agent_roles,
                    max_clock_skew=settings.max_clock_skew,
                    recovery_hold=settings.recovery_hold, idle_ttl=settings.idle_ttl,
                    partitions=settings.partitions)
    return dataclasses.replace(base, shadow=shadow)


@dataclass
class _Loaded:
    """Loaded artifacts by version: a swap rebuilds only what changed."""

    policies: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)

    def policy(self, artifact: Artifact) -> Any:
        from holdgate.stream.versions import load_policy
        return self._get(self.policies, artifact, load_policy)

    def model(self, artifact: Artifact) -> Any:
        from holdgate.stream.versions import load_model
        return self._get(self.models, artifact, load_model)

    @staticmethod
    def _get(cache: dict[str, Any], artifact: Artifact, load: Callable[[Artifact], Any]) -> Any:
        hit = cache.pop(artifact.version, None)
        if hit is None:
            hit = load(artifact)
        cache[artifact.version] = hit              # most recently used last
        while len(cache) > 4:
            del cache[next(iter(cache))]
        return hit


class Versions:
    """Follows both topics and hands the driver each new snapshot (`on_snapshot`)."""

    def __init__(self, settings: Settings, local: Snapshot,
                 on_snapshot: Callable[[Snapshot], None]) -> None:
        self.settings = settings
        self.local = local
        self.on_snapshot = on_snapshot
        self.on_report: Callable[[], None] = lambda: None    # problems changed (status)
        options = aiokafka_options(settings)
        trust = settings.operators()
        self.tables = {kind: SignedTable(settings.bootstrap, topic, trust, parse_value,
                                         client_options=options)
                       for kind, topic in (("policy", settings.policies_topic),
                                           ("model", settings.models_topic))}
        for table in self.tables.values():
            table.on_reject = self._dirty_set
        self.caught_up = asyncio.Event()
        self.problems: list[str] = []
        self.enforced: dict[str, str | None] = {"policy": local.policy_version,
                                                "model": local.model_version}
        self.shadow: dict[str, str | None] = {"policy": None, "model": None}
        self.since = time.time()
        self.swaps = 0
        self.failures = 0
        self._wanted: tuple[Any, ...] | None = None
        self._dirty = asyncio.Event()
        self._loaded = _Loaded()

    def _dirty_set(self) -> None:
        self._dirty.set()

    async def run(self) -> None:
        tasks = [asyncio.ensure_future(follow(t, self._dirty.set))
                 for t in self.tables.values()]
        try:
            await asyncio.gather(*(t.caught_up.wait() for t in self.tables.values()))
            await self._rebuild()
            self.caught_up.set()
            while True:
                await self._dirty.wait()
                await asyncio.sleep(0.05)        # one rebuild for a burst of records
                await self._rebuild()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def state(self) -> dict[str, Published]:
        return {kind: Published.from_values(t.values, kind)  # type: ignore[arg-type]
                for kind, t in self.tables.items()}

    def _ignored(self) -> list[str]:
        """Unsigned or untrusted records the tables refused (they change nothing)."""
        return [f"{t.topic}: {t.rejected.count} record(s) ignored (unsigned, not by a trusted "
                f"operator key, or unreadable); last: {t.rejected.last}"
                for t in self.tables.values() if t.rejected.count]

    async def _rebuild(self) -> None:
        try:
            await self._rebuild_once()
        finally:
            self.on_report()

    async def _rebuild_once(self) -> None:
        self._dirty.clear()
        state = self.state()
        pol, mod = state["policy"], state["model"]
        wanted = (pol.enforced and pol.enforced.version, mod.enforced and mod.enforced.version,
                  pol.shadow and pol.shadow.version, mod.shadow and mod.shadow.version)
        problems = pol.problems + mod.problems + self._ignored()
        if wanted == self._wanted:
            self.problems = problems + [p for p in self.problems if p.startswith("load:")]
            return
        try:
            snapshot = await asyncio.to_thread(self._build, pol, mod)
        except Exception as exc:  # noqa: BLE001 - a broken publish never replaces what works
            self.failures += 1
            self.problems = problems + [f"load: {exc}"]
            log.error("published versions %s could not be loaded; the versions in force "
                      "(%s) stay: %s", [w for w in wanted if w], self.enforced, exc)
            self._wanted = wanted         # do not retry the same broken set on every record
            return
        self._wanted = wanted
        self.problems = problems
        self.enforced = {"policy": snapshot.policy_version, "model": snapshot.model_version}
        sh = snapshot.shadow
        self.shadow = {"policy": pol.shadow.version if pol.shadow else None,
                       "model": mod.shadow.version if mod.shadow else None}
        self.since = time.time()
        self.swaps += 1
        log.warning("deciding under policy %s, model %s%s", self.enforced["policy"],
                    self.enforced["model"], f"; shadow {self.shadow}" if sh else "")
        self.on_snapshot(snapshot)

    def _build(self, pol: Published, mod: Published) -> Snapshot:
        from holdgate.models.baseline_model import BaselineModel
        from holdgate.policies import PolicyBundle

        s = self.settings
        bundle = self._loaded.policy(pol.enforced) if pol.enforced else \
            PolicyBundle.load(s.policy_path)
        if mod.enforced:
            model = self._loaded.model(mod.enforced)
        else:
            model = BaselineModel.load(s.model) if s.model else None
        shadow_bundle = self._loaded.policy(pol.shadow) if pol.shadow else None
        shadow_model = self._loaded.model(mod.shadow) if mod.shadow else None
        return assemble(s, bundle, model, shadow_bundle=shadow_bundle,
                        shadow_model=shadow_model, shadow_model_set=mod.shadow is not None)
