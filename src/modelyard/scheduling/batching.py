"""Dynamic batching decisions, as a pure function of the queue and the clock.

Triton's dynamic batcher, restated: requests wait in one queue per model, ordered by
priority level and then arrival. A batch is the longest run of requests from the head
whose non-batch shapes match the head's (a request of another shape ends the run: order is
kept, nothing jumps the queue) and whose batch sizes add up to at most ``max_batch_size``.
It leaves at once when it is full or reaches a preferred size; otherwise it waits, at most
``max_queue_delay`` after its oldest request arrived, for more. With no delay configured,
whatever is queued goes as soon as an instance is free: under load, queues fill while the
instances work, which is where batching pays.

The loop that owns the queue (:mod:`.batcher`) only keeps time and runs what this module
decides, so every rule here is tested without threads or sleeps.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Triton's queue-policy timeout actions
REJECT = 0
DELAY = 1


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """``ModelQueuePolicy``: how long a request may wait, and how many may wait."""

    timeout_action: int = REJECT
    default_timeout_ns: int = 0  # 0: requests never time out in the queue
    allow_timeout_override: bool = False
    max_queue_size: int = 0  # 0: unbounded


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int
    preferred: tuple[int, ...] = ()  # sorted, each <= max_batch_size
    max_queue_delay_ns: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0  # 0: one level
    default_priority: int = 0
    default_queue: QueuePolicy = field(default_factory=QueuePolicy)
    queues: dict[int, QueuePolicy] = field(default_factory=dict)  # per priority level

    def queue_policy(self, priority: int) -> QueuePolicy:
        return self.queues.get(priority, self.default_queue)

    def priority_of(self, requested: int) -> int:
        """The level a request waits at: its own if valid, else the default (Triton)."""
        if self.priority_levels and 1 <= requested <= self.priority_levels:
            return requested
        return self.default_priority if self.priority_levels else 0


def policy_from_config(config: Any) -> BatchPolicy | None:
    """The batching policy of a model's config; None when it does not batch dynamically."""
    if config.max_batch_size <= 0 or not config.HasField("dynamic_batching"):
        return None
    db = config.dynamic_batching
    preferred = tuple(sorted({int(s) for s in db.preferred_batch_size if s > 0}))
    queues = {int(level): _queue(q) for level, q in db.priority_queue_policy.items()}
    return BatchPolicy(
        max_batch_size=int(config.max_batch_size),
        preferred=preferred,
        max_queue_delay_ns=int(db.max_queue_delay_microseconds) * 1000,
        preserve_ordering=bool(db.preserve_ordering),
        priority_levels=int(db.priority_levels),
        default_priority=int(db.default_priority_level),
        default_queue=_queue(db.default_queue_policy),
        queues=queues,
    )


def _queue(q: Any) -> QueuePolicy:
    return QueuePolicy(
        timeout_action=int(q.timeout_action),
        default_timeout_ns=int(q.default_timeout_microseconds) * 1000,
        allow_timeout_override=bool(q.allow_timeout_override),
        max_queue_size=int(q.max_queue_size),
    )


@dataclass(slots=True)
class Pending:
    """One queued request, as the policy sees it."""

    size: int  # its batch dimension
    shape_key: Hashable  # requests merge only when these are equal
    arrived_ns: int
    deadline_ns: int = 0  # 0: no queue timeout
    priority: int = 0
    payload: Any = None  # whatever the loop needs to run and answer it


@dataclass(frozen=True, slots=True)
class Decision:
    """Run ``take`` (a prefix of the queue) now, or, if empty, wait until ``wake_ns``
    (0: until something arrives). ``expired`` are requests whose queue timeout passed with
    the REJECT action: answer them with Triton's timeout error."""

    take: int = 0
    wake_ns: int = 0
    expired: tuple[Pending, ...] = ()


def enqueue_position(queue: Sequence[Pending], item: Pending) -> int:
    """Where a new request goes: after every request of its priority or a higher one
    (level 1 is the highest, as in Triton)."""
    if not item.priority:
        return len(queue)
    pos = len(queue)
    while pos > 0 and queue[pos - 1].priority > item.priority:
        pos -= 1
    return pos


def admit(queue: Sequence[Pending], item: Pending, policy: BatchPolicy) -> bool:
    """False when the request's priority queue is full (Triton rejects it)."""
    limit = policy.queue_policy(item.priority).max_queue_size
    if not limit:
        return True
    return sum(1 for p in queue if p.priority == item.priority) < limit


def decide(queue: list[Pending], policy: BatchPolicy, now_ns: int) -> Decision:
    """What to do with the queue now. Removes expired REJECT requests from ``queue``
    (returned in ``expired``) and moves expired DELAY ones behind the others of their
    priority; never reorders anything else."""
    expired = expire(queue, policy, now_ns)
    if not queue:
        return Decision(expired=expired)
    head = queue[0]
    total = 0
    count = 0
    best_preferred = 0  # the longest prefix whose size is a preferred size
    for item in queue:
        if item.shape_key != head.shape_key or total + item.size > policy.max_batch_size:
            break
        total += item.size
        count += 1
        if total in policy.preferred:
            best_preferred = count
    blocked = count < len(queue)  # the next request cannot join this batch
    if total >= policy.max_batch_size or (policy.preferred and total > policy.preferred[-1]):
        # full, or past the largest preferred size: go with the best preferred prefix
        return Decision(take=best_preferred or count, expired=expired)
    if best_preferred == count:
        return Decision(take=count, expired=expired)  # exactly a preferred size
    if blocked:
        # a request of another shape waits behind: this batch cannot grow any more
        return Decision(take=best_preferred or count, expired=expired)
    deadline = head.arrived_ns + policy.max_queue_delay_ns
    if not policy.max_queue_delay_ns or now_ns >= deadline:
        return Decision(take=count, expired=expired)
    wake = deadline
    nearest = nearest_deadline(queue)
    if nearest and nearest < wake:
        wake = nearest
    return Decision(take=0, wake_ns=wake, expired=expired)


def expire(queue: list[Pending], policy: BatchPolicy, now_ns: int) -> tuple[Pending, ...]:
    """Applies queue timeouts: REJECT ones are removed and returned, DELAY ones move back."""
    if not any(p.deadline_ns for p in queue):
        return ()
    rejected: list[Pending] = []
    delayed: list[Pending] = []
    kept: list[Pending] = []
    for item in queue:
        if item.deadline_ns and now_ns >= item.deadline_ns:
            if policy.queue_policy(item.priority).timeout_action == DELAY:
                item.deadline_ns = 0  # delayed once: it now waits like the others
                delayed.append(item)
            else:
                rejected.append(item)
        else:
            kept.append(item)
    for item in delayed:
        kept.insert(enqueue_position(kept, item), item)
    queue[:] = kept
    return tuple(rejected)


def nearest_deadline(queue: Sequence[Pending]) -> int:
    deadlines = [p.deadline_ns for p in queue if p.deadline_ns]
    return min(deadlines) if deadlines else 0


def queue_deadline(policy: BatchPolicy, priority: int, now_ns: int, requested_us: int) -> int:
    """A new request's queue deadline (0: none): its own ``timeout`` (µs) if the policy
    allows overriding, else the policy's default."""
    q = policy.queue_policy(priority)
    timeout_ns = q.default_timeout_ns
    if q.allow_timeout_override and requested_us > 0:
        timeout_ns = requested_us * 1000
    return now_ns + timeout_ns if timeout_ns else 0
