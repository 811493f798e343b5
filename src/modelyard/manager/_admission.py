"""Admission against the memory budget: reserve before loading, evict idle models to fit.

The decision of *which* models to evict is ``eviction.choose_victims``, a pure function of a
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

from modelyard.errors import InsufficientMemory, ModelTooLarge
from modelyard.manager.eviction import Resident, choose_victims
from modelyard.manager.records import ModelRecord

if TYPE_CHECKING:
    from modelyard.manager.manager import ModelManager

log = logging.getLogger("modelyard.manager")


def _mib(n: int) -> str:
    return f"{n} bytes ({n / 2**20:.1f} MiB)"


class Admission:
    def __init__(self, manager: ModelManager, budget: int | None, policy: str) -> None:
        self.manager = manager
        self.budget = budget
        self.policy = policy
        self.reserved = 0
        self._lock = asyncio.Lock()

    def used(self) -> int:
        """Bytes held by loaded models (as measured) plus reservations of loads under way."""
        held = sum(r.usage.bytes for r in self.manager.models.values() if r.loaded)
        return held + self.reserved

    @asynccontextmanager
    async def reserve(self, record: ModelRecord, needed: int) -> AsyncIterator[None]:
        """Hold ``needed`` bytes for a load, evicting idle models first when they must go."""
        budget = self.budget
        if budget is None:
            yield
            return
        if needed > budget:
            raise ModelTooLarge(
                f"model '{record.name}' needs about {_mib(needed)}, more than the whole memory "
                f"budget of {_mib(budget)} (--memory-budget)"
            )
        async with self._lock:
            free = budget - self.used()
            if needed > free:
                await self._make_room(record, needed, free, budget)
                free = budget - self.used()
                if needed > free:  # a chosen victim got busy before it could go
                    raise InsufficientMemory(
                        f"cannot load model '{record.name}' now: it needs about "
                        f"{_mib(needed)} and only {_mib(max(free, 0))} of the {_mib(budget)} "
                        "budget could be freed; retry shortly"
                    )
            self.reserved += needed
        try:
            yield
        finally:
            self.reserved -= needed

    async def _make_room(self, record: ModelRecord, needed: int, free: int, budget: int) -> None:
        now = time.monotonic()
        candidates = {
            r.name: r for r in self.manager.models.values() if r.loaded and r is not record
        }
        residents = [
            Resident(
                key=r.name,
                bytes=r.usage.bytes,
                last_used=r.usage.last_used,
                uses=r.usage.uses,
                load_seconds=r.usage.load_seconds,
                busy=r.busy or r.lock.locked(),
            )
            for r in candidates.values()
        ]
        victims = choose_victims(residents, needed, free, now, self.policy)
        if victims is None:
            idle = sum(x.bytes for x in residents if not x.busy)
            raise InsufficientMemory(
                f"cannot load model '{record.name}' now: it needs about {_mib(needed)}; "
                f"{_mib(max(free, 0))} of the {_mib(budget)} budget are free and idle models "
                f"hold {_mib(idle)}; the rest is held by models serving requests"
            )
        for name in victims:
            victim = candidates[name]
            if victim.lock.locked():  # became busy meanwhile: it stays
                continue
            async with victim.lock:  # free: acquired at once, nothing waits on us here
                log.info(
                    "evicting model '%s' (%s) for '%s'", name, _mib(victim.usage.bytes), record.name
                )
                await self.manager.unload_locked(
                    victim, f"unloaded to free memory for model '{record.name}'"
                )
                self.manager.counters.evictions += 1
