"""Per-model-version statistics in the shape Triton's statistics extension serves.

Counters are plain ints updated on the event loop thread only (execution on worker threads
reports its timings back through the awaiting coroutine), so no lock is needed.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


_INFERENCE_KEYS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


# Upper bounds (ns) of each version's request-latency histogram (``ModelStats.latency``: the
# successful requests' end-to-end time, as ``durations["success"]`` sums it), 100 µs to 60 s.
# Triton's statistics have only counts and sums; quantiles (the status page's p50/p99) need
# the distribution.
LATENCY_BOUNDS_NS: tuple[int, ...] = (
    *(int(m * 10**e) for e in range(5, 10) for m in (1, 2.5, 5)),  # 1-2.5-5 from 100 µs to 5 s
    10 * 10**9,
    30 * 10**9,
    60 * 10**9,
)


@dataclass(slots=True)
class ModelStats:
    """One model version's counters. ``last_inference`` is milliseconds since the epoch."""

    name: str
    version: str
    inference_count: int = 0
    execution_count: int = 0
    last_inference: int = 0
    durations: dict[str, Duration] = field(
        default_factory=lambda: {k: Duration() for k in _INFERENCE_KEYS}
    )
    batches: dict[int, BatchStats] = field(default_factory=dict)
    # successful requests per LATENCY_BOUNDS_NS bucket (not cumulative; the last: above 60 s)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_NS) + 1))

    def record_success(
        self,
        batch_size: int,
        total_ns: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
    ) -> None:
        """One request that was one execution of its own."""
        self.record_request(batch_size, total_ns, queue_ns, input_ns, infer_ns, output_ns)
        self.record_execution(batch_size, input_ns, infer_ns, output_ns)

    def record_request(
        self,
        batch_size: int,
        total_ns: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
    ) -> None:
        """A successful request (``inference_stats``; ``inference_count`` counts its
        batch size). Under dynamic batching, several requests share one execution."""
        d = self.durations
        d["success"].add(total_ns)
        self.latency[bisect_left(LATENCY_BOUNDS_NS, total_ns)] += 1
        d["queue"].add(queue_ns)
        d["compute_input"].add(input_ns)
        d["compute_infer"].add(infer_ns)
        d["compute_output"].add(output_ns)
        self.inference_count += batch_size
        self.last_inference = time.time_ns() // 1_000_000

    def record_execution(
        self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One model execution of ``batch_size`` (``batch_stats``, ``execution_count``)."""
        self.execution_count += 1
        b = self.batches.get(batch_size)
        if b is None:
            b = self.batches[batch_size] = BatchStats()
        b.compute_input.add(input_ns)
        b.compute_infer.add(infer_ns)
        b.compute_output.add(output_ns)

    def record_failed_execution(
        self, batch_size: int, total_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """A request the model executed and failed (a Python model raised): Triton counts
        the execution, and the request as failed."""
        self.record_failure(total_ns)
        self.record_execution(batch_size, input_ns, infer_ns, output_ns)

    def record_failure(self, total_ns: int) -> None:
        self.durations["fail"].add(total_ns)
        self.last_inference = time.time_ns() // 1_000_000

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: v.as_json() for k, v in self.durations.items()},
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.as_json(),
                    "compute_infer": b.compute_infer.as_json(),
                    "compute_output": b.compute_output.as_json(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
