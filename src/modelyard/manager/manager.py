"""Which model versions are loaded, and getting each request to a loaded one.

Every model version has a state (UNAVAILABLE, LOADING, READY, UNLOADING) and a reason when it
is not ready. A model whose config or files are broken is UNAVAILABLE with the error as its
reason; it never takes the server or other models down. Loads run on worker threads and in
parallel across models, one at a time per model.

Control modes (Triton's names, plus on-demand):

* ``none``: every model is loaded at start;
* ``explicit``: only ``--load-model`` models and the repository API load;
* ``poll``: like ``none``, and the repository is rescanned every ``repository_poll_secs``:
  new models load, changed ones reload (the old version serves until the new one is ready;
  a failed reload keeps it), removed ones unload;
* ``on-demand``: any model in the repository loads on its first request. Concurrent first
  requests share one load (``ModelRecord.load_task``) and wait at most ``load_wait_timeout``.
  Loads are admitted against the memory budget first (``_admission.py``), evicting idle
  models chosen by a pure policy (``eviction.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelyard.errors import (
    AlreadyExists,
    ConfigError,
    InvalidArgument,
    MemoryBusy,
    ModelNotFound,
    ModelTooLarge,
    ModelyardError,
    Unavailable,
    VersionNotFound,
)
from modelyard.manager._admission import Admission
from modelyard.manager._ensembles import mark_decoupled, prepare_ensemble
from modelyard.manager._loading import (
    estimate_bytes,
    gpu_device_of,
    prepare_config,
    remove_override,
    return_freed_memory,
    runner_for_version,
    trim_heap,
    write_override,
)
from modelyard.manager._source import ModelSource, default_cache_dir
from modelyard.manager.memory import (
    SIZE_HISTORY,
    bytes_to_shed,
    gpu_memory_total,
    gpu_memory_used,
    host_memory_limit,
    learned_size,
    process_rss,
    process_tree_rss,
    processes_rss,
)
from modelyard.manager.records import (
    ModelRecord,
    State,
    VersionRecord,
    index_rows,
    versions_with_stats,
)
from modelyard.metrics import ManagerCounters
from modelyard.names import check_model_name
from modelyard.repository import ENSEMBLE_PLATFORM, scan_model, select_versions
from modelyard.runtimes.base import RuntimeOptions, backend_for
from modelyard.scheduling.runner import DEFAULT_INLINE_NS, ModelRunner
from modelyard.types import InferRequest, InferResponse

log = logging.getLogger("modelyard.manager")

MODES = ("none", "explicit", "poll", "on-demand")
_REQUEST_LISTING_INTERVAL = 1.0  # seconds between listings caused by unknown names


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerOptions:
    """What the manager is told; the server-wide defaults live in ``ServerSettings`` alone, so
    the fields a user can set have no default here (they drifted when written twice)."""

    repository: str  # a folder, or s3://... (docs/model-store.md)
    control_mode: str  # one of MODES
    load_wait_timeout: float
    repository_poll_secs: float  # 0: no periodic rescan
    memory_budget: int | None  # bytes; None: unbounded
    eviction_policy: str  # one of eviction.POLICIES
    cache_max_bytes: int
    autocomplete: bool = True
    startup_models: tuple[str, ...] = ()  # --load-model; "*" loads all
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    inline_threshold_ns: int = DEFAULT_INLINE_NS
    cache_dir: Path | None = None  # None: default_cache_dir()
    memory_watch_secs: float = 1.0  # the watchdog's period (0: off)
    gpu_limits: dict[int, float] = field(default_factory=dict)  # device -> share of its memory


class ModelManager:
    """Owns every loaded model; the protocol layer's only way to reach a model."""

    def __init__(self, options: ManagerOptions) -> None:
        if options.control_mode not in MODES:
            raise ValueError(f"unknown model control mode '{options.control_mode}'")
        # models that call models (Python BLS) reach them through this manager
        # a Python worker passing the whole budget while it starts is stopped there
        runtime = replace(options.runtime, resolver=self, memory_limit=options.memory_budget or 0)
        options = replace(options, runtime=runtime)
        self.options = options
        self.source = ModelSource(
            options.repository,
            options.cache_dir or default_cache_dir(options.repository),
            options.cache_max_bytes,
        )
        self.models: dict[str, ModelRecord] = {}
        self.counters = ManagerCounters(memory_budget_bytes=options.memory_budget or 0)
        self.admission = Admission(self, options.memory_budget, options.eviction_policy)
        self.gpu_admissions = {
            device: Admission(
                self, _gpu_budget(device, share), options.eviction_policy, device=device
            )
            for device, share in options.gpu_limits.items()
        }
        self._poller: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._window_lock = asyncio.Lock()  # loads and unloads take turns while measured
        self._evicting: set[str] = set()  # models being unloaded for passing the budget
        self._rebalancing = False  # the watchdog's rebalance is running
        self._asked: dict[tuple[str, str], float] = {}  # unseen names -> when they caused a listing
        self._listing: asyncio.Future[list[str]] | None = None

    @property
    def on_demand(self) -> bool:
        return self.options.control_mode == "on-demand"

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self.options.memory_budget is not None:
            return_freed_memory()
        await self.refresh()
        mode = self.options.control_mode
        log.info(
            "serving %d model%s from %s (model control mode %s%s)",
            len(self.models),
            "" if len(self.models) == 1 else "s",
            self.options.repository,
            mode,
            ": each loads on its first request" if mode == "on-demand" else "",
        )
        if mode in ("none", "poll") or "*" in self.options.startup_models:
            names = list(self.models)
        else:
            names = list(self.options.startup_models)
        await asyncio.gather(*(self._load_logged(n) for n in names))
        if self.options.repository_poll_secs > 0 and mode in ("poll", "on-demand"):
            self._poller = asyncio.create_task(self._poll())
        if self.options.memory_watch_secs > 0:
            self._watchdog = asyncio.create_task(self._watch_memory())

    async def shutdown(self) -> None:
        for task in (self._poller, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(self.unload(n) for n in list(self.models)), return_exceptions=True)
        for record in self.models.values():
            remove_override(record.override)

    async def refresh(self) -> list[str]:
        """List the store again; returns the models whose files changed or vanished."""
        listing = await asyncio.to_thread(self.source.list)
        changed = []
        for name, model in listing.items():
            record = self.models.get(name)
            if record is None:
                self.models[name] = ModelRecord(name, model)
            elif record.registered:
                log.warning("repository model '%s' is hidden by a registered model", name)
            elif record.source != model:  # a version or file added, removed or replaced
                record.source = model
                changed.append(name)
        for name, record in self.models.items():
            if name not in listing and record.source is not None and not record.registered:
                record.source = None
                changed.append(name)
        return changed

    async def _watch_memory(self) -> None:
        """The last line against being killed for lack of memory, whatever the books say.

        Budgets are kept from predictions and measurements, which can be wrong (activations
        that grow with real batches, memory outside any model). Once a second the process's
        real resident memory is compared with the host's limit (the cgroup's memory.max in a
        container); near it, idle models are evicted until it is back in the safe band.
        """
        limit = await asyncio.to_thread(host_memory_limit)
        while True:
            await asyncio.sleep(self.options.memory_watch_secs)
            try:
                rss = await asyncio.to_thread(process_tree_rss)
                excess = bytes_to_shed(rss, limit)
                if excess:
                    log.warning(
                        "resident memory %d MiB is near the host's limit of %d MiB: evicting "
                        "idle models",
                        rss >> 20,
                        limit >> 20,
                    )
                    await self.admission.shed(excess)
                    self._update_gauges()
                await self._watch_workers()
            except Exception:  # the watchdog must outlive any one bad reading
                log.exception("memory watchdog failed")

    async def _watch_workers(self) -> None:
        """Book what Python models' worker processes really hold, and act on it.

        Workers are separate processes, so their resident memory is theirs alone: it is read
        every ``memory_watch_secs`` and replaces the worker part of each model's size. Memory
        a model allocates in ``execute`` thus counts as soon as it is there. A model that
        now holds more than the whole budget is unloaded (after the requests it is running;
        new ones are refused with the figures); when the books pass the budget, idle models
        are evicted until they balance.
        """
        budget = self.admission.budget
        if budget is None:
            return
        watched = [(r, self._worker_pids(r)) for r in self.models.values() if r.loaded]
        watched = [(r, pids) for r, pids in watched if pids]
        if not watched:
            return
        sizes = await asyncio.to_thread(lambda: [processes_rss(pids) for _, pids in watched])
        for (record, _), size in zip(watched, sizes, strict=True):
            if not record.loaded or not size:
                continue
            record.usage.worker_bytes = size
            record.usage.settle()
            reason = self.admission.too_large(record)
            if reason is not None and record.name not in self._evicting:
                log.warning("unloading model '%s': %s", record.name, reason)
                self._evicting.add(record.name)
                self._spawn(self._unload_too_large(record.name, reason))
        if self.admission.used() > budget and not self._rebalancing:
            self._rebalancing = True
            self._spawn(self._watchdog_rebalance())
        self._update_gauges()

    async def _unload_too_large(self, name: str, reason: str) -> None:
        try:
            await self.unload(name, reason)
        finally:
            self._evicting.discard(name)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_for_request(self, name: str, version: str) -> None:
        """A listing on behalf of a request naming a model or version not seen yet.

        The same unseen name causes at most one listing a second, so requests for things
        that do not exist never turn into a store listing each (an S3 LIST per 404);
        concurrent requests share one listing.
        """
        key, now = (name, version), time.monotonic()
        if now - self._asked.get(key, float("-inf")) < _REQUEST_LISTING_INTERVAL:
            return
        if len(self._asked) > 10_000:
            self._asked.clear()
        self._asked[key] = now
        if self._listing is None or self._listing.done():
            self._listing = asyncio.ensure_future(self.refresh())
        await asyncio.shield(self._listing)

    async def _poll(self) -> None:
        """Pick up new, changed and removed models without dropping traffic."""
        while True:
            await asyncio.sleep(self.options.repository_poll_secs)
            try:
                await self._poll_once()
            except Exception:  # the poller must outlive any one bad listing or load
                log.exception("repository poll failed")

    async def _poll_once(self) -> None:
        changed = await self.refresh()
        for name in changed:
            record = self.models[name]
            if record.source is None and not record.local:
                await self._unload_logged(name)
            elif (record.loaded or self.options.control_mode == "poll") and not record.local:
                await self._load_logged(name)
        if self.options.control_mode == "poll":
            # requests may add models while this awaits: iterate over a copy
            for name, record in list(self.models.items()):
                # never loaded; one whose config failed waits for its files to change
                if record.source is not None and not record.versions and not record.reason:
                    await self._load_logged(name)

    async def _load_logged(self, name: str) -> None:
        try:
            await self.load(name)
        except ModelyardError as exc:
            log.error("failed to load '%s': %s", name, exc)

    async def _unload_logged(self, name: str) -> None:
        try:
            await self.unload(name)
        except ModelyardError as exc:
            log.error("failed to unload '%s': %s", name, exc)

    # -- loading and unloading -------------------------------------------------------------
    async def load(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """(Re)load a model's policy versions; raises when a version could not be loaded.

        ``config_json`` (a load request's ``config`` parameter) replaces config.pbtxt.
        ``files`` (Triton's ``file:<path>`` parameters) replace the model's files with the ones
        sent, until a load without files goes back to the store; Triton requires the config
        with them.
        """
        check_model_name(name)
        await self.refresh()
        if files is not None:
            if config_json is None:
                raise InvalidArgument(
                    f"failed to load '{name}': a load with 'file:' parameters needs the "
                    "'config' parameter as well"
                )
            override = await asyncio.to_thread(write_override, name, files)
            record = self.models.get(name)
            if record is None:
                record = self.models[name] = ModelRecord(name, None)
            async with record.lock:
                await self._load_override(record, override, config_json)
            return
        record = self.models.get(name)
        if record is not None and record.override is not None:
            remove_override(record.override)  # back to the store's files
            record.override = None
        if record is None or (record.source is None and not record.local):
            raise ModelNotFound(
                name, f"failed to load '{name}', failed to poll from model repository"
            )
        async with record.lock:
            await self._admitted_load(record, config_json)

    async def _load_override(
        self, record: ModelRecord, override: Path, config_json: str | None
    ) -> None:
        """Load from the files a request sent; the caller holds ``record.lock``.

        On success the files of the previous override go; on failure the new ones go and
        the previous ones stay (the versions still serving may read them), so a failed
        load leaves no folder of its own behind.
        """
        old, old_entry = record.override, record.entry
        record.override = override
        record.entry = await asyncio.to_thread(scan_model, override)
        try:
            await self._admitted_load(record, config_json)
        except BaseException:
            record.override, record.entry = old, old_entry
            remove_override(override)
            raise
        remove_override(old)

    async def _fetch(self, record: ModelRecord) -> None:
        """Bring the model's files from the store to a local folder (cached, pinned)."""
        if record.local:
            return
        if record.source is None:
            raise ModelNotFound(record.name)
        try:
            entry, view, seconds = await asyncio.to_thread(self.source.fetch, record.source)
        except ModelyardError as exc:  # refused at extraction, over the cache, store down
            _failed(record, exc)  # the index says UNAVAILABLE and why, as for a failed load
            raise
        if seconds is not None:
            self.counters.download.observe(seconds)
        old, record.view, record.entry = record.view, view, entry
        if old is not None:
            self.source.release(old)

    async def _admitted_load(self, record: ModelRecord, config_json: str | None = None) -> None:
        try:
            await self._admit_and_load(record, config_json)
        except Exception:
            self.counters.load_failed(record.name)  # modelyard_model_load_failures_total
            raise

    async def _admit_and_load(self, record: ModelRecord, config_json: str | None = None) -> None:
        """Fetch, admit against the budgets, load, and record what the load really took.

        Host memory is always admitted; a KIND_GPU model is also admitted against its GPU's
        budget (``--model-load-gpu-limit``) when that GPU has one. A model whose measured
        size turns out larger than the whole budget is unloaded again at once and refused
        from then on (until its files change), with the figures.
        """
        await self._fetch(record)
        entry = record.entry
        assert entry is not None
        usage = record.usage
        key = (record.source, config_json, record.override, entry.path)
        if usage.measured_key != key:  # other files: what was learned is not theirs
            usage.measured, usage.measured_key, usage.worker_bytes = [], key, 0
            usage.gpu_bytes = 0
        usage.floor = await asyncio.to_thread(estimate_bytes, entry)
        usage.settle()
        floor = usage.floor
        device = await asyncio.to_thread(gpu_device_of, entry) if self.gpu_admissions else None
        gpu = self.gpu_admissions.get(device) if device is not None else None
        gpu_predicted = max(usage.gpu_bytes if usage.gpu_device == device else 0, floor)
        async with contextlib.AsyncExitStack() as admitted:
            await admitted.enter_async_context(
                self.admission.reserve(record, self._predicted(record))
            )
            if gpu is not None:
                await admitted.enter_async_context(gpu.reserve(record, gpu_predicted))
            start = time.monotonic()
            try:
                window = await self._load_locked(record, config_json, device if gpu else None)
            except ModelTooLarge as exc:
                self._update_gauges()
                # this model's worker stopped as it passed the budget (_load_locked booked
                # its size): the answer every later request gets, with the same figures
                reason = self.admission.too_large(record)
                if reason is None:
                    raise  # another model's (an ensemble's step): not this one's size
                raise ModelTooLarge(reason, exc.needed) from None
            except Exception:
                self._update_gauges()
                raise
            seconds = time.monotonic() - start
            self.admission.resize(record, 0)  # loaded now: counted as such
            usage.worker_bytes = await asyncio.to_thread(processes_rss, self._worker_pids(record))
            usage.settle()
            if gpu is not None:
                usage.gpu_device, usage.gpu_bytes = device, max(window.gpu or 0, gpu_predicted)
            log.debug(
                "model '%s' loaded in %.2f s: measured %s, books %d bytes (files predict %d)",
                record.name,
                seconds,
                "not measured" if window.host is None else f"{window.host} bytes in-process",
                usage.bytes,
                floor,
            )
            usage.load_seconds = seconds
            usage.last_used = time.monotonic()
            usage.inflation = self.admission.inflation
            self.counters.load.observe(seconds)
        too_large = self.admission.too_large(record)
        if too_large is not None:
            await self.unload_locked(record, too_large)
            self._update_gauges()
            raise ModelTooLarge(too_large)
        # the measurement may exceed the prediction the load was admitted on: evict idle
        # models until the books balance again (in the background: this request goes on)
        if self.admission.budget is not None and self.admission.used() > self.admission.budget:
            task = asyncio.create_task(self._rebalance(record))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self._update_gauges()

    def _worker_pids(self, record: ModelRecord) -> list[int]:
        """The processes a loaded model runs in besides this one (Python-backend workers)."""
        pids: list[int] = []
        for vrec in record.versions.values():
            if vrec.runner is not None:
                pids += getattr(vrec.runner.runtime, "pids", None) or []
        return pids

    @contextlib.asynccontextmanager
    async def _window(self, record: ModelRecord, gpu: int | None) -> AsyncIterator[_Window]:
        """A measured window: no other load or unload runs while it is open.

        Memory growth seen while other loads or unloads run is not one model's; loads and
        unloads therefore take turns here when a budget is kept (the runtime's own work
        only: fetching files, preparing configs and ensembles, warm-up samples run outside,
        in parallel). Requests keep running meanwhile; :func:`learned_size` absorbs what
        they add. Without any budget nothing is measured and nothing waits.

        A window opens only while the books are within the budget: a load before this one
        may have measured more than it was admitted on (a first load is admitted on a
        prediction from its files), and starting another runtime then would stack up
        memory no book holds. Idle models are evicted (or busy ones waited for, at most
        ``--load-wait-timeout``) first.
        """
        window = _Window()
        if self.admission.budget is None and not self.gpu_admissions:
            yield window
            return
        await self._enter_window(record)
        try:
            before = await asyncio.to_thread(process_rss)
            gpu_before = await asyncio.to_thread(gpu_memory_used, gpu) if gpu is not None else None
            yield window
            after = await asyncio.to_thread(process_rss)
            window.host = max(0, after - before)
            # booked before the next window opens: it must see what this load really took
            usage = record.usage
            usage.measured = [*usage.measured, window.host][-SIZE_HISTORY:]
            usage.settle()
            self.admission.resize(record, usage.bytes)
            if gpu is not None and gpu_before is not None:
                gpu_after = await asyncio.to_thread(gpu_memory_used, gpu)
                window.gpu = None if gpu_after is None else max(0, gpu_after - gpu_before)
        finally:
            self._window_lock.release()

    def _predicted(self, record: ModelRecord) -> int:
        """What to reserve for a load: the model's learned size, or for a model never
        measured, its files' prediction scaled as much as any model measured here scaled
        its own (the learned size over the prediction).

        The file-size guess alone lets a first load overshoot its reservation by its whole
        working memory (onnxruntime's arena). Assuming it is as hungry as the hungriest
        model seen errs on the side of the budget: a first load may evict more than it
        needed, once; its own measurement then replaces the guess. The result never
        exceeds the budget: a guess may make a load wait for room, never refuse it.
        """
        usage, budget = record.usage, self.admission.budget
        if usage.measured or usage.worker_bytes or budget is None or not usage.floor:
            return usage.bytes
        scale = max(
            (
                learned_size(r.usage.measured) / r.usage.floor
                for r in self.models.values()
                if r.usage.measured and r.usage.floor
            ),
            default=1.0,
        )
        return min(max(usage.bytes, int(usage.floor * scale)), budget)

    async def _enter_window(self, record: ModelRecord) -> None:
        admission = self.admission
        while True:
            await self._window_lock.acquire()
            # reserved before anything was measured? what is known now is a better guess
            admission.resize(record, max(admission.reservation(record), self._predicted(record)))
            if admission.budget is None or (
                admission.held() + admission.reservation(record) <= admission.budget
            ):
                return
            self._window_lock.release()  # evicting closes runners: in windows of their own
            if not await admission.room_to_start(record):
                raise MemoryBusy(
                    f"cannot load model '{record.name}' yet: it needs about "
                    f"{admission.reservation(record)} bytes, models loaded before it hold "
                    f"{admission.held()} of the {admission.budget} bytes budget and stayed busy "
                    f"serving requests for {self.options.load_wait_timeout:g} s "
                    "(--load-wait-timeout); retry shortly"
                )

    async def _close(self, runner: ModelRunner) -> None:
        """Close a runner inside a window, so no load measures the memory it gives back.

        Only where loads are measured (a budget is kept, the runtime is in this process):
        a Python model's workers give their memory back as processes, and stopping them
        may take seconds that no load should wait.
        """
        measured = self.admission.budget is not None or self.gpu_admissions
        if not measured or backend_for(runner.config) in ("python", ENSEMBLE_PLATFORM):
            await asyncio.to_thread(runner.close)
            await asyncio.to_thread(trim_heap)
            return
        async with self._window_lock:
            await asyncio.to_thread(runner.close)
            await asyncio.to_thread(trim_heap)  # glibc keeps freed heap otherwise

    async def _rebalance(self, record: ModelRecord | None) -> None:
        await self.admission.rebalance(record)
        self._update_gauges()

    async def _watchdog_rebalance(self) -> None:
        try:
            await self._rebalance(None)
        finally:
            self._rebalancing = False

    async def _load_locked(
        self, record: ModelRecord, config_json: str | None = None, gpu: int | None = None
    ) -> _Window:
        """Load the policy's versions; returns what the runtime's work measured."""
        entry = record.entry
        assert entry is not None
        try:
            config = await asyncio.to_thread(prepare_config, entry, self.options, config_json)
        except ModelyardError as exc:
            _failed(record, exc)
            raise
        if config.HasField("ensemble_scheduling"):
            try:
                await prepare_ensemble(self, config)
            except ModelyardError as exc:
                _failed(record, exc)
                raise
        record.reason = ""
        record.config, record.config_key = config, (record.source, config_json)
        wanted = [str(v) for v in select_versions(config, entry.versions)]
        if not wanted:
            record.reason = (
                "at least one version must be available under the version policy "
                f"of model '{record.name}'"
            )
            raise ConfigError(record.reason)
        for version in wanted:
            record.version(version).state = State.LOADING
        # in-process runtimes are measured; Python models' workers are measured as processes
        # (and may call other models while they start), ensembles hold no memory of their own
        measured = backend_for(config) not in ("python", ENSEMBLE_PLATFORM)
        async with self._window(record, gpu) if measured else _unmeasured() as window:
            results = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        runner_for_version,
                        entry,
                        config,
                        int(v),
                        self.options,
                        record.version(v).stats,
                    )
                    for v in wanted
                ),
                return_exceptions=True,
            )
        results = [await _warmed(r) for r in results]
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
                await self._close(old)
        for version in [v for v in record.versions if v not in wanted]:
            await self._unload_version(record, version, "unloaded")
        record.refresh_default()
        if errors:
            err = errors[0]
            if isinstance(err, ModelTooLarge) and err.needed is not None:
                record.usage.worker_bytes = err.needed  # what its worker reached starting
                record.usage.settle()
            raise err if isinstance(err, ModelyardError) else ConfigError(str(err))
        return window

    async def register(self, name: str, model_dir: Path, companions: Sequence[Path] = ()) -> None:
        """Serve a model folder from outside the repository under ``name`` and load it now.

        SageMaker's container face registers models this way, as Triton's maps them: the
        model is served under ``name`` whatever its folder and its config call it.
        ``companions`` are the other model folders that came with it (an ensemble's steps,
        beside it in the same SageMaker url). They are scoped to it, as Triton's model
        namespacing scopes a repository's models: served as ``<name>/<folder>`` (a name no
        request can spell, so two models' steps may share a folder name), the ensemble's
        steps renamed to match, loaded as the ensemble needs them and removed with it.
        Registered models are never evicted: only :meth:`deregister` unloads them, so the
        platform's list of models stays true (when the budget is full, registering fails
        and the platform deletes models itself). A name already served is refused (409).
        """
        check_model_name(name)
        taken = self.models.get(name)
        if taken is not None and (taken.loaded or taken.registered):
            raise AlreadyExists(f"model '{name}' is already loaded")
        scoped = {folder.name: f"{name}/{folder.name}" for folder in companions}
        aliases = tuple(sorted(scoped.items()))
        entry = await asyncio.to_thread(scan_model, model_dir, name, aliases)
        parts = [
            ModelRecord(
                scoped[folder.name],
                None,
                await asyncio.to_thread(scan_model, folder, scoped[folder.name], aliases),
                registered=True,
            )
            for folder in companions
        ]
        record = ModelRecord(name, None, entry, registered=True, parts=tuple(scoped.values()))
        for r in (*parts, record):
            self.models[r.name] = r
        try:
            async with record.lock:
                await self._admitted_load(record)
        except BaseException:
            await self._forget(record)
            raise

    async def load_registered(self, record: ModelRecord) -> None:
        """Load a registered model not loaded yet (an ensemble's step, when it is needed)."""
        async with record.lock:
            if not record.loaded:
                await self._admitted_load(record)

    async def deregister(self, name: str) -> None:
        """Unload a registered model and the companions registered with it, and forget them."""
        record = self.models.get(name)
        if record is None or not record.registered:
            raise ModelNotFound(name, f"model '{name}' is not registered")
        await self._forget(record)

    async def _forget(self, record: ModelRecord) -> None:
        # the entry point first: an ensemble holds its steps while it runs
        for n in (record.name, *record.parts):
            part = self.models.get(n)
            if part is None or not part.registered:
                continue
            with contextlib.suppress(ModelyardError):
                await self.unload(n)
            self.models.pop(n, None)

    async def unload(self, name: str, reason: str = "unloaded") -> None:
        record = self.models.get(name)
        if record is None:
            raise ModelNotFound(name, f"failed to unload '{name}', no version is available")
        async with record.lock:
            await self.unload_locked(record, reason)
            if record.override is not None:  # files a request sent go with an unload (Triton)
                remove_override(record.override)
                record.override, record.entry = None, None

    async def unload_locked(self, record: ModelRecord, reason: str) -> None:
        """Unload every version; the caller holds ``record.lock``."""
        start = time.monotonic()
        was_loaded = record.loaded
        for version in list(record.versions):
            await self._unload_version(record, version, reason)
        record.refresh_default()
        if record.view is not None and not record.loaded:
            self.source.release(record.view)  # the cache may reclaim the files now
            record.view = None
        if was_loaded:
            self.counters.unload.observe(time.monotonic() - start)
            self._update_gauges()

    async def _unload_version(self, record: ModelRecord, version: str, reason: str) -> None:
        vrec = record.versions[version]
        runner, vrec.runner = vrec.runner, None
        if runner is None and vrec.state is not State.READY:
            return
        vrec.state = State.UNLOADING
        record.refresh_default()
        if runner is not None:
            await runner.drained()  # never pull a model from under its requests
            await self._close(runner)
        vrec.state, vrec.reason = State.UNAVAILABLE, reason

    # -- the request path ------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResponse:
        """Runs a request a model made (BLS): the target loads on demand like any other."""
        runner = await self.runner_for(request.model_name, request.model_version)
        return await runner.infer(request)

    @contextlib.contextmanager
    def hold(self, names: Iterable[str]) -> Iterator[None]:
        """Keeps these models from eviction while a pipeline that uses them runs (an
        ensemble's steps stay loaded between one step and the next)."""
        held = [self.models[n] for n in set(names) if n in self.models]
        for record in held:
            record.holds += 1
        try:
            yield
        finally:
            for record in held:
                record.holds -= 1

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """A decoupled model's responses to a request a model made (BLS ``decoupled=True``)."""
        runner = await self.runner_for(request.model_name, request.model_version)
        async for response in runner.stream(request):
            yield response

    async def runner_for(self, name: str, version: str = "") -> ModelRunner:
        """The runner that serves a request, loading the model first in on-demand mode."""
        record = self.models.get(name)
        if record is not None and not version and record.default is not None:
            return self._hit(record, record.default)
        if record is None:
            check_model_name(name)  # a name no model can have: refused before any listing
        if self.on_demand and (record is None or record.unseen(version)):
            await self._refresh_for_request(
                name, version
            )  # a model or version stored since the last listing
            record = self.models.get(name)
        if record is None or (not record.versions and not self.on_demand):
            raise ModelNotFound(name)
        runner = record.lookup(version)
        if runner is not None:
            return self._hit(record, runner)
        if not self.on_demand or (record.source is None and not record.local):
            return self.runner(name, version)  # raises Triton's error for this case
        if version and record.unseen(version):
            raise VersionNotFound(name, version)  # not in the store even after a listing
        if (
            version
            and record.config is not None
            and int(version)
            not in select_versions(record.config, sorted(record.known_versions() or ()))
        ):
            raise VersionNotFound(name, version)  # stored, but outside the version policy
        self.counters.cache_misses += 1
        self.counters.model_misses[name] = self.counters.model_misses.get(name, 0) + 1
        record.waiters += 1  # pinned: a model loaded for waiting requests is not evicted
        try:  # before they use it (no await between here and their runner.infer)
            await self._wait_for_load(record, version)
        finally:
            record.waiters -= 1
        runner = record.lookup(version)
        if runner is None:
            return self.runner(name, version)
        record.usage.last_used = time.monotonic()
        record.usage.uses += 1
        return runner

    def _update_gauges(self) -> None:
        self.counters.loaded_models = sum(1 for r in self.models.values() if r.loaded)
        self.counters.memory_bytes = self.admission.used()
        self.counters.model_bytes = {
            n: r.usage.bytes for n, r in self.models.items() if r.usage.bytes
        }

    def _hit(self, record: ModelRecord, runner: ModelRunner) -> ModelRunner:
        counters = self.counters
        counters.cache_hits += 1
        counters.model_hits[record.name] = counters.model_hits.get(record.name, 0) + 1
        usage = record.usage
        usage.last_used = time.monotonic()
        usage.uses += 1
        usage.inflation = self.admission.inflation  # GDSF: its priority is set at each use
        return runner

    async def _wait_for_load(self, record: ModelRecord, version: str) -> None:
        """Join (or start) the model's one load; wait at most ``load_wait_timeout``.

        A load already under way may not bring the version asked for (it started before that
        version was stored); then one more load follows, within the same time limit.
        """
        start = time.monotonic()
        deadline = start + self.options.load_wait_timeout
        try:
            for _ in range(2):
                task = record.load_task
                if task is None or task.done():
                    task = record.load_task = asyncio.create_task(
                        self._load_on_demand(record, version)
                    )
                    task.add_done_callback(_consume_exception)
                try:
                    await asyncio.wait_for(asyncio.shield(task), deadline - time.monotonic())
                except TimeoutError:
                    raise Unavailable(
                        f"model '{record.name}' is still loading after "
                        f"{self.options.load_wait_timeout:g} s (--load-wait-timeout); the "
                        "load goes on, retry shortly"
                    ) from None
                if record.lookup(version) is not None:
                    return
        finally:
            self.counters.load_wait.observe(time.monotonic() - start)

    async def _load_on_demand(self, record: ModelRecord, version: str) -> None:
        async with record.lock:
            if record.lookup(version) is None:
                await self._admitted_load(record)

    def runner(self, name: str, version: str = "") -> ModelRunner:
        """The loaded runner for a request, or Triton's error for why there is none."""
        record = self.models.get(name)
        if record is None or not record.versions:  # never loaded, or its config is unreadable
            raise ModelNotFound(name)
        if not version:
            if record.default is None:
                raise ModelNotFound(
                    name, f"Request for unknown model: '{name}' has no available versions"
                )
            return record.default
        vrec = record.versions.get(version)
        if vrec is None or vrec.runner is None:
            if vrec is not None and vrec.state is State.LOADING:
                raise Unavailable(f"Request for model '{name}' version {version}: loading")
            raise VersionNotFound(name, version)
        return vrec.runner

    # -- questions answered without loading ------------------------------------------------
    async def config_for(self, name: str, version: str = "") -> Any:
        """A model's completed config: the loaded one, or (on-demand) read without loading."""
        record = self.models.get(name)
        if record is not None:
            runner = record.lookup(version)
            if runner is not None:
                return runner.config
        if record is None:
            check_model_name(name)
        if not self.on_demand:
            return self.runner(name, version).config
        if record is None or record.unseen(version):
            await self._refresh_for_request(name, version)
            record = self.models.get(name)
        if record is None or record.source is None:
            raise ModelNotFound(name)
        key = (record.source, None)
        if record.config is None or record.config_key != key:
            try:
                async with record.lock:
                    if record.entry is None or record.view is None or not record.loaded:
                        await self._fetch(record)  # files to disk, nothing loaded
                    assert record.entry is not None
                    record.config = await asyncio.to_thread(
                        prepare_config, record.entry, self.options
                    )
                    if not record.loaded and record.view is not None:
                        self.source.release(record.view)  # only the loaded stay pinned
                        record.view = None
            except ModelyardError as exc:
                record.reason = str(exc)  # the index tells why it cannot be served
                raise
            record.config_key, record.reason = key, ""
            if record.config.HasField("ensemble_scheduling"):
                await mark_decoupled(self, record.config)
        versions = list(record.source.versions)
        if version and int(version) not in select_versions(record.config, versions):
            raise VersionNotFound(name, version)
        return record.config

    def served_versions(self, name: str) -> list[str]:
        """Loaded versions; in on-demand mode, the versions a request may load."""
        record = self.models.get(name)
        if record is None:
            return []
        loaded = [v.version for v in record.versions.values() if v.runner is not None]
        if loaded or not self.on_demand or record.source is None or record.config is None:
            return sorted(loaded, key=int)
        return [str(v) for v in select_versions(record.config, list(record.source.versions))]

    async def is_ready(self, name: str, version: str = "") -> bool:
        """Loaded, or (on-demand) present with a valid config, so a request would be served."""
        record = self.models.get(name)
        if record is not None and record.lookup(version) is not None:
            return True
        if not self.on_demand:
            return False
        try:
            await self.config_for(name, version)
        except ModelyardError:
            return False
        record = self.models.get(name)
        return record is not None and not record.reason

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        return index_rows(self.models, ready_only)

    def stats_records(self, name: str | None = None) -> list[VersionRecord]:
        return versions_with_stats(self.models, name)


