"""The ONNX thread-pool rule: the decision from two measured costs, timing, zero inputs,
and real loads of a cheap and of a heavy model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.cpus import usable_cores
from modelyard.runtimes import _onnx_threads as threads
from modelyard.runtimes.base import RuntimeOptions
from modelyard.runtimes.onnx import OnnxFactory
from tests.factories.onnx_models import add_sub, identity, mlp


def test_cheap_models_keep_one_thread() -> None:
    pool, reason = threads.choose(7_000, None, 8)
    assert not pool and "7 µs" in reason
    assert not threads.wants_pool_trial(7_000, 8)
    assert not threads.wants_pool_trial(threads.POOL_MIN_NS - 1, 8)


def test_heavy_models_get_the_pool_only_when_it_pays() -> None:
    assert threads.wants_pool_trial(threads.POOL_MIN_NS, 2)
    assert threads.choose(4_000_000, 2_000_000, 2)[0]
    keep, reason = threads.choose(4_000_000, 3_500_000, 2)
    assert not keep and "less than" in reason


def test_one_core_or_no_measurement_means_one_thread() -> None:
    assert not threads.wants_pool_trial(9_000_000, 1)
    assert not threads.choose(9_000_000, None, 1)[0]
    assert not threads.wants_pool_trial(None, 8)
    assert "could not be measured" in threads.choose(None, None, 8)[1]


def _ticking(step: int) -> Callable[[], int]:
    """A clock that moves ``step`` ns each time it is read."""
    now = iter(range(0, 10**15, step))
    return lambda: next(now)


def test_time_runs_skips_the_warm_up_and_keeps_the_fastest() -> None:
    # the clock is read once before the runs, then at each run's start and end
    runs = [(0, 900), (900, 1000), (1000, 1200), (1200, 1250), (1250, 1400), (1400, 1500)]
    ticks = iter([0] + [t for pair in runs for t in pair])
    assert threads.time_runs(lambda: None, clock=lambda: next(ticks)) == 50


def test_time_runs_stops_at_its_budget() -> None:
    # each run reads 20 ms: the third ends 120 ms after the start, past the 100 ms budget
    calls: list[int] = []
    assert threads.time_runs(lambda: calls.append(1), clock=_ticking(20_000_000)) == 20_000_000
    assert len(calls) == 3


def test_a_run_longer_than_the_budget_is_timed_once() -> None:
    calls: list[int] = []
    assert threads.time_runs(lambda: calls.append(1), clock=_ticking(400_000_000)) == 400_000_000
    assert len(calls) == 1


def test_time_runs_is_none_when_the_model_fails() -> None:
    def boom() -> None:
        raise RuntimeError("bad input")

    assert threads.time_runs(boom) is None


def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_zero_feed_fills_every_input_with_unknown_dims_as_one() -> None:
    session = _session(mlp())
    feed = threads.zero_feed(session)
    assert feed is not None
    ((_name, arr),) = feed.items()
    assert arr.shape == (1, 64) and arr.dtype == np.float32 and not arr.any()
    session.run(None, feed)
    two = threads.zero_feed(_session(add_sub()))
    assert two is not None and len(two) == 2


def test_zero_feed_makes_strings(tmp_path: Path) -> None:
    from onnx import TensorProto

    session = _session(identity(TensorProto.STRING, ["n"]))
    feed = threads.zero_feed(session)
    assert feed is not None
    session.run(None, feed)


def _load(tmp_path: Path, model: bytes, text: str = "") -> object:
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    config = text_format.Parse(text, mc.ModelConfig())
    config.name = "m"
    factory = OnnxFactory()
    factory.autocomplete(config, path, RuntimeOptions())
    return factory.load(config, path, RuntimeOptions())


def _thread_count() -> int:
    # onnxruntime's pool threads are native: count the process's OS threads
    return len(list(Path("/proc/self/task").iterdir()))


def test_a_cheap_model_loads_on_one_thread_and_starts_no_pool(tmp_path: Path) -> None:
    before = _thread_count()
    runtime = _load(tmp_path, mlp())
    assert _thread_count() == before
    choice = runtime.threads  # type: ignore[attr-defined]
    assert choice.threads == 1 and not choice.spinning
    assert choice.cost_ns is not None and choice.cost_ns < threads.POOL_MIN_NS
    assert runtime.cost_ns == choice.cost_ns  # type: ignore[attr-defined]


def test_a_heavy_model_is_timed_on_a_pool_and_the_choice_matches_the_threads(
    tmp_path: Path,
) -> None:
    cores = usable_cores()
    if cores < 2:
        pytest.fail("this test needs 2 usable cores (CI has 2)")
    before = _thread_count()
    runtime = _load(tmp_path, mlp((1024, 4096, 4096, 10)))
    choice = runtime.threads  # type: ignore[attr-defined]
    assert choice.cost_ns is not None and choice.cost_ns >= threads.POOL_MIN_NS // 4
    # measured both ways; which one wins depends on what else this machine runs
    assert f"on {cores}" in choice.reason
    assert choice.threads in (1, cores)
    assert _thread_count() - before == choice.threads - 1


def test_an_explicit_thread_count_is_used_as_written(tmp_path: Path) -> None:
    before = _thread_count()
    text = 'parameters { key: "intra_op_thread_count" value: { string_value: "3" } }'
    runtime = _load(tmp_path, mlp(), text)
    assert runtime.threads is None  # type: ignore[attr-defined]
    assert _thread_count() - before == 2
