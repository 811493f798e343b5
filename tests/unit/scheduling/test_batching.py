"""The batching policy as a pure function of the queue and the clock."""

from __future__ import annotations

from modelyard.scheduling.batching import (
    DELAY,
    BatchPolicy,
    Pending,
    QueuePolicy,
    admit,
    decide,
    enqueue_position,
    queue_deadline,
)

MS = 1_000_000


def _q(*sizes: int, key: str = "a", at: int = 0) -> list[Pending]:
    return [Pending(size=s, shape_key=key, arrived_ns=at) for s in sizes]


def test_no_delay_takes_everything_queued_up_to_max() -> None:
    policy = BatchPolicy(max_batch_size=8)
    queue = _q(1, 1, 1)
    assert decide(queue, policy, now_ns=0).take == 3
    assert decide(_q(*[1] * 10), policy, now_ns=0).take == 8


def test_preferred_size_goes_at_once_even_with_a_long_delay() -> None:
    policy = BatchPolicy(max_batch_size=16, preferred=(8,), max_queue_delay_ns=10_000 * MS)
    queue = _q(2, 2, 2)
    d = decide(queue, policy, now_ns=1)
    assert d.take == 0 and d.wake_ns == 10_000 * MS  # waits for more
    queue = _q(2, 2, 2, 2)
    assert decide(queue, policy, now_ns=1).take == 4  # 4 x 2 = preferred 8


def test_delay_expiry_sends_what_there_is() -> None:
    policy = BatchPolicy(max_batch_size=16, preferred=(8,), max_queue_delay_ns=5 * MS)
    queue = _q(2, 2, at=0)
    assert decide(queue, policy, now_ns=4 * MS).take == 0
    assert decide(queue, policy, now_ns=5 * MS).take == 2


def test_past_the_largest_preferred_size_the_best_preferred_prefix_goes() -> None:
    policy = BatchPolicy(max_batch_size=16, preferred=(4,), max_queue_delay_ns=5 * MS)
    assert decide(_q(2, 2, 3), policy, now_ns=0).take == 2
    # no prefix lands on 4: the whole run goes once past it
    assert decide(_q(3, 3), policy, now_ns=0).take == 2


def test_different_shapes_are_not_merged_and_keep_their_order() -> None:
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_ns=5 * MS)
    queue = [*_q(1, 1, key="a"), *_q(1, key="b"), *_q(1, key="a")]
    d = decide(queue, policy, now_ns=0)
    assert d.take == 2  # the "b" request blocks growth: no waiting for the delay
    assert [p.shape_key for p in queue[: d.take]] == ["a", "a"]


def test_full_batch_never_exceeds_max() -> None:
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_ns=5 * MS)
    assert decide(_q(3, 3), policy, now_ns=0).take == 1


def test_queue_timeout_rejects_or_delays() -> None:
    reject = BatchPolicy(
        max_batch_size=8,
        max_queue_delay_ns=100 * MS,
        default_queue=QueuePolicy(default_timeout_ns=1 * MS),
    )
    queue = _q(1, 1)
    for p in queue:
        p.deadline_ns = 1 * MS
    d = decide(queue, reject, now_ns=2 * MS)
    assert len(d.expired) == 2 and not queue
    delay = BatchPolicy(
        max_batch_size=8,
        max_queue_delay_ns=100 * MS,
        default_queue=QueuePolicy(timeout_action=DELAY, default_timeout_ns=1 * MS),
    )
    queue = _q(1, 1)
    queue[0].deadline_ns = 1 * MS
    d = decide(queue, delay, now_ns=2 * MS)
    assert not d.expired and len(queue) == 2 and queue[0].deadline_ns == 0


def test_queue_size_limit_and_timeout_override() -> None:
    policy = BatchPolicy(
        max_batch_size=8,
        default_queue=QueuePolicy(
            max_queue_size=2, default_timeout_ns=0, allow_timeout_override=True
        ),
    )
    queue = _q(1, 1)
    assert not admit(queue, Pending(1, "a", 0), policy)
    assert admit(queue[:1], Pending(1, "a", 0), policy)
    assert queue_deadline(policy, 0, now_ns=10, requested_us=5) == 10 + 5000
    assert queue_deadline(policy, 0, now_ns=10, requested_us=0) == 0


def test_priority_levels_order_the_queue() -> None:
    policy = BatchPolicy(max_batch_size=8, priority_levels=2, default_priority=2)
    queue = [Pending(1, "a", 0, priority=2), Pending(1, "a", 1, priority=2)]
    urgent = Pending(1, "a", 2, priority=1)
    assert enqueue_position(queue, urgent) == 0
    assert policy.priority_of(1) == 1 and policy.priority_of(7) == 2 and policy.priority_of(0) == 2
