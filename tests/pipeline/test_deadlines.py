"""Deadlines: one loop timer for every connection's deadline (a hashed timing wheel).

Run on a real event loop with a 10 ms tick: a deadline fires at or after its time, at most
a tick (plus the loop's own scheduling slack) later; arming again moves it; disarming
forgets it and the owner with it."""

from __future__ import annotations

import asyncio
import gc
import weakref

from wsgw.pipeline.deadlines import Deadlines

TICK = 0.01
SLACK = 0.05  # the loop's own lateness on a shared machine


class Owner:
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "", log: list | None = None):
        self.deadline_slot = -1
        self.loop = loop
        self.name = name
        self.log = log if log is not None else []
        self.fired_at: list[float] = []
        self.on_fire = None

    def deadline_reached(self) -> None:
        self.fired_at.append(self.loop.time())
        self.log.append(self.name)
        if self.on_fire is not None:
            self.on_fire()


async def test_fires_once_not_early_and_at_most_a_tick_late() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK)
    owner = Owner(loop)
    armed_at = loop.time()
    deadlines.arm(owner, 0.1)
    await asyncio.sleep(0.3)
    assert len(owner.fired_at) == 1
    assert 0.1 <= owner.fired_at[0] - armed_at <= 0.1 + TICK + SLACK
    assert owner.deadline_slot == -1 and len(deadlines) == 0


async def test_arming_again_moves_the_deadline_both_ways() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK)
    later, sooner = Owner(loop), Owner(loop)
    start = loop.time()
    deadlines.arm(later, 0.05)
    deadlines.arm(later, 0.2)  # moved later: nothing at 0.05
    deadlines.arm(sooner, 1.0)
    deadlines.arm(sooner, 0.1)  # moved sooner: the ticker must wake for it
    assert len(deadlines) == 2
    await asyncio.sleep(0.15)
    assert later.fired_at == []
    assert len(sooner.fired_at) == 1 and sooner.fired_at[0] - start >= 0.1
    await asyncio.sleep(0.15)
    assert len(later.fired_at) == 1 and later.fired_at[0] - start >= 0.2


async def test_disarmed_never_fires_and_is_not_kept_alive() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK)
    owner = Owner(loop)
    deadlines.arm(owner, 0.05)
    deadlines.disarm(owner)
    deadlines.disarm(owner)  # twice is harmless
    assert len(deadlines) == 0
    ref = weakref.ref(owner)
    fired = owner.fired_at
    del owner
    gc.collect()
    assert ref() is None  # a closed connection is freed at once, not at its old deadline
    await asyncio.sleep(0.1)
    assert fired == []


async def test_owners_due_together_fire_in_arming_order() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK)
    log: list[str] = []
    owners = [Owner(loop, str(i), log) for i in range(50)]
    for owner in owners:
        deadlines.arm(owner, 0.03)
    await asyncio.sleep(0.1)
    assert log == [str(i) for i in range(50)]


async def test_a_callback_may_arm_again_like_the_idle_check() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK)
    owner = Owner(loop)

    def again() -> None:
        if len(owner.fired_at) < 4:
            deadlines.arm(owner, 0.02)

    owner.on_fire = again
    start = loop.time()
    deadlines.arm(owner, 0.02)
    await asyncio.sleep(0.4)
    assert len(owner.fired_at) == 4
    gaps = [b - a for a, b in zip([start, *owner.fired_at], owner.fired_at, strict=False)]
    assert all(gap >= 0.02 - 1e-9 for gap in gaps)


async def test_a_far_deadline_armed_from_a_callback_does_not_hide_a_near_one() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop, TICK)
    far, near, trigger = Owner(loop), Owner(loop), Owner(loop)
    trigger.on_fire = lambda: deadlines.arm(far, 5.0)
    deadlines.arm(trigger, 0.02)
    deadlines.arm(near, 0.08)
    await asyncio.sleep(0.25)
    assert len(trigger.fired_at) == 1
    assert len(near.fired_at) == 1  # not held until the far slot's tick
    assert far.fired_at == []
    deadlines.close()
    assert len(deadlines) == 0 and far.deadline_slot == -1
