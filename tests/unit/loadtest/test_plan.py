"""Arrival schedules, the mix draw and the stepping rule, on plain values and seeded draws."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.errors import InvalidArgument
from modelyard.loadtest.plan import (
    StepPlan,
    choose_models,
    constant_arrivals,
    next_level,
    poisson_arrivals,
)


def test_poisson_arrivals_are_a_seeded_poisson_process() -> None:
    times = poisson_arrivals(200.0, 50.0, np.random.default_rng(1))
    assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] < 50.0
    # 10000 expected; a Poisson count's standard deviation is 100: six of them is never noise
    assert abs(len(times) - 10_000) < 600
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 200, rel=0.05)  # exponential: std == mean
    again = poisson_arrivals(200.0, 50.0, np.random.default_rng(1))
    assert np.array_equal(times, again)  # the same seed, the same schedule


def test_poisson_arrivals_draws_more_when_the_first_draw_falls_short() -> None:
    # a tiny rate over a long window: many draws of the estimate are needed on some seeds
    for seed in range(20):
        times = poisson_arrivals(0.5, 4.0, np.random.default_rng(seed))
        assert np.all(times < 4.0)
    assert len(poisson_arrivals(0.0, 5.0, np.random.default_rng(0))) == 0


def test_constant_arrivals_are_evenly_spaced() -> None:
    times = constant_arrivals(4.0, 1.0)
    assert times.tolist() == [0.0, 0.25, 0.5, 0.75]


def test_the_mix_draw_follows_the_weights() -> None:
    keys = choose_models([3.0, 1.0], 40_000, np.random.default_rng(2))
    assert set(keys.tolist()) == {0, 1}
    assert (keys == 0).mean() == pytest.approx(0.75, abs=0.01)
    assert choose_models([5.0], 3, np.random.default_rng(0)).tolist() == [0, 0, 0]
    with pytest.raises(InvalidArgument, match="weights"):
        choose_models([0.0, 0.0], 1, np.random.default_rng(0))


def _run(plan: StepPlan, limit: float) -> list[float]:
    """The levels a run tries when every level up to ``limit`` passes."""
    history: list[tuple[float, bool]] = []
    while (level := next_level(plan, history)) is not None:
        history.append((level, level <= limit))
        assert len(history) < 100
    return [level for level, _ in history]


def test_ramp_adds_or_multiplies_and_stops_at_the_maximum() -> None:
    assert _run(StepPlan(10, 10, 35), limit=1e9) == [10, 20, 30, 35]
    assert _run(StepPlan(10, 2, 100, factor=True), limit=1e9) == [10, 20, 40, 80, 100]


def test_after_the_first_failure_it_bisects_refine_times() -> None:
    # ramp 10, 20, 40 (fails); then 30 (passes), 35 (fails)
    assert _run(StepPlan(10, 2, 1000, factor=True, refine=2), limit=32) == [10, 20, 40, 30, 35]
    assert _run(StepPlan(10, 2, 1000, factor=True, refine=0), limit=32) == [10, 20, 40]


def test_bisection_stops_when_the_bracket_is_within_two_percent() -> None:
    levels = _run(StepPlan(100, 1, 1000, refine=10), limit=100.5)
    assert levels[:2] == [100, 101]
    assert len(levels) == 2  # 100 passed, 101 failed: already within 2%


def test_a_first_level_that_fails_ends_the_run() -> None:
    assert _run(StepPlan(50, 2, 1000, factor=True), limit=10) == [50]


def test_integer_levels_for_concurrency() -> None:
    plan = StepPlan(1, 1.5, 16, factor=True, refine=3, integer=True)
    assert _run(plan, limit=1e9) == [1, 2, 3, 4, 6, 9, 13, 16]
    assert _run(StepPlan(1, 2, 64, factor=True, refine=3, integer=True), limit=5) == [
        1, 2, 4, 8, 6, 5,
    ]  # fmt: skip


def test_step_text_and_bad_plans() -> None:
    assert StepPlan.parse_step("25") == (25.0, False)
    assert StepPlan.parse_step("+25") == (25.0, False)
    assert StepPlan.parse_step("x1.5") == (1.5, True)
    assert StepPlan.parse_step("*2") == (2.0, True)
    with pytest.raises(InvalidArgument, match="--step 'fast'"):
        StepPlan.parse_step("fast")
    with pytest.raises(InvalidArgument, match="factor above 1"):
        StepPlan(10, 1.0, 100, factor=True)
    with pytest.raises(InvalidArgument, match="below the first"):
        StepPlan(10, 5, 5)
    with pytest.raises(InvalidArgument, match="above zero"):
        StepPlan(0, 5, 5)
