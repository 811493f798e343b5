"""ModelRunner with a function-backed runtime: placement, statistics, failures."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.errors import Internal, InvalidArgument
from modelyard.scheduling.runner import ModelRunner, instance_count
from modelyard.types import Array, InferRequest, Tensor

CONFIG = """
name: "f"
max_batch_size: 8
input [ { name: "X", data_type: TYPE_FP32, dims: [ 2 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 2 ] } ]
instance_group [ { count: 2 }, { count: 1 } ]
"""


class FunctionRuntime:
    """Runs a plain function and remembers which thread ran it."""

    def __init__(self, fn: Callable[[Array], Array]) -> None:
        self.fn = fn
        self.threads: list[int] = []

    def infer(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        self.threads.append(threading.get_ident())
        return {"Y": self.fn(inputs["X"])}

    def unload(self) -> None:
        pass


def _burn(seconds: float) -> None:
    """Real CPU work on this thread, as a model's execution is (not a sleep)."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


def _runner(fn: Callable[[Array], Array]) -> tuple[ModelRunner, FunctionRuntime]:
    runtime = FunctionRuntime(fn)
    config = text_format.Parse(CONFIG, mc.ModelConfig())
    return ModelRunner(config, "1", runtime), runtime


def _request(batch: int = 1) -> InferRequest:
    x = np.ones((batch, 2), dtype=np.float32)
    return InferRequest("f", inputs=[Tensor("X", "FP32", [batch, 2], x)])


def test_instance_count_sums_groups() -> None:
    assert instance_count(text_format.Parse(CONFIG, mc.ModelConfig())) == 3
    assert instance_count(mc.ModelConfig()) == 1


def test_fast_models_move_onto_the_event_loop() -> None:
    runner, runtime = _runner(lambda x: x * 2)

    async def main() -> int:
        for _ in range(20):
            out = await runner.infer(_request())
            np.testing.assert_array_equal(out.outputs[0].data, [[2, 2]])
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    runner.close()
    assert runtime.threads[0] != loop_thread  # unknown cost: first call on a worker
    assert runtime.threads[-1] == loop_thread  # measured cheap: now inline


def test_one_preempted_execution_does_not_move_a_cheap_model_off_the_loop() -> None:
    """An inline execution that loses the CPU (here: 30 ms off the CPU, as a preempted run
    is) must not send a cheap model to worker threads, where every execution would wait for
    the GIL: the cost is the CPU time the execution took, not the wall time it lasted."""
    calls = [0]

    def fn(x: Array) -> Array:
        calls[0] += 1
        if calls[0] == 30:
            time.sleep(0.03)
        return x * 2

    runner, runtime = _runner(fn)

    async def main() -> int:
        for _ in range(40):
            await runner.infer(_request())
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    runner.close()
    assert runtime.threads[28] == loop_thread  # inline before the stall
    assert runtime.threads[30:] == [loop_thread] * 10  # and still inline after it


def test_one_heavy_execution_moves_a_model_off_the_loop_at_once() -> None:
    """A model whose cost depends on its input (an ONNX Loop whose trip count a request
    sets): after one long execution on the loop, the next ones run on worker threads, so a
    second long request does not hold the loop (and every other model) again."""
    heavy = [False]

    def fn(x: Array) -> Array:
        if heavy[0]:
            _burn(0.05)
        return x * 2

    runner, runtime = _runner(fn)

    async def main() -> int:
        for _ in range(20):
            await runner.infer(_request())
        heavy[0] = True
        await runner.infer(_request())
        heavy[0] = False
        await runner.infer(_request())
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    runner.close()
    assert runtime.threads[19] == loop_thread  # cheap: inline
    assert runtime.threads[20] == loop_thread  # the long one could not be foreseen
    assert runtime.threads[21] != loop_thread  # but the next one is off the loop


def test_the_first_real_execution_replaces_the_cost_measured_at_load() -> None:
    """The load-time cost comes from zero-filled inputs, which can mean no work (an ONNX
    Loop whose trip count is an input): one real execution of 1 ms, five times the inline
    threshold, sends the model's next requests to worker threads."""

    def fn(x: Array) -> Array:
        _burn(0.001)
        return x * 2

    runtime = FunctionRuntime(fn)
    runtime.cost_ns = 3_000  # type: ignore[attr-defined]  # what a zero-feed timing said
    runner = ModelRunner(text_format.Parse(CONFIG, mc.ModelConfig()), "1", runtime)

    async def main() -> int:
        for _ in range(3):
            await runner.infer(_request())
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    runner.close()
    assert runtime.threads[0] == loop_thread  # placed by the prior
    assert runtime.threads[1] != loop_thread and runtime.threads[2] != loop_thread


def test_a_model_that_becomes_slow_moves_to_worker_threads() -> None:
    slow = [False]

    def fn(x: Array) -> Array:
        if slow[0]:
            _burn(0.001)
        return x * 2

    runner, runtime = _runner(fn)

    async def main() -> int:
        for _ in range(20):
            await runner.infer(_request())
        slow[0] = True
        for _ in range(40):
            await runner.infer(_request())
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    runner.close()
    assert runtime.threads[19] == loop_thread
    assert runtime.threads[-1] != loop_thread


def test_slow_models_stay_on_worker_threads() -> None:
    # the first two executions meet at a barrier: they pass only if two instances run at
    # once (a timing assertion would flake on a loaded machine)
    meet = threading.Barrier(2, timeout=10)
    started = itertools.count()

    def slow(x: Array) -> Array:
        if next(started) < 2:
            meet.wait()
        _burn(0.002)
        return x

    runner, runtime = _runner(slow)

    async def main() -> int:
        await asyncio.gather(*(runner.infer(_request()) for _ in range(6)))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    runner.close()
    assert loop_thread not in runtime.threads
    assert 1 < len(set(runtime.threads)) <= 3  # concurrent, at most one thread per instance


def test_statistics_and_failures() -> None:
    calls = {"n": 0}

    def flaky(x: Array) -> Array:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Internal("boom")
        return x

    runner, _ = _runner(flaky)

    async def main() -> None:
        await runner.infer(_request(2))
        await runner.infer(_request(2))
        with pytest.raises(Internal):
            await runner.infer(_request(2))
        with pytest.raises(InvalidArgument):
            await runner.infer(InferRequest("f", inputs=[]))
        await runner.infer(_request(4))

    asyncio.run(main())
    runner.close()
    stats: dict[str, Any] = runner.stats.as_json()
    assert stats["inference_count"] == 8
    assert stats["execution_count"] == 3
    assert stats["inference_stats"]["fail"]["count"] == 1  # validation refusals don't count
    assert stats["inference_stats"]["success"]["count"] == 3
    assert [b["batch_size"] for b in stats["batch_stats"]] == [2, 4]
    assert stats["batch_stats"][0]["compute_infer"]["count"] == 2