def _gpu_budget(device: int, share: float) -> int:
    total = gpu_memory_total(device)
    if total is None:
        raise ConfigError(
            f"--model-load-gpu-limit {device}:{share}: GPU {device} is not visible through "
            "NVIDIA's NVML (pip install nvidia-ml-py, on a machine with that GPU)"
        )
    return int(total * share)


def _failed(record: ModelRecord, exc: ModelyardError) -> None:
    """A model that could not be (re)loaded says why; a failed reload leaves the versions
    already serving as they are (as Triton does). Logged here, once per load, at ERROR: the
    requests it fails are not (protocol/errors.py logs a client's 4xx at debug only)."""
    log.error("failed to load '%s': %s", record.name, exc)
    if record.default is None:
        record.reason = str(exc)
        for v in record.versions.values():
            v.state, v.reason = State.UNAVAILABLE, str(exc)


async def _warmed(result: ModelRunner | BaseException) -> ModelRunner | BaseException:
    """A loaded version after its ``model_warmup`` samples ran (Triton: before it is
    ready); a failing sample fails the load and closes the version."""
    if isinstance(result, BaseException) or not result.config.model_warmup:
        return result
    try:
        await result.warm_up()
    except Exception as exc:
        await asyncio.to_thread(result.close)
        return ConfigError(f"model '{result.name}' failed its warm-up: {exc}")
    return result


@dataclass(slots=True)
class _Window:
    """What a measured window saw: growth of this process, and of the GPU when watched."""

    host: int | None = None
    gpu: int | None = None


@contextlib.asynccontextmanager
async def _unmeasured() -> AsyncIterator[_Window]:
    yield _Window()


def _consume_exception(task: asyncio.Task[None]) -> None:
    """A load nobody waits for any more must not log "exception was never retrieved"."""
    if not task.cancelled():
        task.exception()
