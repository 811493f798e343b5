"""What the manager knows about each model: versions and their states, usage, loading."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from modelyard.manager.memory import learned_size
from modelyard.repository import ModelEntry
from modelyard.scheduling.runner import ModelRunner
from modelyard.scheduling.stats import ModelStats
from modelyard.store import StoreModel


class State(StrEnum):
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"


@dataclass(slots=True)
class VersionRecord:
    version: str
    stats: ModelStats  # outlives loads and evictions, like the metrics built on it
    state: State = State.UNAVAILABLE
    reason: str = ""
    runner: ModelRunner | None = None


@dataclass(slots=True)
class Usage:
    """What admission and eviction weigh: measured size, recency, frequency, reload cost."""

    bytes: int = 0  # what the books hold: in-process size + worker processes, >= the floor
    floor: int = 0  # the prediction from the files (estimate_bytes)
    measured: list[int] = field(default_factory=list)  # in-process growth of clean loads
    measured_key: tuple[Any, ...] = ()  # the files (and config) those loads were of
    worker_bytes: int = 0  # resident memory of its worker processes, sampled continuously
    last_used: float = 0.0
    uses: int = 0
    load_seconds: float = 0.0
    inflation: float = 0.0  # GDSF's L at the last use: priority = inflation + value
    gpu_device: int | None = None  # the GPU a KIND_GPU model runs on
    gpu_bytes: int = 0  # measured (or predicted) on that GPU

    def settle(self) -> None:
        """Book what is known: the learned in-process size plus the workers, at least the
        prediction from the files."""
        self.bytes = max(learned_size(self.measured) + self.worker_bytes, self.floor)


@dataclass(slots=True)
class ModelRecord:
    name: str
    source: StoreModel | None  # what the store holds (None: gone, or a registered folder)
    entry: ModelEntry | None = None  # the local folder last fetched from the store
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    reason: str = ""  # model-level failure (config could not be read)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    default: ModelRunner | None = None  # newest READY version: the hot path's lookup
    usage: Usage = field(default_factory=Usage)
    load_task: asyncio.Task[None] | None = None  # the one load every waiter shares
    config: Any = None  # last prepared config (served while not loaded), with its key
    config_key: tuple[Any, ...] = ()
    waiters: int = 0  # requests waiting for this model's load
    holds: int = 0  # pipelines (ensembles) running with this model as a step
    view: Path | None = None  # the pinned cache folder the loaded versions came from
    override: Path | None = None  # files sent with a load request (Triton's file: params)
    registered: bool = False  # served from a folder outside the repository (register())
    parts: tuple[str, ...] = ()  # models registered with this one (an ensemble's steps)

    def version(self, version: str) -> VersionRecord:
        vrec = self.versions.get(version)
        if vrec is None:
            vrec = self.versions[version] = VersionRecord(version, ModelStats(self.name, version))
        return vrec

    def lookup(self, version: str) -> ModelRunner | None:
        """The loaded runner a request for ``version`` ("" = newest) goes to, if any."""
        if not version:
            return self.default
        vrec = self.versions.get(version)
        return vrec.runner if vrec is not None else None

    def unseen(self, version: str) -> bool:
        """A version named that this model's files do not (yet) hold."""
        known = self.known_versions()
        return bool(version) and (
            known is None or not version.isdigit() or int(version) not in known
        )

    def refresh_default(self) -> None:
        ready = [v for v in self.versions.values() if v.state is State.READY and v.runner]
        ready.sort(key=lambda v: int(v.version))
        self.default = ready[-1].runner if ready else None

    @property
    def local(self) -> bool:
        """Served from files outside the store (registered, or sent with a load request)."""
        return self.registered or self.override is not None

    def known_versions(self) -> set[int] | None:
        """The versions this model has where its files come from (None: nothing known)."""
        if not self.local and self.source is not None:
            return set(self.source.versions)
        return set(self.entry.versions) if self.entry is not None else None

    @property
    def loaded(self) -> bool:
        return any(v.runner is not None for v in self.versions.values())

    @property
    def busy(self) -> bool:
        """Requests in flight or waiting, or a load under way: never evicted."""
        if self.waiters or self.holds:
            return True
        return (self.load_task is not None and not self.load_task.done()) or any(
            v.runner is not None and v.runner.inflight for v in self.versions.values()
        )


def index_rows(models: Mapping[str, ModelRecord], ready_only: bool) -> list[dict[str, str]]:
    """Triton's repository index: one row per version, or per model when none is known."""
    rows: list[dict[str, str]] = []
    for name in sorted(models):
        record = models[name]
        if not record.versions:
            if not ready_only:
                row = {"name": name}
                if record.reason:
                    row.update(state=State.UNAVAILABLE.value, reason=record.reason)
                rows.append(row)
            continue
        for version in sorted(record.versions, key=int):
            v = record.versions[version]
            if ready_only and v.state is not State.READY:
                continue
            row = {"name": name, "version": version, "state": v.state.value}
            if v.reason:  # Triton leaves "reason" out when there is none
                row["reason"] = v.reason
            rows.append(row)
    return rows


def versions_with_stats(
    models: Mapping[str, ModelRecord], name: str | None = None
) -> list[VersionRecord]:
    """Versions with statistics to show: loaded now, or used before (evicted since)."""
    out = []
    for n in [name] if name is not None else sorted(models):
        record = models.get(n)
        if record is None:
            continue
        for version in sorted(record.versions, key=int):
            vrec = record.versions[version]
            if vrec.runner is not None or vrec.stats.last_inference:
                out.append(vrec)
    return out
