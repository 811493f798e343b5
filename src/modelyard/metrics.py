"""Prometheus metrics, built at scrape time from the statistics the server already keeps.

Nothing here runs on the inference path. The runner's ``ModelStats`` and the manager's
``ManagerCounters`` are plain integers bumped in place; ``ModelyardCollector`` reads them only
when ``/metrics`` is scraped, on a ``CollectorRegistry`` that ``build_registry`` creates and the
composition root owns (there is no global registry, and importing this module registers nothing).

Triton's per-model families, with Triton's names, types, help texts and labels (``model``,
``version``), so existing dashboards and alerts keep working:

- ``nv_inference_request_success`` (counter): successful requests.
- ``nv_inference_request_failure`` (counter): failed requests, with the ``reason`` label Triton
  added in July 2024 (triton-inference-server/core#377, release 24.07): REJECTED, CANCELED,
  BACKEND, OTHER. Every failure the runner records is an execution failure, so it counts as
  BACKEND; the other three are always there, at 0, as Triton shows them.
- ``nv_inference_count`` (counter): inferences (a batch of n counts n).
- ``nv_inference_exec_count`` (counter): model executions.
- ``nv_inference_request_duration_us``, ``nv_inference_queue_duration_us``,
  ``nv_inference_compute_input_duration_us``, ``nv_inference_compute_infer_duration_us``,
  ``nv_inference_compute_output_duration_us`` (counters): cumulative microseconds of successful
  requests, from ``ModelStats.durations`` (success, queue, compute_input, compute_infer,
  compute_output), nanoseconds truncated to microseconds.
- ``nv_inference_pending_request_count`` (gauge): requests in flight on the version now
  (Triton counts only those not yet handed to the backend; ours include executing ones).
- ``nv_model_load_duration_secs`` (gauge): how long the version took to load.

Triton's counters give means, not quantiles; one histogram per version gives those:

- ``modelyard_inference_request_duration_seconds`` (histogram, labels ``model``, ``version``):
  the successful requests' durations, the ones ``nv_inference_request_duration_us`` sums,
  over ``ModelStats.latency`` (100 µs to 60 s), so ``histogram_quantile`` gives p50/p99.

Triton's counters carry no ``_total`` suffix; ``render`` keeps them that way.

Model-store families, which SageMaker reports for multi-model endpoints and Triton lacks, from
``ManagerCounters`` (the ``_seconds`` families are histograms over ``SECONDS_BUCKETS``):

- ``modelyard_model_cache_hits_total`` (counter): requests whose model was already loaded.
- ``modelyard_model_cache_misses_total`` (counter): requests that waited for a load.
- ``modelyard_model_evictions_total`` (counter): models unloaded to make room for another.
- ``modelyard_loaded_models`` (gauge): models loaded now.
- ``modelyard_model_load_wait_seconds`` (histogram): how long a request waited for its model.
- ``modelyard_model_download_seconds`` (histogram): fetching a model's files from the store.
- ``modelyard_model_load_seconds`` (histogram): loading a model.
- ``modelyard_model_unload_seconds`` (histogram): unloading a model (drain, then close).
- ``modelyard_model_memory_bytes`` (gauge): memory the loaded models use.
- ``modelyard_model_memory_budget_bytes`` (gauge): what they may use before evictions start.
- ``modelyard_model_memory_estimate_bytes`` (gauge, label ``model``): what admission books for
  a model (loaded or not): its learned size, the reservation for its next load.
- ``modelyard_model_cache_lookups_total`` (counter, labels ``model``, ``result``: hit, miss):
  the two counters above, per model.
- ``modelyard_model_load_failures_total`` (counter, label ``model``): loads that did not end
  with the model loaded (its files, its config, its runtime, or no memory for it).
- ``modelyard_request_errors_total`` (counter, labels ``model``, ``reason``): inference
  requests answered with an error, by ``error_reason`` (``ERROR_REASONS``, a fixed set);
  ``model`` is empty for a name the server does not know, so clients cannot grow the series.

``build_registry`` adds prometheus_client's ``ProcessCollector`` (``process_*``: resident
memory, CPU seconds, open files) on the same registry.
"""

from __future__ import annotations

