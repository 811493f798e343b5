"""The status board's arithmetic: quantiles from histogram buckets, and window figures from
the ring of snapshots, over a real manager whose statistics are fed as the runner feeds them.
No server, no sleeps: every time is passed in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from modelyard.manager.manager import ManagerOptions, ModelManager
from modelyard.manager.records import State
from modelyard.protocol.status.board import WINDOW_SECS, StatusBoard, model_state, quantile
from modelyard.scheduling.stats import LATENCY_BOUNDS_NS, ModelStats

BOUNDS = (1.0, 2.0, 4.0, 8.0)


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, [0, 10, 0, 0, 0], 1.5),  # all in (1, 2]: the middle of it
        (0.5, [10, 0, 0, 0, 0], 0.5),  # the first bucket starts at 0
        (0.99, [0, 0, 0, 100, 0], 4.0 + 4.0 * 0.99),
        (0.5, [5, 5, 0, 0, 0], 1.0),  # the rank falls on a bucket's edge
        (0.75, [5, 5, 0, 0, 0], 1.5),
        (0.5, [0, 0, 0, 0, 3], 8.0),  # above every bound: the highest bound
        (1.0, [1, 0, 0, 0, 1], 8.0),
        (0.0, [0, 0, 4, 0, 0], 2.0),  # rank 0: the start of the first bucket with data
    ],
)
def test_quantile_interpolates_within_the_bucket_like_histogram_quantile(
    q: float, counts: list[int], expected: float
) -> None:
    assert quantile(q, BOUNDS, counts) == pytest.approx(expected)


def test_quantile_of_nothing_is_none() -> None:
    assert quantile(0.5, BOUNDS, [0, 0, 0, 0, 0]) is None


def test_a_request_lands_in_the_bucket_its_latency_belongs_to() -> None:
    stats = ModelStats("m", "1")
    stats.record_success(1, 1_000_000, 0, 0, 0, 0)  # 1 ms: on a bound, so in that bucket
    stats.record_success(1, 1_000_001, 0, 0, 0, 0)  # just above: the next one
    stats.record_success(1, 10**12, 0, 0, 0, 0)  # 1000 s: above every bound
    one_ms = LATENCY_BOUNDS_NS.index(1_000_000)
    assert stats.latency[one_ms] == 1
    assert stats.latency[one_ms + 1] == 1
    assert stats.latency[-1] == 1
    assert sum(stats.latency) == stats.durations["success"].count == 3


@pytest.fixture
def manager(tmp_path: Path) -> ModelManager:
    repo = tmp_path / "repo"
    for name in ("busy", "idle"):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "onnxruntime"\n')
    m = ModelManager(
        ManagerOptions(
            repository=str(repo),
            control_mode="on-demand",
            load_wait_timeout=1.0,
            repository_poll_secs=0,
            memory_budget=None,
            eviction_policy="lru",
            cache_max_bytes=2**30,
            cache_dir=tmp_path / "cache",
        )
    )
    asyncio.run(m.refresh())
    return m


def _row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in report["models"] if m["name"] == name)


def test_window_figures_are_the_difference_from_the_oldest_snapshot_in_the_window(
    manager: ModelManager,
) -> None:
    board = StatusBoard(manager, "on-demand")  # its first snapshot: now, all zero
    stats = manager.models["busy"].version("1").stats
    for _ in range(100):
        stats.record_success(1, 1_000_000, 0, 0, 0, 0)  # 1 ms each
    t = time.monotonic()
    board.sample(now=t + 400)  # the 1 ms requests are before this snapshot
    for _ in range(100):
        stats.record_success(1, 200_000_000, 0, 0, 0, 0)  # 200 ms each: in (100, 250] ms
    stats.record_failure(5_000_000)
    manager.counters.cache_hits += 7
    report = board.report(now=t + 500)  # the first snapshot is out of the window now
    busy = _row(report, "busy")
    assert busy["requests"] == 200 and busy["failures"] == 1  # totals: everything
    window = busy["window"]
    assert (window["requests"], window["failures"]) == (100, 1)
    assert window["p50_ms"] == pytest.approx(100 + 150 * 0.5)
    assert window["p99_ms"] == pytest.approx(100 + 150 * 0.99)
    assert window["requests_per_second"] == pytest.approx(100 / 100, rel=1e-3)
    assert report["window_seconds"] == pytest.approx(100, rel=1e-3)
    assert report["cache"]["hits"] == 7 and report["cache"]["window"]["hits"] == 7
    idle = _row(report, "idle")
    assert idle["window"] == {
        "requests": 0,
        "failures": 0,
        "requests_per_second": 0.0,
        "p50_ms": None,
        "p99_ms": None,
    }


def test_while_the_ring_is_young_the_window_starts_at_the_first_snapshot(
    manager: ModelManager,
) -> None:
    board = StatusBoard(manager, "on-demand")
    stats = manager.models["busy"].version("1").stats
    for _ in range(3):
        stats.record_success(1, 3_000_000, 0, 0, 0, 0)
    report = board.report(now=time.monotonic() + WINDOW_SECS / 2)
    assert _row(report, "busy")["window"]["requests"] == 3
    assert report["window_seconds"] == pytest.approx(WINDOW_SECS / 2, rel=0.01)


def test_the_ring_keeps_about_the_window(manager: ModelManager) -> None:
    board = StatusBoard(manager, "on-demand")
    t = time.monotonic()
    for i in range(1, 200):
        board.sample(now=t + 10 * i)
    assert len(board._ring) * 10 <= WINDOW_SECS + 10


def test_states_and_errors_come_from_the_records(manager: ModelManager) -> None:
    board = StatusBoard(manager, "on-demand")
    busy, idle = manager.models["busy"], manager.models["idle"]
    assert model_state(busy) == "UNLOADED"
    busy.version("1").state = State.LOADING
    assert model_state(busy) == "LOADING"
    busy.version("1").state, busy.version("1").reason = State.UNAVAILABLE, "unloaded"
    assert model_state(busy) == "UNLOADED"  # an unload is no error
    idle.reason = "config.pbtxt:2:1: no field named 'bogus'"
    idle.version("1").state, idle.version("1").reason = State.UNAVAILABLE, idle.reason
    assert model_state(idle) == "FAILED"
    report = board.report()
    assert [(e["model"], e["version"], e["reason"]) for e in report["errors"]] == [
        ("idle", "", idle.reason)
    ]
    first_seen = report["errors"][0]["at"]
    assert board.report()["errors"][0]["at"] == first_seen  # when it was first seen
    idle.reason, idle.version("1").reason = "", "unloaded"
    assert board.report()["errors"] == []
