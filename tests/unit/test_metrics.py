"""Metrics: Triton's families from ModelStats, the model-store families, fresh registries."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelyard.errors import (
    ConfigError,
    DecoupledModel,
    Internal,
    InvalidArgument,
    MemoryBusy,
    ModelNotFound,
    ModelTooLarge,
    ModelyardError,
    Unavailable,
)
from modelyard.metrics import (
    ERROR_REASONS,
    SECONDS_BUCKETS,
    TRITON_COUNTERS,
    ManagerCounters,
    StatsLike,
    Timing,
    VersionSample,
    build_registry,
    error_reason,
    render,
)
from modelyard.scheduling.stats import LATENCY_BOUNDS_NS, ModelStats

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TRITON_FAMILIES = {
    "nv_inference_request_success": (
        "counter",
        "Number of successful inference requests, all batch sizes",
    ),
    "nv_inference_request_failure": (
        "counter",
        "Number of failed inference requests, all batch sizes",
    ),
    "nv_inference_count": (
        "counter",
        "Number of inferences performed (does not include cached requests)",
    ),
    "nv_inference_exec_count": (
        "counter",
        "Number of model executions performed (does not include cached requests)",
    ),
    "nv_inference_request_duration_us": (
        "counter",
        "Cumulative inference request duration in microseconds (includes cached requests)",
    ),
    "nv_inference_queue_duration_us": (
        "counter",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
    ),
    "nv_inference_compute_input_duration_us": (
        "counter",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
    ),
    "nv_inference_compute_infer_duration_us": (
        "counter",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
    ),
    "nv_inference_compute_output_duration_us": (
        "counter",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
    ),
    "nv_inference_pending_request_count": (
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
    ),
    "nv_model_load_duration_secs": ("gauge", "Model load time in seconds"),
}


def _stats() -> tuple[ModelStats, ModelStats]:
    a = ModelStats("resnet", "1")
    a.record_success(4, 10_500, 1_000, 2_000, 6_000, 1_500)
    a.record_success(1, 4_700, 200, 1_000, 3_000, 500)
    a.record_failure(3_000)
    a.record_failure(2_000)
    b = ModelStats("bert", "3")
    b.record_success(8, 2_000_000, 0, 500_000, 1_400_000, 100_000)
    return a, b


def _scrape(snapshot: Iterable[StatsLike | VersionSample], counters: ManagerCounters) -> str:
    items = list(snapshot)
    body, content_type = render(build_registry(lambda: items, counters))
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode()


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_triton_families_have_triton_names_types_and_help() -> None:
    a, b = _stats()
    text = _scrape([VersionSample(a, pending=2, load_seconds=1.25), b], ManagerCounters())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, doc) in TRITON_FAMILIES.items():
        assert (families[name].type, families[name].documentation) == (kind, doc)
        # Triton's exact exposition: no ``_total`` on counters, in HELP, TYPE or samples
        assert f"# HELP {name} {doc}\n# TYPE {name} {kind}\n" in text
        assert f"{name}_total" not in text
        assert {tuple(sorted(s.labels)) for s in families[name].samples} == (
            {("model", "reason", "version")}
            if name == "nv_inference_request_failure"
            else {("model", "version")}
        )
    assert set(TRITON_COUNTERS) == {k for k, (t, _) in TRITON_FAMILIES.items() if t == "counter"}
    assert 'nv_inference_request_success{model="resnet",version="1"} 2.0\n' in text


def test_triton_values_come_from_model_stats() -> None:
    a, b = _stats()
    text = _scrape([VersionSample(a, pending=2, load_seconds=1.25), b], ManagerCounters())
    got = _samples(text)
    # the parser names counter samples ``<family>_total`` whatever the text says
    expected = {
        ("nv_inference_request_success_total", "resnet", "1"): 2,
        ("nv_inference_request_success_total", "bert", "3"): 1,
        ("nv_inference_count_total", "resnet", "1"): 5,
        ("nv_inference_count_total", "bert", "3"): 8,
        ("nv_inference_exec_count_total", "resnet", "1"): 2,
        ("nv_inference_exec_count_total", "bert", "3"): 1,
        # nanoseconds summed, then truncated to microseconds
        ("nv_inference_request_duration_us_total", "resnet", "1"): 15,
        ("nv_inference_queue_duration_us_total", "resnet", "1"): 1,
        ("nv_inference_compute_input_duration_us_total", "resnet", "1"): 3,
        ("nv_inference_compute_infer_duration_us_total", "resnet", "1"): 9,
        ("nv_inference_compute_output_duration_us_total", "resnet", "1"): 2,
        ("nv_inference_request_duration_us_total", "bert", "3"): 2000,
        ("nv_inference_queue_duration_us_total", "bert", "3"): 0,
        ("nv_inference_compute_input_duration_us_total", "bert", "3"): 500,
        ("nv_inference_compute_infer_duration_us_total", "bert", "3"): 1400,
        ("nv_inference_compute_output_duration_us_total", "bert", "3"): 100,
        ("nv_inference_pending_request_count", "resnet", "1"): 2,
        ("nv_inference_pending_request_count", "bert", "3"): 0,
        ("nv_model_load_duration_secs", "resnet", "1"): 1.25,
    }
    for (name, model, version), value in expected.items():
        assert got[_key(name, model=model, version=version)] == value, name
    for reason, resnet in [("REJECTED", 0), ("CANCELED", 0), ("BACKEND", 2), ("OTHER", 0)]:
        name = "nv_inference_request_failure_total"
        assert got[_key(name, model="resnet", reason=reason, version="1")] == resnet
        assert got[_key(name, model="bert", reason=reason, version="3")] == 0
    # a version without a known load time has no load-duration sample
    assert not any(n == "nv_model_load_duration_secs" and ("model", "bert") in k for n, k in got)
    nv = {(n, k) for n, k in got if n.startswith("nv_")}
    assert len(nv) == 2 * (len(TRITON_FAMILIES) - 1 + 3) + 1  # 4 failure reasons, 1 load time


def test_no_versions_no_samples_but_families_stay() -> None:
    text = _scrape([], ManagerCounters())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(families[name].samples == [] for name in TRITON_FAMILIES)


def test_manager_counters() -> None:
    c = ManagerCounters(
        cache_hits=7,
        cache_misses=2,
        evictions=1,
        loaded_models=3,
        memory_bytes=3 << 30,
        memory_budget_bytes=8 << 30,
        model_bytes={"a": 5 << 20},
    )
    c.load_wait.observe(0.2)
    c.load_wait.observe(3.0)
    c.download.observe(12.0)
    c.load.observe(0.004)
    c.unload.observe(1000.0)  # beyond the last bound: +Inf only
    text = _scrape([], c)
    got = _samples(text)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert {k: v for k, v in types.items() if k.startswith("modelyard_")} == {
        "modelyard_inference_request_duration_seconds": "histogram",
        "modelyard_model_cache_hits": "counter",
        "modelyard_model_cache_misses": "counter",
        "modelyard_model_evictions": "counter",
        "modelyard_loaded_models": "gauge",
        "modelyard_model_load_wait_seconds": "histogram",
        "modelyard_model_download_seconds": "histogram",
        "modelyard_model_load_seconds": "histogram",
        "modelyard_model_unload_seconds": "histogram",
        "modelyard_model_memory_bytes": "gauge",
        "modelyard_model_memory_budget_bytes": "gauge",
        "modelyard_model_memory_estimate_bytes": "gauge",
        "modelyard_model_cache_lookups": "counter",
        "modelyard_model_load_failures": "counter",
        "modelyard_request_errors": "counter",
    }
    assert got[_key("modelyard_model_cache_hits_total")] == 7
    assert got[_key("modelyard_model_cache_misses_total")] == 2
    assert got[_key("modelyard_model_evictions_total")] == 1
    assert got[_key("modelyard_loaded_models")] == 3
    assert got[_key("modelyard_model_memory_bytes")] == 3 << 30
    assert got[_key("modelyard_model_memory_budget_bytes")] == 8 << 30
    assert got[_key("modelyard_model_memory_estimate_bytes", model="a")] == 5 << 20
    wait = "modelyard_model_load_wait_seconds"
    assert got[_key(f"{wait}_count")] == 2
    assert got[_key(f"{wait}_sum")] == pytest.approx(3.2)
    assert got[_key(f"{wait}_bucket", le="0.1")] == 0
    assert got[_key(f"{wait}_bucket", le="0.25")] == 1
    assert got[_key(f"{wait}_bucket", le="2.5")] == 1
    assert got[_key(f"{wait}_bucket", le="5.0")] == 2
    assert got[_key(f"{wait}_bucket", le="+Inf")] == 2
    assert got[_key("modelyard_model_download_seconds_bucket", le="10.0")] == 0
    assert got[_key("modelyard_model_download_seconds_bucket", le="30.0")] == 1
    assert got[_key("modelyard_model_load_seconds_bucket", le="0.005")] == 1
    assert got[_key("modelyard_model_unload_seconds_bucket", le="600.0")] == 0
    assert got[_key("modelyard_model_unload_seconds_bucket", le="+Inf")] == 1
    buckets = [k for k in got if k[0] == f"{wait}_bucket"]
    assert len(buckets) == len(SECONDS_BUCKETS) + 1


def test_timing_bound_is_inclusive() -> None:
    t = Timing()
    t.observe(SECONDS_BUCKETS[0])  # le="0.005" counts 0.005 itself
    assert t.buckets[0] == 1 and t.count == 1


def test_scrape_reads_live_state() -> None:
    """The collector holds the callables, not copies: each scrape sees the current numbers."""
    stats = ModelStats("m", "1")
    counters = ManagerCounters()
    registry = build_registry(lambda: [stats], counters)
    before = _samples(render(registry)[0].decode())
    stats.record_success(1, 1_000, 0, 0, 1_000, 0)
    counters.cache_hits += 1
    after = _samples(render(registry)[0].decode())
    key = _key("nv_inference_request_success_total", model="m", version="1")
    assert (before[key], after[key]) == (0, 1)
    hits = _key("modelyard_model_cache_hits_total")
    assert (before[hits], after[hits]) == (0, 1)


def test_registries_share_no_state() -> None:
    a, b = _stats()
    first = build_registry(lambda: [a], ManagerCounters(cache_hits=5))
    second = build_registry(lambda: [b], ManagerCounters())
    one, two = _samples(render(first)[0].decode()), _samples(render(second)[0].decode())
    models = {dict(k).get("model") for _, k in one} - {None}
    assert models == {"resnet"}
    assert {dict(k).get("model") for _, k in two} - {None} == {"bert"}
    assert one[_key("modelyard_model_cache_hits_total")] == 5
    assert two[_key("modelyard_model_cache_hits_total")] == 0


def test_registration_does_not_call_the_snapshot() -> None:
    def snapshot() -> list[ModelStats]:
        raise AssertionError("called at registration")

    build_registry(snapshot, ManagerCounters())


def test_process_metrics_on_the_same_registry() -> None:
    text = render(build_registry(list, ManagerCounters()))[0].decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    if "process_resident_memory_bytes" not in names:  # ProcessCollector reads /proc: Linux only
        pytest.skip("no /proc on this platform")
    assert "process_cpu_seconds" in names


def test_latency_histogram_per_version_from_model_stats() -> None:
    a = ModelStats("resnet", "1")
    a.record_success(1, 50_000, 0, 0, 50_000, 0)  # 50 µs: the first bucket (le 100 µs)
    a.record_success(1, 3_000_000, 0, 0, 3_000_000, 0)  # 3 ms: le 5 ms
    a.record_success(1, 100 * 10**9, 0, 0, 0, 0)  # 100 s: beyond the last bound
    a.record_failure(7_000_000)  # failures are not in the latency histogram
    text = _scrape([VersionSample(a, latency_bounds_ns=LATENCY_BOUNDS_NS)], ManagerCounters())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["modelyard_inference_request_duration_seconds"].type == "histogram"
    got = _samples(text)
    name = "modelyard_inference_request_duration_seconds"
    labels = {"model": "resnet", "version": "1"}
    assert got[_key(f"{name}_bucket", le="0.0001", **labels)] == 1
    assert got[_key(f"{name}_bucket", le="0.0025", **labels)] == 1
    assert got[_key(f"{name}_bucket", le="0.005", **labels)] == 2
    assert got[_key(f"{name}_bucket", le="60.0", **labels)] == 2
    assert got[_key(f"{name}_bucket", le="+Inf", **labels)] == 3
    assert got[_key(f"{name}_count", **labels)] == 3
    assert got[_key(f"{name}_sum", **labels)] == pytest.approx(100.00305)
    bounds = [k for k in got if k[0] == f"{name}_bucket"]
    assert len(bounds) == len(LATENCY_BOUNDS_NS) + 1
    # the same requests nv_inference_request_duration_us sums, in microseconds
    assert got[_key("nv_inference_request_duration_us_total", **labels)] == 100_003_050


def test_no_latency_bounds_no_latency_sample() -> None:
    text = _scrape([ModelStats("m", "1")], ManagerCounters())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["modelyard_inference_request_duration_seconds"].samples == []


def test_per_model_lookups_load_failures_and_request_errors() -> None:
    c = ManagerCounters(model_hits={"a": 5, "b": 1}, model_misses={"a": 2})
    c.load_failed("b")
    c.load_failed("b")
    c.request_failed("a", InvalidArgument("bad shape"))
    c.request_failed("a", InvalidArgument("bad datatype"))
    c.request_failed("", ModelNotFound("nope"))
    got = _samples(_scrape([], c))
    lookups = "modelyard_model_cache_lookups_total"
    assert got[_key(lookups, model="a", result="hit")] == 5
    assert got[_key(lookups, model="a", result="miss")] == 2
    assert got[_key(lookups, model="b", result="hit")] == 1
    assert _key(lookups, model="b", result="miss") not in got
    assert got[_key("modelyard_model_load_failures_total", model="b")] == 2
    errors = "modelyard_request_errors_total"
    assert got[_key(errors, model="a", reason="invalid_request")] == 2
    assert got[_key(errors, model="", reason="model_not_found")] == 1
    assert len([k for k in got if k[0] == errors]) == 2


def _from_model() -> ModelyardError:
    exc = InvalidArgument("the model said no")
    exc.from_model = True
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (InvalidArgument("shape"), "invalid_request"),
        (DecoupledModel("decoupled", "m"), "invalid_request"),
        (ModelNotFound("m"), "model_not_found"),
        (MemoryBusy("busy"), "out_of_memory"),
        (ModelTooLarge("too large"), "out_of_memory"),
        (Unavailable("still loading"), "unavailable"),
        (ConfigError("bad config"), "load_failed"),
        (Internal("runtime failed"), "backend"),
        (_from_model(), "backend"),
        (RuntimeError("a bug"), "internal"),
    ],
)
def test_error_reasons(exc: BaseException, reason: str) -> None:
    assert error_reason(exc) == reason
    assert reason in ERROR_REASONS