import functools
import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from modelyard.errors import (
    ConfigError,
    InsufficientMemory,
    InvalidArgument,
    MemoryBusy,
    MissingDependency,
    ModelyardError,
    NotFound,
    Unavailable,
    Unsupported,
)

__all__ = [
    "CONTENT_TYPE",
    "ERROR_REASONS",
    "SECONDS_BUCKETS",
    "TRITON_COUNTERS",
    "CustomMetrics",
    "DurationLike",
    "ManagerCounters",
    "ModelyardCollector",
    "Snapshot",
    "StatsLike",
    "Timing",
    "VersionSample",
    "build_registry",
    "error_reason",
    "render",
]

# -- what the collector reads ------------------------------------------------------------


class DurationLike(Protocol):
    @property
    def count(self) -> int: ...
    @property
    def ns(self) -> int: ...


class StatsLike(Protocol):
    """The fields of ``modelyard.scheduling.stats.ModelStats`` the metrics read."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def inference_count(self) -> int: ...
    @property
    def execution_count(self) -> int: ...
    @property
    def durations(self) -> Mapping[str, DurationLike]: ...
    @property
    def latency(self) -> Sequence[int]: ...  # successful requests per latency bucket


@dataclass(frozen=True, slots=True)
class VersionSample:
    """One model version at scrape time: its statistics plus what only the manager knows."""

    stats: StatsLike
    pending: int = 0  # ModelRunner.inflight
    load_seconds: float | None = None  # None: no nv_model_load_duration_secs sample
    # the upper bounds of ``stats.latency`` (ns); none: no latency histogram sample
    latency_bounds_ns: tuple[int, ...] = ()


Snapshot = Callable[[], Iterable[StatsLike | VersionSample]]

# Upper bounds (seconds) of the model-store histograms: loads range from milliseconds (a small
# ONNX file in the page cache) to minutes (a large model fetched from S3).
SECONDS_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


@dataclass(slots=True)
class Timing:
    """A histogram kept as plain numbers: one count per bucket (not cumulative) and a sum.

    ``observe`` is a bisect and two additions. The total count is the sum of the buckets, so a
    scrape never sees a count that disagrees with its buckets.
    """

    buckets: list[int] = field(default_factory=lambda: [0] * (len(SECONDS_BUCKETS) + 1))
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(SECONDS_BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.buckets)


@dataclass(slots=True)
class ManagerCounters:
    """Model-store counters the manager owns and bumps in place; read at scrape time."""

    cache_hits: int = 0
    cache_misses: int = 0
    evictions: int = 0
    loaded_models: int = 0
    memory_bytes: int = 0
    memory_budget_bytes: int = 0
    model_bytes: dict[str, int] = field(default_factory=dict)  # model -> learned size
    model_hits: dict[str, int] = field(default_factory=dict)  # cache_hits, per model
    model_misses: dict[str, int] = field(default_factory=dict)  # cache_misses, per model
    load_failures: dict[str, int] = field(default_factory=dict)  # model -> failed loads
    request_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, reason)
    load_wait: Timing = field(default_factory=Timing)
    download: Timing = field(default_factory=Timing)
    load: Timing = field(default_factory=Timing)
    unload: Timing = field(default_factory=Timing)

    def request_failed(self, model: str, exc: BaseException) -> None:
        """Counts an inference request answered with an error; ``model`` is "" for a name
        the server does not know."""
        key = (model, error_reason(exc))
        self.request_errors[key] = self.request_errors.get(key, 0) + 1

    def load_failed(self, model: str) -> None:
        self.load_failures[model] = self.load_failures.get(model, 0) + 1


# the ``reason`` of ``modelyard_request_errors_total``, most specific first
ERROR_REASONS = (
    "invalid_request",  # the request itself (shape, datatype, body, unsupported for the model)
    "model_not_found",  # no such model or version in the store
    "out_of_memory",  # the model does not fit the memory budget now (or ever)
    "unavailable",  # not ready: still loading after --load-wait-timeout, draining, failed before
    "load_failed",  # the load failed: its files, config, environment or a missing extra
    "backend",  # the model failed while executing (its runtime or its own code)
    "internal",  # anything else: a bug in modelyard
)


def error_reason(exc: BaseException) -> str:
    """The ``reason`` label of an inference request's error, one of ``ERROR_REASONS``."""
    if not isinstance(exc, ModelyardError):
        return "internal"
    if exc.from_model:
        return "backend"  # a model's own TritonError, whatever its type says
    if isinstance(exc, InvalidArgument | Unsupported):
        return "invalid_request"
    if isinstance(exc, NotFound):
        return "model_not_found"
    if isinstance(exc, MemoryBusy | InsufficientMemory):
        return "out_of_memory"
    if isinstance(exc, Unavailable):
        return "unavailable"
    if isinstance(exc, ConfigError | MissingDependency):
        return "load_failed"
    return "backend"


