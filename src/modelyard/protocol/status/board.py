"""What the status page shows, read from the counters the server already keeps.

There are no books here: every total is read, when asked, from the same objects ``/metrics``
reads (``ManagerCounters``, each version's ``ModelStats``, the manager's records), so the page
and a scrape agree. What the page adds is *recent* behaviour: :meth:`StatusBoard.sample` keeps
a small ring of snapshots of the cumulative counters (every :data:`SAMPLE_SECS`, for
:data:`WINDOW_SECS`), and :meth:`StatusBoard.report` subtracts the oldest one from the live
values, which gives requests, failures, cache hits and latency quantiles over the window. The
quantiles come from the bucket differences of each version's latency histogram
(``ModelStats.latency``), interpolated within a bucket as Prometheus's
``histogram_quantile`` does (:func:`quantile`).

Cost: a snapshot copies one small tuple per version that has served a request; a report walks
the records once and computes quantiles only for the versions with requests in the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelyard import __version__
from modelyard.manager.manager import ModelManager
from modelyard.manager.records import ModelRecord, State, VersionRecord
from modelyard.scheduling.stats import LATENCY_BOUNDS_NS, ModelStats

SAMPLE_SECS = 10.0  # one snapshot this often
WINDOW_SECS = 300.0  # rates and quantiles over about this long
MAX_ERRORS = 50  # the newest load errors the report lists

# the window of a model without requests in it: one object, shared by every such row (a
# report is only encoded, never changed)
_QUIET: dict[str, Any] = {
    "requests": 0,
    "failures": 0,
    "requests_per_second": 0.0,
    "p50_ms": None,
    "p99_ms": None,
}

# (model, version) -> (successful requests, failed requests, latency bucket counts)
_Counts = tuple[int, int, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    at: float  # time.monotonic()
    cache_hits: int
    cache_misses: int
    versions: dict[tuple[str, str], _Counts]


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram: ``counts[i]`` observations at most ``bounds[i]``
    (and above the bound before it); ``counts`` has one more entry, above the last bound.

    Linear within the bucket that holds the rank, from 0 for the first bucket, as
    Prometheus's ``histogram_quantile`` does; a rank in the last (unbounded) bucket is
    answered with the highest bound. None when there are no observations.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n > 0 and seen + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            return lower + (float(bounds[i]) - lower) * (rank - seen) / n
        seen += n
    return float(bounds[-1])


def _latency(stats: ModelStats) -> tuple[int, ...]:
    """A version's latency histogram (bucket counts, not cumulative): the one place that
    knows where the histogram lives, so a change of its home is a change here."""
    return tuple(stats.latency)


def _counts(stats: ModelStats) -> _Counts:
    d = stats.durations
    return d["success"].count, d["fail"].count, _latency(stats)


def model_state(record: ModelRecord) -> str:
    """One word for a model: LOADING (a load under way, from fetching its files to
    warm-up), UNLOADING, READY (a version serves), FAILED (its last load failed: see the
    errors) or UNLOADED (known, not loaded: on-demand loads it on its first request)."""
    states = [v.state for v in record.versions.values()]
    return _state(record, State.LOADING in states, State.UNLOADING in states, bool(_errors(record)))


def _state(record: ModelRecord, loading: bool, unloading: bool, failed: bool) -> str:
    task = record.load_task
    if loading or (task is not None and not task.done()):
        return "LOADING"
    if unloading:
        return "UNLOADING"
    if record.default is not None:
        return "READY"
    return "FAILED" if failed else "UNLOADED"


def _is_error(record: ModelRecord, vrec: VersionRecord) -> bool:
    """A version left UNAVAILABLE by a failed load (the model's own reason aside). An
    unload's reason ("unloaded", "unloaded to free memory for ...") is no error."""
    reason = vrec.reason
    return (
        vrec.state is State.UNAVAILABLE
        and bool(reason)
        and reason != record.reason
        and not reason.startswith("unloaded")
    )


def _errors(record: ModelRecord) -> list[tuple[str, str]]:
    """``(version, reason)`` of what failed: the model's own reason ("": its config or
    files), then each version a failed load left UNAVAILABLE."""
    out = [("", record.reason)] if record.reason else []
    out += [(v, vrec.reason) for v, vrec in record.versions.items() if _is_error(record, vrec)]
    return out


class StatusBoard:
    """The ring of snapshots and the report ``GET /v2/status`` answers."""

    def __init__(self, manager: ModelManager, control_mode: str) -> None:
        self.manager = manager
        self.control_mode = control_mode
        self.started = time.monotonic()
        self.started_wall = time.time()
        self._ring: deque[_Snapshot] = deque(maxlen=int(WINDOW_SECS / SAMPLE_SECS) + 1)
        self._seen: dict[tuple[str, str, str], float] = {}  # error -> when first noticed
        self._task: asyncio.Task[None] | None = None
        self.sample()

    # -- the ring --------------------------------------------------------------------------
    def sample(self, now: float | None = None) -> None:
        """Take one snapshot of the cumulative counters (versions that have served only),
        and note the time of each load error not seen before."""
        c = self.manager.counters
        versions: dict[tuple[str, str], _Counts] = {}
        wall = time.time()
        for name, record in self.manager.models.items():
            if record.reason:  # noted now, so an error's time is within a sample of it
                self._seen.setdefault((name, "", record.reason), wall)
            for version, vrec in record.versions.items():
                d = vrec.stats.durations
                if d["success"].count or d["fail"].count:
                    versions[(name, version)] = _counts(vrec.stats)
                if vrec.reason and _is_error(record, vrec):
                    self._seen.setdefault((name, version, vrec.reason), wall)
        at = time.monotonic() if now is None else now
        self._ring.append(_Snapshot(at, c.cache_hits, c.cache_misses, versions))

    def start(self) -> None:
        """Sample every :data:`SAMPLE_SECS` on the running event loop, until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECS)
            self.sample()

    def _base(self, now: float) -> _Snapshot:
        """The oldest snapshot inside the window (the newest one, when all are older)."""
        for snap in self._ring:
            if now - snap.at <= WINDOW_SECS + SAMPLE_SECS:
                return snap
        return self._ring[-1]

    # -- the report ------------------------------------------------------------------------
    def report(self, now: float | None = None) -> dict[str, Any]:
        """Everything the page shows, as one JSON-ready dict (docs/status-page.md)."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        base = self._base(now)
        span = max(now - base.at, 1e-9)
        c = self.manager.counters
        hits, misses = c.cache_hits, c.cache_misses
        window_hits, window_misses = hits - base.cache_hits, misses - base.cache_misses
        models: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        seen = self._seen
        current: set[tuple[str, str, str]] = set()
        sizes = c.model_bytes
        models_by_name = self.manager.models
        for name in sorted(models_by_name):
            record = models_by_name[name]
            failed: list[tuple[str, str]] = []
            models.append(self._model(name, record, sizes.get(name, 0), base, span, failed))
            for version, reason in failed:
                key = (name, version, reason)
                current.add(key)
                first = seen.setdefault(key, wall)
                errors.append({"model": name, "version": version, "reason": reason, "at": first})
        for key in [k for k in seen if k not in current]:
            del seen[key]  # loaded since, or its files changed: no longer an error
        errors.sort(key=lambda e: (-e["at"], e["model"]))
        return {
            "server": {
                "name": "modelyard",
                "version": __version__,
                "uptime_seconds": round(now - self.started, 3),
                "started_at": self.started_wall,
                "model_control_mode": self.control_mode,
            },
            "window_seconds": round(span, 3),
            "models_total": len(models),
            "loaded_models": c.loaded_models,
            "memory": {
                "used_bytes": c.memory_bytes,
                "budget_bytes": c.memory_budget_bytes or None,
            },
            "cache": {
                "hits": hits,
                "misses": misses,
                "hit_ratio": _ratio(hits, misses),
                "window": {
                    "hits": window_hits,
                    "misses": window_misses,
                    "hit_ratio": _ratio(window_hits, window_misses),
                },
            },
            "loads": {
                "count": c.load.count,
                "seconds": c.load.sum,
                "wait_count": c.load_wait.count,
                "wait_seconds": c.load_wait.sum,
                "downloads": c.download.count,
                "download_seconds": c.download.sum,
                "unloads": c.unload.count,
                "evictions": c.evictions,
            },
            "models": models,
            "errors": errors[:MAX_ERRORS],
        }

    def _model(
        self,
        name: str,
        record: ModelRecord,
        size: int,
        base: _Snapshot,
        span: float,
        failed: list[tuple[str, str]],
    ) -> dict[str, Any]:
        """One model's row (one pass over its versions: a report walks every model); its
        errors are appended to ``failed``."""
        versions: list[dict[str, Any]] = []
        requests = failures = inferences = 0
        win_requests = win_failures = 0
        win_latency: list[int] | None = None
        loading = unloading = loaded = False
        if record.reason:
            failed.append(("", record.reason))
        items = record.versions.items()
        if len(record.versions) > 1:
            items = sorted(items, key=_by_number)  # type: ignore[assignment]
        for version, vrec in items:
            state = vrec.state
            loading = loading or state is State.LOADING
            unloading = unloading or state is State.UNLOADING
            loaded = loaded or vrec.runner is not None
            stats = vrec.stats
            d = stats.durations
            success, fail = d["success"].count, d["fail"].count
            requests += success
            failures += fail
            inferences += stats.inference_count
            row: dict[str, Any] = {
                "version": version,
                "state": state,  # a StrEnum: orjson writes its value
                "requests": success,
                "failures": fail,
            }
            if vrec.reason:
                row["reason"] = vrec.reason
                if _is_error(record, vrec):
                    failed.append((version, vrec.reason))
            versions.append(row)
            if not (success or fail):
                continue
            before = base.versions.get((name, version))
            if before is None or success < before[0] or fail < before[1]:
                before = (0, 0, ())  # none then (or counted afresh since)
            win_requests += success - before[0]
            win_failures += fail - before[1]
            if success > before[0]:
                latency = _latency(stats)
                delta = (
                    [a - b for a, b in zip(latency, before[2], strict=True)]
                    if before[2]
                    else list(latency)
                )
                win_latency = (
                    delta
                    if win_latency is None
                    else [a + b for a, b in zip(win_latency, delta, strict=True)]
                )
        window = _QUIET
        if win_requests or win_failures:
            p50 = p99 = None
            if win_latency is not None:
                p50 = _ms(quantile(0.5, LATENCY_BOUNDS_NS, win_latency))
                p99 = _ms(quantile(0.99, LATENCY_BOUNDS_NS, win_latency))
            window = {
                "requests": win_requests,
                "failures": win_failures,
                "requests_per_second": win_requests / span,
                "p50_ms": p50,
                "p99_ms": p99,
            }
        return {
            "name": name,
            "state": _state(record, loading, unloading, bool(failed)),
            "versions": versions,
            "size_bytes": size,
            "load_seconds": record.usage.load_seconds if loaded else None,
            "requests": requests,
            "failures": failures,
            "inferences": inferences,
            "window": window,
        }


def _by_number(item: tuple[str, VersionRecord]) -> int:
    return int(item[0])


def _ratio(hits: int, misses: int) -> float | None:
    total = hits + misses
    return round(hits / total, 4) if total else None


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)
