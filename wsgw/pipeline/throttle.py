"""Throttling, compiled per connection at the handshake.

A connection is covered by up to three limits (SCOPES, checked in that order; the first one
exhausted decides): its subscription's tier, its application's tier and the API's own policy.
Each limit is one `Limit` per key per process, shared by every connection it covers; with a
Redis URL, the cluster module feeds it leased tokens so that every process shares one budget.
The connection gets a `Gate` per direction over the limits that count that direction (a
tier's `count`), each with that direction's action (`on_limit`, `backend_on_limit`); the codec
consults it per data frame. With `count: both` the two gates share the same Limits.
A tier's max_connections is a slot per key, taken at the handshake from a `SlotStore`: this
process's own counts, or the cluster's (`cluster.slots`) across every process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wsgw import _core
from wsgw.config.models import Api, Tier
from wsgw.errors import TooManyRequests
from wsgw.names import LIMIT_SCOPES, ON_LIMIT_ACTIONS
from wsgw.pipeline.cluster.slots import LocalSlots, SlotStore
from wsgw.pipeline.compression import SelfContained
from wsgw.pipeline.subscription import Grant

if TYPE_CHECKING:
    from wsgw.pipeline.cluster import ClusterLimits

SCOPES = LIMIT_SCOPES  # in checking order; a Gate reports the index
# Each action's Gate code is _core.ACTION_<NAME>: a name without one fails at import.
ACTIONS: dict[str, int] = {
    name: getattr(_core, f"ACTION_{name.upper()}") for name in ON_LIMIT_ACTIONS
}
ACTION_NAMES = {code: name for name, code in ACTIONS.items()}


@dataclass(slots=True)
class Admission:
    """What the throttle stage decided for one connection."""

    client_gate: _core.Gate | None  # client → backend messages
    backend_gate: _core.Gate | None  # backend → client messages
    max_duration_s: float | None
    scope_labels: tuple[str, ...]  # scope name by Gate scope index
    _slots: list[str] = field(default_factory=list)  # connection-cap keys held
    _store: SlotStore | None = None  # where they go back

    @property
    def holds_slots(self) -> bool:
        return bool(self._slots)

    @property
    def self_contained(self) -> SelfContained:
        """The directions whose messages a limit may drop (see compression.py)."""
        return SelfContained(client=_drops(self.client_gate), backend=_drops(self.backend_gate))

    def give_back(self, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        """The connection ended (or was refused): its slots go back in the background."""
        if self._slots:
            spawn(self.release())

    async def release(self) -> None:
        """Give back the connection slots (exactly once, when the connection ends)."""
        slots, self._slots = self._slots, []
        if self._store is not None:
            for key in slots:
                await self._store.release(key)


class Throttle:
    """The limits and connection caps of every connection of this process.

    With a cluster, its limits are leased from Redis and its caps counted across processes
    (`cluster.slots`); without one, both are local to this process.
    """

    def __init__(self, cluster: ClusterLimits | None = None) -> None:
        self.cluster = cluster
        self.slots: SlotStore = LocalSlots() if cluster is None else cluster.slots
        # key → (messages, bytes, burst), the Limit: a tier edit that changes no rate (an
        # action, a cap) keeps the bucket and its tokens.
        self._limits: dict[str, tuple[tuple[int, int, int], _core.Limit]] = {}

    # ------------------------------------------------------------- per message
    def limit_for(self, key: str, tier: Tier) -> _core.Limit | None:
        """The process-wide Limit of `key` under `tier` (new rates make a new one)."""
        if tier.messages_per_minute is None and tier.bytes_per_minute is None:
            return None
        rates = (
            tier.messages_per_minute or 0,
            tier.bytes_per_minute or 0,
            tier.burst if tier.messages_per_minute else 0,
        )
        known = self._limits.get(key)
        if known is not None and known[0] == rates:
            return known[1]
        limit = _core.Limit(*rates, time.monotonic_ns())
        if self.cluster is not None:
            if known is not None:
                self.cluster.detach(key)
            self.cluster.attach(key, limit)
        self._limits[key] = (rates, limit)
        return limit

    # ---------------------------------------------------------- per connection
    async def admit(self, grant: Grant, api: Api, api_tier: Tier | None) -> Admission:
        """Take the connection slots and build the gate; 429 when a cap is full."""
        scoped = _scoped(grant, api, api_tier)
        admission = Admission(None, None, None, scope_labels=SCOPES, _store=self.slots)
        try:
            for scope, key, tier in scoped:
                if tier is None or tier.max_connections is None:
                    continue
                if not await self.slots.acquire(key, tier.max_connections):
                    raise TooManyRequests(
                        f"too many connections ({scope} limit {tier.max_connections})",
                        retry_after_s=1,
                        scope=scope,
                    )
                admission._slots.append(key)
        except BaseException:
            await admission.release()
            raise
        policy = self.policy(scoped)
        if self.cluster is not None:
            for key in policy.new_limits:
                await self.cluster.prime(key)  # a new shared limit starts with tokens
        admission.client_gate = policy.client_gate
        admission.backend_gate = policy.backend_gate
        admission.max_duration_s = policy.max_duration_s
        return admission

    def policy(self, scoped: list[tuple[str, str, Tier | None]]) -> Policy:
        """The gates and duration cap of (scope, key, tier) entries, with this process's
        shared Limits (a tier edit makes a new Limit for its key)."""
        gates: dict[bool, list[tuple[_core.Limit, int, int]]] = {True: [], False: []}
        durations = []
        new_limits = []
        for index, (_scope, key, tier) in enumerate(scoped):
            if tier is None:
                continue
            if tier.max_connection_duration_s is not None:
                durations.append(tier.max_connection_duration_s)
            known = self._limits.get(key)
            limit = self.limit_for(key, tier)
            if limit is None:
                continue
            if known is None or known[1] is not limit:
                new_limits.append(key)
            for from_client, entries in gates.items():
                if tier.counts(from_client):
                    entries.append((limit, ACTIONS[tier.action(from_client)], index))
        return Policy(
            client_gate=_core.Gate(gates[True]) if gates[True] else None,
            backend_gate=_core.Gate(gates[False]) if gates[False] else None,
            max_duration_s=min(durations) if durations else None,
            new_limits=new_limits,
        )

    def repolicy(self, grant: Grant, api: Api, api_tier: Tier | None) -> Policy:
        """An open connection's policy after a reload (its slots stay as they are: a
        lowered max_connections applies to new connections). New shared limits are primed
        in the background."""
        return self.policy(_scoped(grant, api, api_tier))

    async def prime(self, keys: list[str]) -> None:
        """New shared limits start with tokens leased (cluster), as at a handshake."""
        if self.cluster is not None:
            for key in keys:
                await self.cluster.prime(key)


@dataclass(slots=True)
class Policy:
    client_gate: _core.Gate | None
    backend_gate: _core.Gate | None
    max_duration_s: float | None
    new_limits: list[str]  # keys whose Limit was made for this policy

    def drops(self, from_client: bool) -> bool:
        return _drops(self.client_gate if from_client else self.backend_gate)


def _scoped(grant: Grant, api: Api, api_tier: Tier | None) -> list[tuple[str, str, Tier | None]]:
    keys = (
        f"sub:{grant.application}:{api.name}:{api.version}",
        f"app:{grant.application}",
        f"api:{api.name}:{api.version}",
    )
    tiers = (grant.subscription_tier, grant.application_tier, api_tier)
    return list(zip(SCOPES, keys, tiers, strict=True))


def _drops(gate: _core.Gate | None) -> bool:
    return gate is not None and any(action == _core.ACTION_DROP for _, action, _ in gate.limits)
