"""Which model versions are loaded, and getting a request to the right one.

Every model version has a state (UNAVAILABLE, LOADING, READY, UNLOADING) and a reason when it
is not ready. A model whose config or files are broken is marked UNAVAILABLE with the error
as its reason; it never takes the server or other models down. Loads run on worker threads
(creating an onnxruntime session is blocking work) and in parallel across models, one load
per model at a time (single flight: a second load of the same model waits for the first).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from modelyard.errors import (
    ConfigError,
    ModelNotFound,
    ModelyardError,
    Unavailable,
    VersionNotFound,
)
from modelyard.manager._loading import prepare_config, runner_for_version
from modelyard.repository import ModelEntry, scan_repository, select_versions
from modelyard.runtimes.base import RuntimeOptions
from modelyard.scheduling.runner import DEFAULT_INLINE_NS, ModelRunner
from modelyard.types import InferRequest, InferResponse

log = logging.getLogger("modelyard.manager")


class State(StrEnum):
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"


@dataclass(slots=True)
class VersionRecord:
    version: str
    state: State = State.UNAVAILABLE
    reason: str = ""
    runner: ModelRunner | None = None


@dataclass(slots=True)
class ModelRecord:
    name: str
    entry: ModelEntry | None
    versions: dict[str, VersionRecord] = field(default_factory=dict)
    reason: str = ""  # model-level failure (config could not be read)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    default: ModelRunner | None = None  # newest READY version: the hot path's lookup

    def refresh_default(self) -> None:
        ready = [v for v in self.versions.values() if v.state is State.READY and v.runner]
        ready.sort(key=lambda v: int(v.version))
        self.default = ready[-1].runner if ready else None


@dataclass(frozen=True, slots=True)
class ManagerOptions:
    repository: Path
    autocomplete: bool = True
    control_mode: str = "none"  # none | explicit
    startup_models: tuple[str, ...] = ()  # explicit mode: --load-model; "*" loads all
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    inline_threshold_ns: int = DEFAULT_INLINE_NS


class ModelManager:
    """Owns every loaded model; the protocol layer's only way to reach a model."""

    def __init__(self, options: ManagerOptions) -> None:
        self.options = options
        self.models: dict[str, ModelRecord] = {}

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._rescan()
        if self.options.control_mode == "none" or "*" in self.options.startup_models:
            names = list(self.models)
        else:
            names = list(self.options.startup_models)
        await asyncio.gather(*(self._load_logged(n) for n in names))

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.unload(n) for n in list(self.models)), return_exceptions=True)

    def _rescan(self) -> None:
        entries = scan_repository(self.options.repository)
        for name, entry in entries.items():
            record = self.models.get(name)
            if record is None:
                self.models[name] = ModelRecord(name, entry)
            else:
                record.entry = entry

    async def _load_logged(self, name: str) -> None:
        try:
            await self.load(name)
        except ModelyardError as exc:
            log.error("failed to load '%s': %s", name, exc)

    # -- explicit control ----------------------------------------------------------------
    async def load(self, name: str, config_json: str | None = None) -> None:
        """(Re)load a model's policy versions; raises when none could be loaded.

        ``config_json`` (a load request's ``config`` parameter) replaces config.pbtxt.
        """
        self._rescan()
        record = self.models.get(name)
        if record is None or record.entry is None:
            raise ModelNotFound(
                name, f"failed to load '{name}', failed to poll from model repository"
            )
        async with record.lock:
            await self._load_locked(record, config_json)

    async def _load_locked(self, record: ModelRecord, config_json: str | None = None) -> None:
        entry = record.entry
        assert entry is not None
        try:
            config = await asyncio.to_thread(prepare_config, entry, self.options, config_json)
        except ModelyardError as exc:
            # a failed reload leaves the versions already serving as they are (as Triton does)
            if record.default is None:
                record.reason = str(exc)
                for v in record.versions.values():
                    v.state, v.reason = State.UNAVAILABLE, str(exc)
            raise
        record.reason = ""
        wanted = [str(v) for v in select_versions(config, entry.versions)]
        if not wanted:
            record.reason = (
                f"at least one version must be available under the version policy "
                f"of model '{record.name}'"
            )
            raise ConfigError(record.reason)
        for version in wanted:
            record.versions.setdefault(version, VersionRecord(version)).state = State.LOADING
        results = await asyncio.gather(
            *(
                asyncio.to_thread(runner_for_version, entry, config, int(v), self.options)
                for v in wanted
            ),
            return_exceptions=True,
        )
        errors = []
        for version, result in zip(wanted, results, strict=True):
            vrec = record.versions[version]
            old = vrec.runner
            if isinstance(result, BaseException):
                errors.append(result)
                log.error("model '%s' version %s failed to load: %s", record.name, version, result)
                if old is not None:  # a failed reload keeps the version that was serving
                    vrec.state, vrec.reason = State.READY, ""
                    continue
                vrec.state, vrec.reason = State.UNAVAILABLE, str(result)
                continue
            vrec.state, vrec.reason, vrec.runner = State.READY, "", result
            record.refresh_default()  # new requests go to the new instance from here on
            log.info("loaded model '%s' version %s", record.name, version)
            if old is not None:
                await old.drained()  # requests on the old instance finish first
                await asyncio.to_thread(old.close)
        for version in [v for v in record.versions if v not in wanted]:
            await self._unload_version(record, version)
        record.refresh_default()
        if errors:
            err = errors[0]
            raise err if isinstance(err, ModelyardError) else ConfigError(str(err))

    async def unload(self, name: str) -> None:
        record = self.models.get(name)
        if record is None:
            raise ModelNotFound(name, f"failed to unload '{name}', no version is available")
        async with record.lock:
            for version in list(record.versions):
                await self._unload_version(record, version)
            record.refresh_default()

    async def _unload_version(self, record: ModelRecord, version: str) -> None:
        vrec = record.versions[version]
        runner, vrec.runner = vrec.runner, None
        vrec.state = State.UNLOADING
        record.refresh_default()
        if runner is not None:
            await runner.drained()  # never pull a model from under its requests
            await asyncio.to_thread(runner.close)
        vrec.state, vrec.reason = State.UNAVAILABLE, "unloaded"

    # -- lookups -------------------------------------------------------------------------
    def record(self, name: str) -> ModelRecord:
        record = self.models.get(name)
        if record is None:
            raise ModelNotFound(name)
        return record

    def runner(self, name: str, version: str = "") -> ModelRunner:
        """The runner for a request; Triton's errors for unknown or unready models."""
        record = self.models.get(name)
        if record is None or not record.versions:  # never loaded, or its config is unreadable
            raise ModelNotFound(name)
        if not version:
            if record.default is None:
                raise Unavailable(f"Request for unknown model: '{name}' has no available versions")
            return record.default
        vrec = record.versions.get(version)
        if vrec is None or vrec.runner is None:
            if vrec is not None and vrec.state is State.LOADING:
                raise Unavailable(f"Request for model '{name}' version {version}: loading")
            raise VersionNotFound(name, version)
        return vrec.runner

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            return self.runner(name, version) is not None
        except ModelyardError:
            return False

    async def infer(self, request: InferRequest) -> InferResponse:
        return await self.runner(request.model_name, request.model_version).infer(request)

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: one row per version, or per model when none is known."""
        rows: list[dict[str, str]] = []
        for name in sorted(self.models):
            record = self.models[name]
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
