"""Per-connection deadlines on one loop timer: a hashed timing wheel.

Every connection has a deadline in each phase of its life (the request must arrive, the
backend must answer, traffic must not stop, the close handshake must end), and almost none
of them ever fires. A uvloop timer per deadline costs a libuv handle created, started,
stopped and closed each time (measured: ~13 % of the gateway's CPU per connection cycle for
the five a connection used); here arming a deadline is a dict insert and the loop has one
timer that ticks while deadlines are pending.

A deadline fires on the first tick at or after it: up to TICK_S late, never early. Each
owner holds at most one deadline (arming again moves it); `disarm` forgets it at once, so
a closed connection is not kept alive by its old deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Protocol

TICK_S = 0.05


class Timed(Protocol):
    """What a deadline calls back: the owner decides what its deadline means now."""

    deadline_slot: int  # the wheel's bucket holding this owner; -1 when disarmed

    def deadline_reached(self) -> None: ...


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = TICK_S) -> None:
        self._loop = loop
        self._tick_s = tick_s
        self._buckets: dict[int, dict[Timed, None]] = {}  # slot → owners (insertion order)
        self._slots: list[int] = []  # heap of the slots in _buckets (and some emptied ones)
        self._done_through = -1  # the last slot processed: arming never goes at or before it
        self._ticker: asyncio.TimerHandle | None = None
        self._ticker_slot = 0

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def arm(self, owner: Timed, delay_s: float) -> None:
        """`owner.deadline_reached()` in `delay_s` (up to one tick later); replaces the
        owner's previous deadline."""
        slot = max(math.ceil((self._loop.time() + delay_s) / self._tick_s), self._done_through + 1)
        if owner.deadline_slot == slot:
            return
        self.disarm(owner)
        owner.deadline_slot = slot
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            heapq.heappush(self._slots, slot)
        bucket[owner] = None
        if self._ticker is None or slot < self._ticker_slot:
            self._schedule(slot)

    def disarm(self, owner: Timed) -> None:
        slot = owner.deadline_slot
        if slot < 0:
            return
        owner.deadline_slot = -1
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.pop(owner, None)
            if not bucket:
                del self._buckets[slot]  # its heap entry is dropped when it comes up

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for bucket in self._buckets.values():
            for owner in bucket:
                owner.deadline_slot = -1
        self._buckets.clear()
        self._slots.clear()

    def _schedule(self, slot: int) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._ticker_slot = slot
        self._ticker = self._loop.call_at(slot * self._tick_s, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        through = math.floor(self._loop.time() / self._tick_s)
        self._done_through = max(self._done_through, through)  # arms from callbacks go later
        slots = self._slots
        while slots and slots[0] <= through:
            bucket = self._buckets.pop(heapq.heappop(slots), None)
            if bucket is None:
                continue
            for owner in bucket:
                owner.deadline_slot = -1
            for owner in bucket:
                if owner.deadline_slot == -1:  # not re-armed by an earlier callback
                    owner.deadline_reached()
        while slots and slots[0] not in self._buckets:
            heapq.heappop(slots)
        if slots and (self._ticker is None or slots[0] < self._ticker_slot):
            self._schedule(slots[0])