# -- Triton's families ---------------------------------------------------------------------

_LABELS = ("model", "version")
_FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

# (name, help, ModelStats.durations key) of Triton's cumulative latency counters
_DURATIONS = (
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        "success",
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        "queue",
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        "compute_input",
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        "compute_infer",
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
        "compute_output",
    ),
)

TRITON_COUNTERS: tuple[str, ...] = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    *(name for name, _, _ in _DURATIONS),
)


def _counter(name: str, documentation: str) -> Metric:
    """A counter whose samples carry the family's own name, as Triton's do (no ``_total``)."""
    return Metric(name, documentation, "counter")


class ModelyardCollector(Collector):
    """Yields Triton's per-version families and the model-store families, at scrape time."""

    def __init__(self, snapshot: Snapshot, counters: ManagerCounters) -> None:
        self._snapshot = snapshot
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        yield from self._triton()
        yield from self._store()

    def describe(self) -> Iterator[Metric]:
        # registering must not call the snapshot (the manager may not exist yet)
        return iter(())

    def _triton(self) -> Iterator[Metric]:
        success = _counter(
            "nv_inference_request_success",
            "Number of successful inference requests, all batch sizes",
        )
        failure = _counter(
            "nv_inference_request_failure", "Number of failed inference requests, all batch sizes"
        )
        count = _counter(
            "nv_inference_count",
            "Number of inferences performed (does not include cached requests)",
        )
        exec_count = _counter(
            "nv_inference_exec_count",
            "Number of model executions performed (does not include cached requests)",
        )
        durations = [(_counter(name, doc), key) for name, doc, key in _DURATIONS]
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            labels=_LABELS,
        )
        load = GaugeMetricFamily(
            "nv_model_load_duration_secs", "Model load time in seconds", labels=_LABELS
        )
        latency = HistogramMetricFamily(
            "modelyard_inference_request_duration_seconds",
            "Duration of successful inference requests, in seconds",
            labels=_LABELS,
        )
        for item in self._snapshot():
            sample = item if isinstance(item, VersionSample) else VersionSample(item)
            stats = sample.stats
            labels = {"model": stats.name, "version": stats.version}
            d = stats.durations
            success.add_sample(success.name, labels, d["success"].count)
            for reason in _FAILURE_REASONS:
                value = d["fail"].count if reason == "BACKEND" else 0
                failure.add_sample(failure.name, {**labels, "reason": reason}, value)
            count.add_sample(count.name, labels, stats.inference_count)
            exec_count.add_sample(exec_count.name, labels, stats.execution_count)
            for family, key in durations:
                family.add_sample(family.name, labels, d[key].ns // 1000)
            pending.add_metric([stats.name, stats.version], sample.pending)
            if sample.load_seconds is not None:
                load.add_metric([stats.name, stats.version], sample.load_seconds)
            if sample.latency_bounds_ns:
                bounds = _le_labels(sample.latency_bounds_ns)
                cumulative = zip(bounds, itertools.accumulate(stats.latency), strict=True)
                latency.add_metric(
                    [stats.name, stats.version], list(cumulative), d["success"].ns / 1e9
                )
        yield success
        yield failure
        yield count
        yield exec_count
        for family, _ in durations:
            yield family
        yield pending
        yield load
        yield latency

    def _store(self) -> Iterator[Metric]:
        c = self._counters
        yield CounterMetricFamily(
            "modelyard_model_cache_hits",
            "Requests whose model was already loaded",
            value=c.cache_hits,
        )
        yield CounterMetricFamily(
            "modelyard_model_cache_misses",
            "Requests that had to wait for their model to be loaded",
            value=c.cache_misses,
        )
        yield CounterMetricFamily(
            "modelyard_model_evictions",
            "Models unloaded to make room for another model",
            value=c.evictions,
        )
        yield GaugeMetricFamily(
            "modelyard_loaded_models", "Number of models loaded", value=c.loaded_models
        )
        yield _histogram(
            "modelyard_model_load_wait_seconds",
            "Time a request waited for its model to be loaded, in seconds",
            c.load_wait,
        )
        yield _histogram(
            "modelyard_model_download_seconds",
            "Time spent fetching a model's files from the model store, in seconds",
            c.download,
        )
        yield _histogram(
            "modelyard_model_load_seconds", "Time spent loading a model, in seconds", c.load
        )
        yield _histogram(
            "modelyard_model_unload_seconds",
            "Time spent unloading a model (draining and closing), in seconds",
            c.unload,
        )
        yield GaugeMetricFamily(
            "modelyard_model_memory_bytes",
            "Memory used by the loaded models, in bytes",
            value=c.memory_bytes,
        )
        yield GaugeMetricFamily(
            "modelyard_model_memory_budget_bytes",
            "Memory the loaded models may use before models are evicted, in bytes",
            value=c.memory_budget_bytes,
        )
        estimate = GaugeMetricFamily(
            "modelyard_model_memory_estimate_bytes",
            "Memory a model is booked for when loaded (its learned size), in bytes",
            labels=["model"],
        )
        for name, size in sorted(c.model_bytes.items()):
            estimate.add_metric([name], size)
        yield estimate
        lookups = CounterMetricFamily(
            "modelyard_model_cache_lookups",
            "Requests whose model was already loaded (hit) or had to be loaded (miss), per model",
            labels=["model", "result"],
        )
        for result, per_model in (("hit", c.model_hits), ("miss", c.model_misses)):
            for name, n in sorted(per_model.items()):
                lookups.add_metric([name, result], n)
        yield lookups
        failures = CounterMetricFamily(
            "modelyard_model_load_failures",
            "Model loads that did not end with the model loaded",
            labels=["model"],
        )
        for name, n in sorted(c.load_failures.items()):
            failures.add_metric([name], n)
        yield failures
        errors = CounterMetricFamily(
            "modelyard_request_errors",
            "Inference requests answered with an error, by reason",
            labels=["model", "reason"],
        )
        for (name, reason), n in sorted(c.request_errors.items()):
            errors.add_metric([name, reason], n)
        yield errors


def _histogram(name: str, documentation: str, timing: Timing) -> HistogramMetricFamily:
    cumulative: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip((*SECONDS_BUCKETS, float("inf")), timing.buckets, strict=True):
        total += n
        cumulative.append((_bound(bound), total))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=timing.sum)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@functools.cache
