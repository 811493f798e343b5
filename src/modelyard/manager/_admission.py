"""Admission against the memory budget: reserve before loading, evict idle models to fit.

The decision of *which* models to evict is ``eviction.plan_eviction``, a pure function of a
snapshot; this module only gathers the snapshot, applies the decision and keeps the books:
what loaded models use (their measured sizes) plus what loads in progress have reserved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from modelyard.errors import InsufficientMemory, MemoryBusy, ModelTooLarge
from modelyard.manager.eviction import PolicyState, Resident, plan_eviction, value
from modelyard.manager.records import ModelRecord

if TYPE_CHECKING:
    from modelyard.manager.manager import ModelManager

log = logging.getLogger("modelyard.manager")


async def _until_one_may_be_idle(waits: list[asyncio.Future[None]], deadline: float) -> bool:
    """Wait (at most 50 ms at a time) until one busy model may have gone idle.

    False, with the waits cancelled, when nothing can change before ``deadline``: no model
    is busy (what holds the memory cannot be unloaded), or the time is up.
    """
    remaining = deadline - time.monotonic()
    if not waits or remaining <= 0:
        for w in waits:
            w.cancel()
        return False
    _, pending = await asyncio.wait(
        waits, timeout=min(remaining, 0.05), return_when=asyncio.FIRST_COMPLETED
    )
    for w in pending:
        w.cancel()
    return True


def _mib(n: int) -> str:
    return f"{n} bytes ({n / 2**20:.1f} MiB)"


class Admission:
    def __init__(
        self, manager: ModelManager, budget: int | None, policy: str, device: int | None = None
    ) -> None:
        """Books for host memory (``device`` None) or for one GPU's memory."""
        self.manager = manager
        self.device = device
        self.budget = budget
        self.policy = policy
        self.reserved = 0
        self._reservations: dict[int, int] = {}  # id(record) -> bytes its load under way holds
        self.inflation = 0.0  # GDSF's L: rises to the priority of each evicted model (aging)
        self._lock = asyncio.Lock()

    def size(self, record: ModelRecord) -> int:
        """What a loaded model holds in these books: host bytes, or bytes on this GPU."""
        usage = record.usage
        if self.device is None:
            return usage.bytes
        return usage.gpu_bytes if usage.gpu_device == self.device else 0

    def held(self) -> int:
        """Bytes held by loaded models (as measured)."""
        return sum(self.size(r) for r in self.manager.models.values() if r.loaded)

    def used(self) -> int:
        """Bytes held by loaded models (as measured) plus reservations of loads under way."""
        return self.held() + self.reserved

    async def room_to_start(self, record: ModelRecord) -> bool:
        """Before a load's runtime starts: evict idle models until what loaded models hold
        plus this load's reservation fits the budget (waiting for busy ones, at most
        ``load_wait_timeout``; False when the time ran out).

        Other loads' reservations do not count here: they are waiting their turn too, and
        each checks the same when its turn comes, so none can block another.
        """
        if self.budget is None:
            return True
        deadline = time.monotonic() + self.manager.options.load_wait_timeout
        while True:
            async with self._lock:
                excess = self.held() + self.reservation(record) - self.budget
                if excess <= 0:
                    return True
                await self._make_room(record, excess, 0)
                if self.held() + self.reservation(record) <= self.budget:
                    return True
                waits = self._busy(record)
            if not await _until_one_may_be_idle(waits, deadline):
                return False

    def too_large(self, record: ModelRecord) -> str | None:
        """Why a model can never be loaded under this budget (it cannot fit even alone), or
        None. The same sentence, with the figures, for every request until its files change."""
        needed = self.size(record) if self.device is not None else record.usage.bytes
        if self.budget is None or needed <= self.budget:
            return None
        usage = record.usage
        if usage.worker_bytes:
            how = "measured: its worker processes' resident memory"
        elif usage.measured and needed > usage.floor:
            how = "measured when it was loaded"
        else:
            how = "predicted from the size of its files"
        return (
            f"model '{record.name}' needs about {_mib(needed)} ({how}), more than the whole "
            f"memory budget of {_mib(self.budget)} ({self._flag})"
        )

    @asynccontextmanager
    async def reserve(self, record: ModelRecord, needed: int) -> AsyncIterator[None]:
        """Hold ``needed`` bytes for a load, evicting idle models first when they must go.

        When the model fits the budget but models serving requests (or loading) hold the
        memory, the load waits for them to go idle, at most ``--load-wait-timeout``
        (then :class:`MemoryBusy`: retry). Only what evicting every evictable model cannot
        free is :class:`InsufficientMemory` (SageMaker's 507), and only a model larger than
        the whole budget is :class:`ModelTooLarge`.
        """
        budget = self.budget
        if budget is None:
            yield
            return
        if needed > budget:
            raise ModelTooLarge(
                self.too_large(record)
                or f"model '{record.name}' needs about {_mib(needed)}, more than the whole "
                f"memory budget of {_mib(budget)} ({self._flag})"
            )
        timeout = self.manager.options.load_wait_timeout
        deadline = time.monotonic() + timeout
        while True:
            async with self._lock:
                free = budget - self.used()
                if needed > free:
                    await self._make_room(record, needed, free)
                    free = budget - self.used()
                if needed <= free:
                    self.reserved += needed
                    self._reservations[id(record)] = needed
                    break
                waits = self._busy(record)
            if not waits:
                raise InsufficientMemory(
                    f"cannot load model '{record.name}': it needs about {_mib(needed)} and "
                    f"only {_mib(max(free, 0))} of the {_mib(budget)} budget are free, the "
                    "rest held by models that cannot be unloaded"
                )
            # the rest is held by models serving requests or loading: they will be idle soon
            if not await _until_one_may_be_idle(waits, deadline):
                raise MemoryBusy(
                    f"cannot load model '{record.name}' yet: it needs about {_mib(needed)}, "
                    f"only {_mib(max(free, 0))} of the {_mib(budget)} budget are free and "
                    f"the models holding the rest stayed busy serving requests for {timeout:g} s "
                    "(--load-wait-timeout); retry shortly"
                )
        try:
            yield
        finally:
            self.reserved -= self._reservations.pop(id(record), 0)

    def reservation(self, record: ModelRecord) -> int:
        """Bytes the load of ``record`` under way holds (0: none)."""
        return self._reservations.get(id(record), 0)

    def resize(self, record: ModelRecord, nbytes: int) -> None:
        """A load under way now knows what it takes: its reservation becomes ``nbytes``
        (what it measured, at once, before another load may start; 0 once its versions are
        in place and counted as loaded)."""
        old = self._reservations.get(id(record))
        if old is not None:
            self.reserved += nbytes - old
            self._reservations[id(record)] = nbytes

    async def rebalance(self, record: ModelRecord | None) -> bool:
        """After a load measured more than it was admitted on: evict idle models to fit.

        Models serving requests cannot go at once; the books are then re-balanced as they
        go idle, for at most ``load_wait_timeout``. True once the books are within the
        budget, False when the time ran out first.
        """
        if self.budget is None:
            return True
        deadline = time.monotonic() + self.manager.options.load_wait_timeout
        while True:
            async with self._lock:
                excess = self.used() - self.budget
                if excess <= 0:
                    return True
                await self._make_room(record, excess, 0)
                if self.used() <= self.budget:
                    return True
                waits = self._busy(record)
            if not await _until_one_may_be_idle(waits, deadline):
                log.warning("memory books %d bytes over budget: models in use hold it", excess)
                return False

    async def shed(self, nbytes: int) -> None:
        """Evict idle models holding about ``nbytes`` (the memory watchdog's last resort)."""
        async with self._lock:
            await self._make_room(None, nbytes, 0)

    def _busy(self, record: ModelRecord | None) -> list[asyncio.Future[None]]:
        """Futures that finish when a model now holding memory may become evictable."""
        waits: list[asyncio.Future[None]] = []
        if self.reserved:  # loads under way hold reservations, released when they end
            waits.append(asyncio.ensure_future(asyncio.sleep(0.05)))
        for r in self.manager.models.values():
            if r is record or r.registered:
                continue
            if r.load_task is not None and not r.load_task.done():  # holds a reservation
                waits.append(asyncio.ensure_future(asyncio.shield(r.load_task)))
            elif (r.lock.locked() or r.waiters or r.holds) and r.loaded:  # pinned, or locked
                waits.append(asyncio.ensure_future(asyncio.sleep(0.05)))
            for v in r.versions.values():
                if v.runner is not None and v.runner.inflight:
                    waits.append(asyncio.ensure_future(v.runner.drained()))
        return waits

    @property
    def _flag(self) -> str:
        if self.device is None:
            return "--memory-budget"
        return f"GPU {self.device}, --model-load-gpu-limit"

    def _residents(self, record: ModelRecord | None) -> dict[str, ModelRecord]:
        return {
            r.name: r
            for r in self.manager.models.values()
            if r.loaded and r is not record and self.size(r) > 0
        }

    async def _make_room(self, record: ModelRecord | None, needed: int, free: int) -> None:
        """Evict the idle models the policy picks, if evicting idle models can make room."""
        now = time.monotonic()
        candidates = self._residents(record)
        residents = [
            Resident(
                key=r.name,
                bytes=self.size(r),
                last_used=r.usage.last_used,
                uses=r.usage.uses,
                load_seconds=r.usage.load_seconds,
                busy=r.busy or r.lock.locked() or r.registered,  # registered: platform-owned
            )
            for r in candidates.values()
        ]
        # each model's GDSF priority was fixed at its last use: L then, plus its value now
        priorities = {x.key: candidates[x.key].usage.inflation + value(x) for x in residents}
        victims, state = plan_eviction(
            residents, needed, free, now, PolicyState(self.inflation, priorities), self.policy
        )
        if victims is None:
            return  # not enough idle memory now; the caller waits for busy models
        self.inflation = state.inflation
        for name in victims:
            victim = candidates[name]
            if victim.lock.locked():  # became busy meanwhile: it stays
                continue
            async with victim.lock:  # free: acquired at once, nothing waits on us here
                why = f"model '{record.name}'" if record is not None else "the host's memory limit"
                log.info("evicting model '%s' (%s) for %s", name, _mib(self.size(victim)), why)
                await self.manager.unload_locked(victim, f"unloaded to free memory for {why}")
                self.manager.counters.evictions += 1
