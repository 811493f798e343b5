"""The loop around :func:`.batching.decide`: one queue per model version, on the event loop.

Requests wait here; whenever an instance is free, the policy says which prefix of the queue
runs as one execution, and the runner (``execute``) runs it. Timers only wake the loop for
a queue delay or a queue timeout; nothing polls.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import Unavailable
from modelyard.scheduling.batching import (
    BatchPolicy,
    Pending,
    admit,
    decide,
    enqueue_position,
    expire,
    nearest_deadline,
    queue_deadline,
)
from modelyard.types import Array, InferRequest, InferResponse

# Triton's texts for the queue policy's refusals
QUEUE_FULL = "Exceeds maximum queue size"
QUEUE_TIMEOUT = "Request timeout expired"


@dataclass(slots=True)
class Job:
    """One validated request waiting for (or in) an execution."""

    request: InferRequest
    wanted: list[tuple[str, int]]
    feed: dict[str, Array]
    size: int
    start_ns: int
    future: asyncio.Future[InferResponse]
    queued_ns: int = 0  # time spent waiting in the queue
    # preserve_ordering: the outcome waits here until every earlier request has its own
    outcome: InferResponse | BaseException | None = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


Execute = Callable[[list[Job]], Awaitable[None]]


class Batcher:
    def __init__(self, policy: BatchPolicy, instances: int, execute: Execute) -> None:
        self.policy = policy
        self.free = max(1, instances)
        self._execute = execute
        self.queue: list[Pending] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._order: collections.deque[Job] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, request: InferRequest, wanted: list[tuple[str, int]], feed: dict[str, Array],
        size: int, start_ns: int,
    ) -> asyncio.Future[InferResponse]:  # fmt: skip
        loop = asyncio.get_running_loop()
        now = time.perf_counter_ns()
        policy = self.policy
        priority = policy.priority_of(_int(request.parameters.get("priority")))
        job = Job(request, wanted, feed, size, start_ns, loop.create_future())
        item = Pending(
            size=size,
            shape_key=_shape_key(feed),
            arrived_ns=now,
            deadline_ns=queue_deadline(
                policy, priority, now, _int(request.parameters.get("timeout"))
            ),
            priority=priority,
            payload=job,
        )
        if not admit(self.queue, item, policy):
            raise Unavailable(QUEUE_FULL)
        self.queue.insert(enqueue_position(self.queue, item), item)
        if policy.preserve_ordering:
            self._order.append(job)
        self._kick()
        return job.future

    def _kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while True:
            now = time.perf_counter_ns()
            if self.free <= 0:
                for item in expire(self.queue, self.policy, now):
                    self._fail(item.payload, Unavailable(QUEUE_TIMEOUT))
                wake = nearest_deadline(self.queue)
                if wake:
                    self._timer = loop.call_later(max(0, wake - now) / 1e9, self._kick)
                return
            decision = decide(self.queue, self.policy, now)
            for item in decision.expired:
                self._fail(item.payload, Unavailable(QUEUE_TIMEOUT))
            if not decision.take:
                if decision.wake_ns:
                    delay = max(0, decision.wake_ns - now) / 1e9
                    self._timer = loop.call_later(delay, self._kick)
                return
            batch = self.queue[: decision.take]
            del self.queue[: decision.take]
            jobs = []
            for item in batch:
                job: Job = item.payload
                job.queued_ns = now - item.arrived_ns
                jobs.append(job)
            self.free -= 1
            task = loop.create_task(self._run(jobs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, jobs: list[Job]) -> None:
        try:
            await self._execute(jobs)
        finally:
            self.free += 1
            self._kick()

    def finish(self, job: Job, outcome: InferResponse | BaseException) -> None:
        """Hands a request its answer (in arrival order with ``preserve_ordering``)."""
        if not self.policy.preserve_ordering:
            _settle(job.future, outcome)
            return
        job.outcome = outcome
        job.done = True
        order = self._order
        while order and order[0].done:
            head = order.popleft()
            assert head.outcome is not None
            _settle(head.future, head.outcome)

    def _fail(self, job: Job, error: BaseException) -> None:
        self.finish(job, error)


def _settle(future: asyncio.Future[InferResponse], outcome: InferResponse | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _shape_key(feed: dict[str, Array]) -> tuple[Any, ...]:
    """Requests merge only when every input has the same type and non-batch shape."""
    return tuple((name, arr.dtype.str, arr.shape[1:]) for name, arr in sorted(feed.items()))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