def _le_labels(bounds_ns: tuple[int, ...]) -> tuple[str, ...]:
    """The ``le`` labels of a latency histogram, in seconds, from its bounds in ns."""
    return (*(_bound(ns / 1e9) for ns in bounds_ns), "+Inf")


# -- registry and exposition ----------------------------------------------------------------


class CustomMetrics(Collector):
    """Metric families that models create themselves (Triton's ``pb_utils.MetricFamily``).

    The registry is server-wide, as Triton's is: a family or a labelled metric created again
    (another instance of the model, a restarted worker) is the same one, and it lives while
    any owner holds it. Owners are worker processes; a worker that goes away drops its hold.
    """

    KINDS = ("counter", "gauge", "histogram")

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str]] = {}  # name -> (kind, description)
        # (family, sorted labels) -> [value, sum, count, buckets, bucket counts, owners]
        self._metrics: dict[tuple[str, tuple[tuple[str, str], ...]], _CustomValue] = {}

    def family(self, name: str, description: str, kind: str) -> None:
        known = self._families.get(name)
        if known is not None and known[0] != kind:
            raise ValueError(f"metric family '{name}' already exists as a {known[0]}, not a {kind}")
        if known is None:
            self._families[name] = (kind, description)

    def metric(
        self, family: str, labels: Mapping[str, str], buckets: list[float] | None, owner: object
    ) -> tuple[str, tuple[tuple[str, str], ...]]:
        key = (family, tuple(sorted(labels.items())))
        value = self._metrics.get(key)
        if value is None:
            value = self._metrics[key] = _CustomValue(buckets)
        value.owners.add(id(owner))
        return key

    def update(self, key: tuple[str, tuple[tuple[str, str], ...]], how: str, amount: float) -> None:
        value = self._metrics.get(key)
        if value is None:
            return
        if how == "inc":
            value.value += amount
        elif how == "set":
            value.value = amount
        elif how == "obs":
            value.observe(amount)

    def release(self, owner: object) -> None:
        for key in list(self._metrics):
            value = self._metrics[key]
            value.owners.discard(id(owner))
            if not value.owners:
                del self._metrics[key]
        used = {family for family, _ in self._metrics}
        for name in list(self._families):
            if name not in used:
                del self._families[name]

    def integral_values(self, body: bytes) -> bytes:
        """Writes whole values of the models' own metrics as integers (``3``, not ``3.0``),
        as Triton's exporter does: scripts that read these lines see what Triton shows."""
        if not self._families:
            return body
        names = tuple(n.encode() for n in self._families)
        lines = body.split(b"\n")
        for i, line in enumerate(lines):
            if line.endswith(b".0") and line.startswith(names):
                lines[i] = line[:-2]
        return b"\n".join(lines)

    def counter_names(self) -> list[str]:
        return [n for n, (kind, _) in self._families.items() if kind == "counter"]

    def collect(self) -> Iterator[Metric]:
        by_family: dict[str, list[tuple[tuple[tuple[str, str], ...], _CustomValue]]] = {}
        for (family, labels), value in self._metrics.items():
            by_family.setdefault(family, []).append((labels, value))
        for name, (kind, description) in self._families.items():
            metric = Metric(name, description, kind)
            for labels, value in by_family.get(name, ()):
                lab = dict(labels)
                if kind == "histogram":
                    assert value.buckets is not None
                    for bound, count in zip(
                        [*value.buckets, float("inf")], value.cumulative(), strict=True
                    ):
                        metric.add_sample(f"{name}_bucket", {**lab, "le": _bound(bound)}, count)
                    metric.add_sample(f"{name}_sum", lab, value.sum)
                    metric.add_sample(f"{name}_count", lab, value.count)
                else:
                    metric.add_sample(name, lab, value.value)
            yield metric

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _CustomValue:
    __slots__ = ("buckets", "count", "counts", "owners", "sum", "value")

    def __init__(self, buckets: list[float] | None) -> None:
        self.value = 0.0
        self.sum = 0.0
        self.count = 0
        self.buckets = sorted(buckets) if buckets else None
        self.counts = [0] * (len(self.buckets) + 1) if self.buckets else []
        self.owners: set[int] = set()

    def observe(self, amount: float) -> None:
        assert self.buckets is not None
        self.sum += amount
        self.count += 1
        self.counts[bisect_left(self.buckets, amount)] += 1

    def cumulative(self) -> list[int]:
        return list(itertools.accumulate(self.counts))


