"""The Cedar step of the decision pipeline: many requests in, one decision each.

This is the worker's hot path, so a micro-batch costs one
``cedarpy.is_authorized_batch`` call against handles parsed at bundle load;
only the per-batch resource entities are parsed per call.

A decision is a function of the request (and the bundle) alone, never of its
batch neighbours: the worker's batches differ from a replay's.  Requests in
one call share one set of added resource entities, so they are grouped
(``PolicyEngine._assign``) such that none can see another's:

* a resource without attributes needs no entity, and never joins a group that
  holds another request's entity for the same uid (nor the reverse);
* when some policy reads attributes of an entity other than the request's own
  resource (``Ticket::"T-1".priority``, ``context.ref.x``, ``principal.t.x``:
  the projection then marks every resource attribute as read), a request that
  describes its resource is evaluated in a call of its own, and so is any
  request whose data holds a Cedar escape (``__entity``, ...).

The common case (resources without attributes, or bundles that read only the
request's own resource) stays one call per batch.

Rules on top of Cedar's (default deny, forbid wins):

* ``context.resource_trusted`` tells policies whether the resource's attributes
  come from the entity store (true) or only from the agent's own request
  (false): a policy lets a value open a door only when it is trusted, so what
  an agent says about its resource can make a decision stricter, never looser.
* A forbid annotated ``@approval("<role>")`` holds instead of refusing: when
  every forbid that fires is approvable and some permit matches, the decision
  is ``pending`` (every reader treats it as a deny) and names the role whose
  signed approval would lift it; the worker decides again when one arrives,
  with the verified approval in ``context.approval``.

* Unknown agents, undeclared resource types and undeclared actions are denied
  before Cedar: the answer cannot depend on policies never written for them.
  An action is its name verbatim (MCP tool ``send_email`` is
  ``Action::"send_email"``) and must be declared with ``appliesTo``: a group
  name (``read``, matched by ``action in Action::"read"``) is refused too.
* Floats become Cedar decimals (``{"__extn": ...}``, see
  :mod:`holdgate.cedar_values`); one where a policy expects a Long is an
  evaluation error, so a deny (below).
* A resource that is in ``entities.json`` is taken from there; the request's
  own attributes for it are ignored, so an agent cannot relabel a production
  repository as staging.  Other resources are built from the request.
* Any evaluation error denies with ``POLICY_ERROR`` even when Cedar would
  allow (Cedar skips an erroring policy, which for a forbid means failing
  open).  Nothing raises out of :meth:`PolicyEngine.decide_many`.
* ``context.signals`` always holds every signal a policy reads (missing ones
  are 0), so policies read ``context.signals.x`` without ``has``.  Only the
  signals the bundle's policies read are sent (see
  ``PolicyBundle.signals_read``): Cedar pays about 1 µs per context field.
* Decisions are cached by the parts of a request the bundle's policies can
  observe (`holdgate.policies.projection`): principal, action, the resource
  (uid only where an id can matter, the attributes policies read), the context
  keys policies read, and the *bucket* of each signal; a request carrying a
  Cedar escape (``__entity``, ``__extn``, ...) is keyed by all of its data.  A
  hit is Cedar's answer for an equivalent request, so the cache changes no
  decision; it spares the 50-100 µs Cedar call for most requests.  Answers that
  carry an evaluation error are never cached (their message may name the
  request's own entities).

The schema is *not* passed to Cedar at evaluation time: agents may send
context keys the schema does not list.  Policies must therefore guard optional
keys with ``has`` and compare request-supplied values against allow-lists.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import cedarpy
import orjson

from holdgate import reasons as codes
from holdgate.cedar_values import to_cedar
from holdgate.events import ActionRequest, Decided, Decision, Reason
from holdgate.policies.bundle import PRINCIPAL_TYPE, PolicyBundle
from holdgate.signals import SIGNAL_NAMES, ZERO_SIGNALS

__all__ = ["SIGNAL_NAMES", "PolicyDecision", "PolicyEngine"]

_POLICY_IN_ERROR_RE = re.compile(r"policy `([^`]*)`")
#: Actions a request may name, in Cedar's canonical schema rendering (groups have no
#: ``appliesTo``).
_REQUESTABLE_RE = re.compile(r'^action "([^"\\]*)"(?: in \[[^\]]*\])? appliesTo \{', re.MULTILINE)
_DECIMAL_HINT = (" (holdgate: a JSON number with a fraction or exponent is a Cedar decimal, "
                 "one without is a Long)")
_DECISION_CACHE_MAX = 4096
_RESULT_CACHE_MAX = 200_000
_SORTED = orjson.OPT_SORT_KEYS

Uid = tuple[str, str]


@dataclass(frozen=True, slots=True)
class PolicyDecision(Decided):
    """Cedar's answer for one request, with the reasons a verdict will carry."""

    decision: Decision
    reasons: tuple[Reason, ...]
    awaiting: str | None = None      # pending: the approver role that can lift it


