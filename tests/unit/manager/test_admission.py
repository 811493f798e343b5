"""Admission's books and evictions, with the manager reduced to what admission touches."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from modelyard.errors import InsufficientMemory, MemoryBusy, ModelTooLarge
from modelyard.manager._admission import Admission
from modelyard.manager.records import ModelRecord, State
from modelyard.metrics import ManagerCounters

MiB = 2**20


class FakeManager:
    def __init__(self, sizes: dict[str, int], budget: int) -> None:
        self.models: dict[str, ModelRecord] = {}
        self.counters = ManagerCounters()
        self.options = SimpleNamespace(load_wait_timeout=0.2)
        self.unloaded: list[str] = []
        for i, (name, size) in enumerate(sizes.items()):
            record = ModelRecord(name, None)
            vrec = record.version("1")
            vrec.state, vrec.runner = State.READY, SimpleNamespace(inflight=0)  # type: ignore[assignment]
            record.usage.bytes, record.usage.last_used, record.usage.uses = size, float(i), 1
            self.models[name] = record
        self.admission = Admission(self, budget, "lru")  # type: ignore[arg-type]

    async def unload_locked(self, record: ModelRecord, reason: str) -> None:
        for vrec in record.versions.values():
            vrec.runner, vrec.state, vrec.reason = None, State.UNAVAILABLE, reason
        self.unloaded.append(record.name)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_load_that_fits_reserves_and_releases() -> None:
    m = FakeManager({"a": 10 * MiB}, budget=100 * MiB)
    newcomer = ModelRecord("new", None)

    async def main() -> None:
        async with m.admission.reserve(newcomer, 50 * MiB):
            assert m.admission.used() == 60 * MiB
        assert m.admission.used() == 10 * MiB

    _run(main())
    assert m.unloaded == []


def test_room_is_made_by_evicting_the_least_recently_used_idle_model() -> None:
    m = FakeManager({"old": 40 * MiB, "new": 40 * MiB}, budget=100 * MiB)

    async def main() -> None:
        async with m.admission.reserve(ModelRecord("x", None), 50 * MiB):
            pass

    _run(main())
    assert m.unloaded == ["old"]
    assert m.counters.evictions == 1


def test_bigger_than_the_budget_fails_at_once() -> None:
    m = FakeManager({}, budget=100 * MiB)
    with pytest.raises(ModelTooLarge, match="more than the whole memory budget"):
        _run(m.admission.reserve(ModelRecord("x", None), 200 * MiB).__aenter__())


def test_busy_models_are_waited_for_then_the_load_fails_with_the_bytes() -> None:
    m = FakeManager({"busy": 90 * MiB}, budget=100 * MiB)
    m.models["busy"].versions["1"].runner.inflight = 1  # type: ignore[union-attr]
    m.models["busy"].versions["1"].runner.drained = lambda: asyncio.sleep(1)  # type: ignore[union-attr]
    with pytest.raises(MemoryBusy, match="needs about 52428800 bytes") as info:
        _run(m.admission.reserve(ModelRecord("x", None), 50 * MiB).__aenter__())
    assert not isinstance(info.value, InsufficientMemory)  # 503 on the container face, not 507
    assert m.unloaded == []


def test_memory_held_by_models_that_cannot_be_unloaded_is_insufficient_memory() -> None:
    m = FakeManager({"platform": 90 * MiB}, budget=100 * MiB)
    m.models["platform"].registered = True
    with pytest.raises(InsufficientMemory, match="cannot be unloaded"):
        _run(m.admission.reserve(ModelRecord("x", None), 50 * MiB).__aenter__())


def test_shed_evicts_idle_models_for_the_watchdog() -> None:
    m = FakeManager({"a": 30 * MiB, "b": 30 * MiB, "c": 30 * MiB}, budget=100 * MiB)
    _run(m.admission.shed(50 * MiB))
    assert m.unloaded == ["a", "b"]
    assert "host's memory limit" in m.models["a"].versions["1"].reason


def test_gpu_books_hold_only_the_models_on_that_gpu() -> None:
    m = FakeManager({"cpu": 50 * MiB, "gpu_a": 10 * MiB, "gpu_b": 10 * MiB}, budget=1000 * MiB)
    for name in ("gpu_a", "gpu_b"):
        m.models[name].usage.gpu_device, m.models[name].usage.gpu_bytes = 0, 40 * MiB
    gpu0 = Admission(m, 100 * MiB, "lru", device=0)  # type: ignore[arg-type]
    gpu1 = Admission(m, 100 * MiB, "lru", device=1)  # type: ignore[arg-type]
    assert gpu0.used() == 80 * MiB and gpu1.used() == 0

    async def main() -> None:
        async with gpu0.reserve(ModelRecord("x", None), 50 * MiB):
            pass

    _run(main())
    assert m.unloaded == ["gpu_a"]  # the CPU model is never a victim for GPU memory
    with pytest.raises(ModelTooLarge, match="GPU 1, --model-load-gpu-limit"):
        _run(gpu1.reserve(ModelRecord("y", None), 200 * MiB).__aenter__())


def test_gpu_device_of_reads_the_instance_groups(tmp_path: Any) -> None:
    from modelyard.manager._loading import gpu_device_of
    from modelyard.repository import scan_model

    cases = {
        "instance_group [{kind: KIND_GPU, gpus: [2]}]": 2,
        "instance_group [{kind: KIND_CPU}, {kind: KIND_GPU}]": 0,
        "instance_group [{kind: KIND_CPU}]": None,
        "": None,
    }
    for i, (groups, device) in enumerate(cases.items()):
        folder = tmp_path / f"m{i}"
        (folder / "1").mkdir(parents=True)
        (folder / "config.pbtxt").write_text(f'name: "m{i}"\n{groups}\n')
        assert gpu_device_of(scan_model(folder)) == device


def test_a_load_starts_when_loaded_models_and_its_own_reservation_fit() -> None:
    """Loads waiting their turn hold reservations; none may block another's start (each
    waits for loaded models only), and a reservation may grow to what is known."""
    m = FakeManager({"idle": 40 * MiB}, budget=100 * MiB)
    first, second = ModelRecord("first", None), ModelRecord("second", None)

    async def main() -> None:
        async with (
            m.admission.reserve(first, 30 * MiB),
            m.admission.reserve(second, 30 * MiB),
        ):
            m.admission.resize(first, 70 * MiB)  # measured more than predicted
            assert m.admission.reservation(first) == 70 * MiB
            assert m.admission.used() == 140 * MiB  # over: both loads hold room
            assert await m.admission.room_to_start(second)  # 40 + 30: it may start
            assert m.unloaded == []
            assert await m.admission.room_to_start(first)  # 40 + 70: 'idle' must go
            assert m.unloaded == ["idle"]
        assert m.admission.used() == 0

    _run(main())