def build_registry(
    snapshot: Snapshot, counters: ManagerCounters, custom: CustomMetrics | None = None
) -> CollectorRegistry:
    """A fresh registry with the modelyard collector and the process collector on it (and
    the models' own metrics, when given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelyardCollector(snapshot, counters))
    if custom is not None:
        registry.register(custom)
    ProcessCollector(registry=registry)
    return registry


# generate_latest names every counter family ``<name>_total`` in its HELP and TYPE lines;
# Triton's counters have no such suffix, so those two lines get their family's real name back.
_TOTAL_FIXES = tuple(
    (f"# {kind} {name}_total ".encode(), f"# {kind} {name} ".encode())
    for name in TRITON_COUNTERS
    for kind in ("HELP", "TYPE")
)


# the text format Triton serves (prometheus_client's CONTENT_TYPE_LATEST is 1.0.0 from 0.22 on)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(registry: CollectorRegistry, custom: CustomMetrics | None = None) -> tuple[bytes, str]:
    """The Prometheus text exposition (format 0.0.4, as Triton serves) and its content type."""
    body = generate_latest(registry)
    for wrong, right in _TOTAL_FIXES:
        body = body.replace(wrong, right, 1)
    if custom is not None:
        for name in custom.counter_names():
            for kind in ("HELP", "TYPE"):
                body = body.replace(
                    f"# {kind} {name}_total ".encode(), f"# {kind} {name} ".encode(), 1
                )
        body = custom.integral_values(body)
    return body, CONTENT_TYPE