def _project(record: Mapping[str, Any], keys: tuple[str, ...] | None) -> Any:
    """The parts of a record the policies read (all of it when `keys` is None)."""
    if keys is None:
        return orjson.dumps(record, option=_SORTED)
    return tuple((k, orjson.dumps(record[k], option=_SORTED)) for k in keys if k in record)


def _deny(code: str, message: str, policy_id: str | None = None) -> PolicyDecision:
    return PolicyDecision("deny", (Reason(code=code, message=message, policy_id=policy_id),))


@dataclass(slots=True)
class _Group:
    """Requests that share one Cedar call and one entity delta without seeing each
    other's: no uid with two attribute sets, and no uid both in the delta and asked
    about without attributes (`bare`)."""

    delta: dict[Uid, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    bare: set[Uid] = field(default_factory=set)
    members: list[tuple[int, dict[str, Any], Uid]] = field(default_factory=list)


@dataclass(slots=True)
class _Groups:
    """One batch's Cedar calls: groups requests may share, and requests evaluated alone."""

    shared: list[_Group] = field(default_factory=list)
    alone: list[_Group] = field(default_factory=list)

    def __iter__(self) -> Iterator[_Group]:
        yield from self.shared
        yield from self.alone


class PolicyEngine:
    """Decides batches of requests against one immutable :class:`PolicyBundle`.

    Swapping policies means building a new engine from a new bundle; an
    engine never changes under a batch.
    """

    __slots__ = ("_bundle", "_policy_set", "_entities", "_known_uids", "_agents",
                 "_types", "_infos", "_signal_names", "_rank", "_permit", "_forbid", "_cache",
                 "_results", "_cuts", "_projection", "_apart", "_approvable", "_permit_set",
                 "_requestable", "caching", "hits", "misses")

    def __init__(self, bundle: PolicyBundle, *, caching: bool = True) -> None:
        self._bundle = bundle
        self._policy_set = bundle.policy_set
        self._entities = bundle.entities
        self._known_uids = bundle.entity_uids
        self._agents = bundle.agent_ids
        self._types = bundle.entity_types
        self._requestable = frozenset(_REQUESTABLE_RE.findall(str(bundle.schema))) \
            or bundle.action_ids
        self._infos = bundle.policies
        self._signal_names = bundle.signals_read
        self._rank = {pid: i for i, pid in enumerate(bundle.policy_ids)}
        # Reasons and whole decisions depend only on the determining policy
        # ids, so they are built once and shared (all frozen).
        self._permit = {pid: Reason(code=codes.PERMITTED, message=i.reason, policy_id=pid)
                        for pid, i in bundle.policies.items() if i.effect == "permit"}
        self._forbid = {pid: Reason(code=i.code or codes.FORBIDDEN, message=i.reason,
                                    policy_id=pid)
                        for pid, i in bundle.policies.items() if i.effect == "forbid"}
        self._approvable = {pid: i.annotations["approval"] for pid, i in bundle.policies.items()
                            if i.effect == "forbid" and i.annotations.get("approval")}
        self._permit_set = bundle.permit_set
        self._cache: dict[tuple[bool, tuple[str, ...]], PolicyDecision] = {}
        self._results: dict[tuple[Any, ...], PolicyDecision] = {}
        names = bundle.signals_read if bundle.signals_read is not None else SIGNAL_NAMES
        self._projection = bundle.projection
        # Some policy may read another entity's attributes, which may be a neighbour's
        # resource: the projection then counts every resource attribute as read (it
        # does so too when `resource` is used whole: a cheap over-approximation).
        self._apart = bundle.projection.resource_attrs is None
        self._cuts = tuple((name, bundle.projection.signal_cuts.get(name)) for name in names)
        self.caching = caching
        self.hits = 0
        self.misses = 0

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    @property
    def version(self) -> str:
        return self._bundle.version

    def knows_agent(self, agent_id: str) -> bool:
        return agent_id in self._agents

    def knows_resource_type(self, resource_type: str) -> bool:
        return resource_type in self._types

    def decide(self, request: ActionRequest,
               signals: Mapping[str, int] | None = None) -> PolicyDecision:
        """One request; prefer :meth:`decide_many` on the hot path."""
        return self.decide_many([(request, signals or {})])[0]

    def decide_many(self, items: Sequence[tuple[ActionRequest, Mapping[str, int]]]
                    ) -> list[PolicyDecision]:
        """Decisions for ``items`` in order: pre-checks, cache, one Cedar call per entity group."""
        results: list[PolicyDecision | None] = [None] * len(items)
        groups = _Groups()
        keys: list[tuple[Any, ...] | None] = [None] * len(items)
        first: dict[tuple[Any, ...], int] = {}
        twins: list[tuple[int, int]] = []
        for index, (request, signals) in enumerate(items):
            try:
                results[index] = self._precheck(request)
                if results[index] is not None:
                    continue
                escaped = self._escaped(request)
                if self.caching:
                    key = keys[index] = self._key(request, signals, escaped)
                    hit = self._results.get(key)
                    if hit is not None:
                        self.hits += 1
                        results[index] = hit
                        continue
                    if key in first:            # same key earlier in this batch
                        twins.append((index, first[key]))
                        continue
                    first[key] = index
                    self.misses += 1
                self._assign(groups, index, request, signals, escaped)
            except Exception as exc:  # noqa: BLE001 - one bad request must not sink the batch
                results[index] = _deny(codes.POLICY_ERROR, f"cannot build Cedar request: {exc}")
        for group in groups:
            try:
                self._evaluate(group, items, results)
            except Exception as exc:  # noqa: BLE001 - fail closed, never raise
                for index, _, _ in group.members:
                    if results[index] is None:
                        results[index] = _deny(codes.POLICY_ERROR, f"Cedar call failed: {exc}")
        if self.caching:
            if len(self._results) > _RESULT_CACHE_MAX:
                self._results.clear()
            for key, index in first.items():
                answer = results[index]
                if answer is not None and all(r.code != codes.POLICY_ERROR
                                              for r in answer.reasons):
                    self._results[key] = answer
            for index, source in twins:
                answer = results[source]
                if answer is not None and any(r.code == codes.POLICY_ERROR
                                              for r in answer.reasons):
                    # Errors are not shared (their message may name the request's own
                    # data): evaluate on its own, as the uncached engine would.
                    retry = _Groups()
                    try:
                        request, signals = items[index]
                        self._assign(retry, index, request, signals, self._escaped(request))
                        for group in retry:
                            self._evaluate(group, items, results)
                    except Exception as exc:  # noqa: BLE001 - as in the first pass
                        results[index] = _deny(codes.POLICY_ERROR,
                                               f"cannot build Cedar request: {exc}")
                    continue
                results[index] = answer
        return [r if r is not None else _deny(codes.POLICY_ERROR, "no decision was produced")
                for r in results]

    def _key(self, request: ActionRequest, signals: Mapping[str, int],
             escaped: bool) -> tuple[Any, ...]:
        """What the bundle can observe of this request (see holdgate.policies.projection).

        `escaped`: whether the request's data holds a Cedar escape (`_escaped`)."""
        p = self._projection
        resource = request.resource
        uid = (resource.type, resource.id)
        known = uid in self._known_uids
        get = signals.get
        # `projection.bucket`, inlined: a call per signal was a tenth of a cache hit.
        observed: tuple[Any, ...] = tuple([
            int(get(name, 0)) if cuts is None else bisect_right(cuts, int(get(name, 0)))
            for name, cuts in self._cuts])
        if self._signal_names is None and not signals.keys() <= ZERO_SIGNALS.keys():
            # The whole record reaches Cedar, names holdgate does not compute included.
            observed += tuple(sorted((k, int(v)) for k, v in signals.items()
                                     if k not in ZERO_SIGNALS))
        attributes = None if known else resource.attributes
        context = request.context
        # A Cedar escape anywhere in the request's own data can fail the request
        # (`__extn`, `__expr`) or name an entity (`__entity`) where no policy looks:
        # key such a request by all of its data.
        if escaped:
            return (request.agent_id, request.action, resource.type, resource.id,
                    known or bool(attributes), _project(attributes or {}, None),
                    _project(context, None), observed, "escaped")
        rid = resource.id if known or p.resource_ids_matter or uid in p.entity_literals \
            else None
        attrs: Any = ()
        if attributes:
            attrs = _project(attributes, p.resource_attrs)
        projected = _project(context, p.context_keys) if context else ()
        return (request.agent_id, request.action, resource.type, rid,
                known or bool(attributes), attrs, projected, observed)

    # ------------------------------------------------------------ internals --

    def _escaped(self, request: ActionRequest) -> bool:
        """Whether the request's data that reaches Cedar holds a Cedar escape
        (``__entity``, ``__extn``, ``__expr``; the attributes of a stored resource
        never reach Cedar)."""
        context, resource = request.context, request.resource
        attributes = resource.attributes
        return bool(context and b'"__' in orjson.dumps(context)
                    or attributes and (resource.type, resource.id) not in self._known_uids
                    and b'"__' in orjson.dumps(attributes))

    def _precheck(self, request: ActionRequest) -> PolicyDecision | None:
        if request.agent_id not in self._agents:
            return _deny(codes.UNKNOWN_AGENT,
                         f"agent {request.agent_id!r} is not in the policy bundle's entities")
        if request.resource.type not in self._types:
            return _deny(codes.UNKNOWN_RESOURCE_TYPE,
                         f"resource type {request.resource.type!r} is not declared "
                         "in the policy schema")
        action = request.action
        if action not in self._requestable:
            if action in self._bundle.action_ids:
                return _deny(codes.NO_PERMIT, f"{action!r} is an action group of the schema, "
                             "not an action: request one of its actions")
            return _deny(codes.NO_PERMIT, f"action {action!r} is not declared in the schema "
                         "(an action name is its Cedar action id, verbatim and case-sensitive)")
        return None

    def _signals_record(self, signals: Mapping[str, int]) -> dict[str, int]:
        if self._signal_names is None:  # a policy uses the record as a whole
            record = dict(ZERO_SIGNALS)
            for name, value in signals.items():
                record[name] = int(value)
            return record
        return {name: int(signals.get(name, 0)) for name in self._signal_names}

    def _assign(self, groups: _Groups, index: int, request: ActionRequest,
                signals: Mapping[str, int], escaped: bool) -> None:
        """Build the Cedar request and put it where no neighbour can change its answer.

        Only requests that describe a resource the store does not hold add an entity.
        Such an entity must not be seen by any other request of its group: not by one
        asking about the same uid without attributes (Cedar would read a neighbour's
        attributes as the resource's own), nor, when a policy reads other entities'
        attributes or a request holds an escape, by anyone (``Ticket::"T-1".priority``
        would read a neighbour's T-1): then those requests get a call of their own.
        """
        resource = request.resource
        context = dict(to_cedar(request.context))
        context["signals"] = self._signals_record(signals or {})
        context["resource_trusted"] = (resource.type, resource.id) in self._known_uids
        cedar_request = {
            "principal": {"type": PRINCIPAL_TYPE, "id": request.agent_id},
            "action": {"type": "Action", "id": request.action},
            "resource": {"type": resource.type, "id": resource.id},
            # Serialised here with orjson; cedarpy would json.dumps a dict.
            "context": orjson.dumps(context).decode(),
        }
        uid = (resource.type, resource.id)
        member = (index, cedar_request, uid)
        # entities.json is authoritative; and a resource without attributes needs no
        # entity at all (Cedar treats a missing entity like one without attributes),
        # which spares the per-batch delta whose cost grows with the entity store.
        described = bool(resource.attributes) and uid not in self._known_uids
        if escaped or described and self._apart:
            group = _Group()
            if described:
                group.delta[uid] = (b"", self._entity(uid, resource.attributes))
            group.members.append(member)
            groups.alone.append(group)
            return
        shared = groups.shared
        if not described:
            for group in shared:
                if uid not in group.delta:
                    break
            else:
                group = _Group()
                shared.append(group)
            group.bare.add(uid)
            group.members.append(member)
            return
        key = orjson.dumps(resource.attributes, option=_SORTED)
        for group in shared:
            if uid in group.bare:
                continue
            existing = group.delta.get(uid)
            if existing is None or existing[0] == key:
                break
        else:
            group = _Group()
            shared.append(group)
        if uid not in group.delta:
            group.delta[uid] = (key, self._entity(uid, resource.attributes))
        group.members.append(member)

    @staticmethod
    def _entity(uid: Uid, attributes: Mapping[str, Any]) -> dict[str, Any]:
        return {"uid": {"type": uid[0], "id": uid[1]}, "attrs": to_cedar(attributes),
                "parents": []}

    def _evaluate(self, group: _Group, items: Sequence[tuple[ActionRequest, Any]],
                  results: list[PolicyDecision | None]) -> None:
        try:
            entities = self._with_delta([e for _, e in group.delta.values()])
            answers = cedarpy.is_authorized_batch(
                [req for _, req, _ in group.members], self._policy_set, entities)
            if len(answers) != len(group.members):
                raise RuntimeError(f"{len(answers)} answers for {len(group.members)} requests")
        except Exception:  # noqa: BLE001 - isolate the request that broke the batch
            self._evaluate_one_by_one(group, items, results)
            return
        held = []
        for member, answer in zip(group.members, answers):
            decision = results[member[0]] = self._to_decision(answer, items[member[0]][0])
            if self._holdable(decision):
                held.append(member)
        if held:
            self._hold(entities, held, results)

    def _holdable(self, decision: PolicyDecision) -> bool:
        """Denied only by approvable forbids that *decided* (an evaluation error never holds:
        an approver would be asked to lift something that fails again)."""
        return decision.decision == "deny" and bool(self._approvable) and bool(
            decision.reasons) and all(r.policy_id in self._approvable and
                                      r.code != codes.POLICY_ERROR for r in decision.reasons)

    def _hold(self, entities: cedarpy.Entities, held: list[tuple[int, dict[str, Any], Uid]],
              results: list[PolicyDecision | None]) -> None:
        """Approvable forbids only: pending if a permit matches, else the deny stands."""
        try:
            permits = cedarpy.is_authorized_batch([req for _, req, _ in held],
                                                  self._permit_set, entities)
        except Exception:  # noqa: BLE001 - the deny stands: fail closed
            return
        for (index, _, _), answer in zip(held, permits):
            denied = results[index]
            if denied is None or not answer.allowed or answer.diagnostics.errors:
                continue
            roles = sorted({self._approvable[r.policy_id or ""] for r in denied.reasons})
            results[index] = PolicyDecision("pending", denied.reasons, awaiting=",".join(roles))

    def _evaluate_one_by_one(self, group: _Group, items: Sequence[tuple[ActionRequest, Any]],
                             results: list[PolicyDecision | None]) -> None:
        for index, cedar_request, uid in group.members:
            own = group.delta.get(uid)
            try:
                entities = self._with_delta([own[1]] if own else [])
            except Exception as exc:  # noqa: BLE001
                results[index] = _deny(codes.POLICY_ERROR, f"resource {uid[0]}::{uid[1]!r}: "
                                       f"attributes are not valid Cedar entity data: {exc}")
                continue
            try:
                answer = cedarpy.is_authorized_batch([cedar_request], self._policy_set, entities)[0]
                decision = results[index] = self._to_decision(answer, items[index][0])
            except Exception as exc:  # noqa: BLE001
                results[index] = _deny(codes.POLICY_ERROR,
                                       f"Cedar could not evaluate this request: {exc}")
                continue
            if self._holdable(decision):     # as in a shared call: neighbours change nothing
                self._hold(entities, [(index, cedar_request, uid)], results)

    def _with_delta(self, delta: list[dict[str, Any]]) -> cedarpy.Entities:
        if not delta:
            return self._entities
        return self._entities.with_added_json_str(orjson.dumps(delta).decode())

    def _order_of(self, policy_id: str) -> tuple[int, str]:
        return (self._rank.get(policy_id, len(self._rank)), policy_id)

    def _to_decision(self, answer: cedarpy.AuthzResult, request: ActionRequest) -> PolicyDecision:
        diagnostics = answer.diagnostics
        errors = diagnostics.errors
        if errors:  # fail closed, whatever Cedar decided
            reasons = []
            for error in errors:
                match = _POLICY_IN_ERROR_RE.search(error)
                if "decimal" in error:
                    error += _DECIMAL_HINT
                reasons.append(Reason(code=codes.POLICY_ERROR, message=error,
                                      policy_id=match.group(1) if match else None))
            return PolicyDecision("deny", tuple(reasons))
        # Cedar reports determining policies in hash order; bundle order makes verdicts
        # byte-identical across runs and replays.
        determining = tuple(sorted(diagnostics.reasons, key=self._order_of))
        allowed = answer.allowed
        if determining:
            key = (allowed, determining)
            decision = self._cache.get(key)
            if decision is None:
                table = self._permit if allowed else self._forbid
                decision = PolicyDecision("allow" if allowed else "deny", tuple(
                    table.get(pid) or Reason(code=codes.PERMITTED if allowed else codes.FORBIDDEN,
                                             message=f"policy {pid}", policy_id=pid)
                    for pid in determining))
                if len(self._cache) < _DECISION_CACHE_MAX:
                    self._cache[key] = decision
            return decision
        if allowed:  # pragma: no cover - Cedar never allows without a permit
            return _deny(codes.POLICY_ERROR, "Cedar allowed without a determining policy")
        message = (f"no policy permits {request.action} on {request.resource.type} "
                   f"for {request.agent_id}")
        if request.action not in self._bundle.action_ids:
            message += f" (action {request.action!r} is not declared in the schema)"
        return _deny(codes.NO_PERMIT, message)
