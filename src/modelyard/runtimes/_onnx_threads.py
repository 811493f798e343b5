"""The ONNX runtime's intra-op thread pool, chosen from the model's measured cost.

onnxruntime's default pool has one thread per physical core, and its threads spin after
each parallel section waiting for the next. For a model that costs microseconds that is
pure loss: it runs inline on the event loop (``scheduling/runner.py``), and the spinning
threads take the cores that the event loop, the other models and the clients need. On one
2-core machine the default pool made an MLP of 7 µs serve 1.7 cores at 0.72x the 1-thread
throughput under load; on another it won at c=1. Neither fixed setting is right everywhere,
so the choice is made per model, at load, from what its runs cost on this machine:

* the session is opened with **1 thread** and timed on zero-filled inputs;
* a model whose run costs at least ``POOL_MIN_NS`` is opened again with a pool of
  ``usable`` cores (affinity and cgroup quota, :mod:`modelyard.cpus`) that **sleeps instead
  of spinning**, timed the same way, and kept only when it is at least ``POOL_GAIN`` times
  faster; otherwise the 1-thread session stays;
* a config that sets ``intra_op_thread_count`` (Triton's key) is used as written, and
  ``session.intra_op.allow_spinning`` in its parameters overrides the spinning choice.

Measurements behind ``POOL_MIN_NS`` are in ``docs/performance.md`` ("ONNX thread pools").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

# Below this single-thread cost a sleeping pool loses to one thread: waking its threads for
# every parallel section costs more than the section saves (an MLP of 75 µs ran in 82 µs on
# a pool of 2 that sleeps, 220 µs ran in 185 µs, 545 µs in 316 µs)
POOL_MIN_NS: Final = 200_000
# the pool must beat one thread by this much to be worth its wake-ups and its threads
POOL_GAIN: Final = 1.25
# timing stops after this much time or this many runs (the first run is a warm-up)
_TIME_BUDGET_NS: Final = 100_000_000
_MAX_RUNS: Final = 6
SPINNING_KEY: Final = "session.intra_op.allow_spinning"

_NUMPY: Final[dict[str, Any]] = {
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True, slots=True)
class ThreadChoice:
    """What was chosen and why, for the load log and the runner's first placement."""

    threads: int
    spinning: bool
    cost_ns: int | None  # the chosen session's measured run time; None when not measurable
    reason: str


def choose(single_ns: int | None, pool_ns: int | None, cores: int) -> tuple[bool, str]:
    """Whether to keep the pool, from the two measured costs (``pool_ns`` None: not tried)."""
    if single_ns is None:
        return False, "its cost could not be measured on zero inputs; 1 thread, the safe side"
    if cores < 2:
        return False, "this process may use 1 core"
    if single_ns < POOL_MIN_NS:
        return False, (
            f"a run costs {single_ns / 1e3:.0f} µs on 1 thread, under the "
            f"{POOL_MIN_NS / 1e3:.0f} µs a sleeping pool needs to pay for its wake-ups"
        )
    if pool_ns is None:
        return False, "the pool could not be timed"
    if pool_ns * POOL_GAIN <= single_ns:
        return True, (
            f"a run costs {single_ns / 1e3:.0f} µs on 1 thread and {pool_ns / 1e3:.0f} µs "
            f"on {cores}"
        )
    return False, (
        f"a run costs {single_ns / 1e3:.0f} µs on 1 thread and {pool_ns / 1e3:.0f} µs on "
        f"{cores}: less than {POOL_GAIN:g}x faster"
    )


def wants_pool_trial(single_ns: int | None, cores: int) -> bool:
    return single_ns is not None and cores >= 2 and single_ns >= POOL_MIN_NS


def zero_feed(session: Any) -> dict[str, Any] | None:
    """Zero-filled inputs of the graph's shapes (unknown dims as 1); None when a type has
    no numpy form here (bfloat16, optional or sequence inputs)."""
    feed: dict[str, Any] = {}
    for node in session.get_inputs():
        dtype = _NUMPY.get(node.type)
        if dtype is None:
            return None
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in node.shape]
        if dtype is np.object_:
            feed[node.name] = np.full(shape, "", dtype=object)
        else:
            feed[node.name] = np.zeros(shape, dtype=dtype)
    return feed


def time_runs(
    run: Callable[[], object], clock: Callable[[], int] = time.perf_counter_ns
) -> int | None:
    """The fastest of a few timed runs after one warm-up (the fastest is the least disturbed
    by whatever else the machine runs); None if the model fails on these inputs."""
    times: list[int] = []
    begin = clock()
    for _ in range(_MAX_RUNS):
        start = clock()
        try:
            run()
        except Exception:  # zero inputs may be invalid for the model; no measurement then
            return None
        end = clock()
        times.append(end - start)
        if end - begin > _TIME_BUDGET_NS:  # a run longer than the budget is timed once
            break
    measured = times[1:] or times
    return min(measured)
