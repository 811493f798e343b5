"""choose_victims / plan_eviction with plain values: no clocks, no threads, no sleeps."""

from __future__ import annotations

import pytest

from modelyard.manager.eviction import (
    DEFAULT_POLICY,
    POLICIES,
    PolicyState,
    Resident,
    choose_victims,
    forget,
    plan_eviction,
    record_use,
)

MB = 1_000_000
NOW = 1_000.0


def res(
    key: str,
    mb: int = 100,
    last_used: float = 0.0,
    uses: int = 1,
    load_seconds: float = 1.0,
    busy: bool = False,
) -> Resident:
    return Resident(key, mb * MB, last_used, uses, load_seconds, busy)


@pytest.mark.parametrize("policy", POLICIES)
def test_already_fits_evicts_nothing(policy: str) -> None:
    residents = [res("a"), res("b")]
    assert choose_victims(residents, 50 * MB, 50 * MB, NOW, policy) == []
    assert choose_victims(residents, 10 * MB, 50 * MB, NOW, policy) == []
    assert choose_victims([], 0, 0, NOW, policy) == []


@pytest.mark.parametrize("policy", POLICIES)
def test_cannot_fit_returns_none(policy: str) -> None:
    residents = [res("a", 100), res("b", 100), res("busy", 500, busy=True)]
    # 10 free + 200 idle < 300 needed; the busy 500 MB does not count
    assert choose_victims(residents, 300 * MB, 10 * MB, NOW, policy) is None
    assert choose_victims([], 1, 0, NOW, policy) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_exactly_fits_after_evicting_everything_idle(policy: str) -> None:
    residents = [res("a", 100, last_used=1), res("b", 100, last_used=2)]
    assert sorted(choose_victims(residents, 210 * MB, 10 * MB, NOW, policy) or []) == ["a", "b"]


@pytest.mark.parametrize("policy", POLICIES)
def test_busy_is_never_evicted(policy: str) -> None:
    residents = [
        res("hot-but-busy", 100, last_used=0, uses=1, busy=True),
        res("b", 100, last_used=5, uses=50),
    ]
    assert choose_victims(residents, 100 * MB, 0, NOW, policy) == ["b"]
    assert choose_victims([res("x", busy=True)], 100 * MB, 0, NOW, policy) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_ties_are_broken_by_key(policy: str) -> None:
    residents = [res(k, 100, last_used=7) for k in ("c", "a", "b")]
    for ordering in (residents, residents[::-1]):
        assert choose_victims(ordering, 100 * MB, 0, NOW, policy) == ["a"]
        assert choose_victims(ordering, 200 * MB, 0, NOW, policy) == ["a", "b"]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown eviction policy 'mru'; choose one of lru, gdsf"):
        choose_victims([res("a")], 10, 0, NOW, "mru")


def test_default_policy_is_one_of_the_policies() -> None:
    assert DEFAULT_POLICY in POLICIES


# --- lru ---------------------------------------------------------------------------------


def test_lru_evicts_the_least_recently_used() -> None:
    residents = [res("new", last_used=30), res("old", last_used=10), res("mid", last_used=20)]
    assert choose_victims(residents, 100 * MB, 0, NOW, "lru") == ["old"]


def test_lru_evicts_several_oldest_first() -> None:
    residents = [res("new", last_used=30), res("old", last_used=10), res("mid", last_used=20)]
    assert choose_victims(residents, 150 * MB, 0, NOW, "lru") == ["old", "mid"]


def test_lru_ignores_frequency_and_cost() -> None:
    residents = [
        res("precious", last_used=1, uses=10_000, load_seconds=60),
        res("cheap", last_used=2),
    ]
    assert choose_victims(residents, 100 * MB, 0, NOW, "lru") == ["precious"]


def test_redundant_victims_are_put_back() -> None:
    # LRU takes "small" then "big"; "big" alone frees enough, so "small" stays.
    residents = [
        res("small", 10, last_used=1),
        res("big", 500, last_used=2),
        res("new", 100, last_used=3),
    ]
    assert choose_victims(residents, 400 * MB, 0, NOW, "lru") == ["big"]


# --- gdsf --------------------------------------------------------------------------------


def test_gdsf_keeps_the_frequently_used() -> None:
    residents = [res("popular", last_used=1, uses=100), res("rare", last_used=9, uses=1)]
    assert choose_victims(residents, 100 * MB, 0, NOW, "gdsf") == ["rare"]


def test_gdsf_keeps_what_is_slow_to_reload() -> None:
    residents = [
        res("slow", last_used=1, load_seconds=30),
        res("fast", last_used=9, load_seconds=0.5),
    ]
    assert choose_victims(residents, 100 * MB, 0, NOW, "gdsf") == ["fast"]


def test_gdsf_prefers_evicting_large_over_small_of_equal_value_per_model() -> None:
    # same uses and load time: the big one saves less per byte held
    residents = [res("small", 50, last_used=1), res("big", 400, last_used=9)]
    assert choose_victims(residents, 40 * MB, 0, NOW, "gdsf") == ["big"]


def test_gdsf_evicts_several_lowest_value_first() -> None:
    residents = [res("a", uses=1), res("b", uses=2), res("c", uses=3), res("d", uses=4)]
    assert choose_victims(residents, 250 * MB, 0, NOW, "gdsf") == ["a", "b", "c"]


def test_gdsf_equal_value_falls_back_to_lru() -> None:
    residents = [res("new", last_used=9, load_seconds=0), res("old", last_used=1, load_seconds=0)]
    assert choose_victims(residents, 100 * MB, 0, NOW, "gdsf") == ["old"]


def test_gdsf_state_inflates_and_forgets_victims() -> None:
    a, b = res("a", uses=1), res("b", uses=5)
    state = record_use(record_use(PolicyState(), a), b)
    victims, after = plan_eviction([a, b], 100 * MB, 0, NOW, state, "gdsf")
    assert victims == ["a"]
    assert after.inflation == pytest.approx(state.priorities["a"])
    assert set(after.priorities) == {"b"}
    # the input state is never mutated
    assert set(state.priorities) == {"a", "b"}
    assert state.inflation == 0.0


def test_gdsf_aging_lets_a_once_popular_model_go() -> None:
    # "old" served 10 requests before a round of evictions raised L; "fresh" served 2 since.
    old, fresh = res("old", uses=10), res("fresh", uses=2)
    state = record_use(PolicyState(), old)
    state = PolicyState(inflation=100.0, priorities=state.priorities)  # after evictions
    state = record_use(state, fresh)
    assert choose_victims([old, fresh], 100 * MB, 0, NOW, "gdsf", state) == ["old"]
    # without the state (no aging) frequency alone decides
    assert choose_victims([old, fresh], 100 * MB, 0, NOW, "gdsf") == ["fresh"]


def test_gdsf_unrecorded_resident_is_valued_as_just_used() -> None:
    state = PolicyState(inflation=100.0, priorities={"stale": 1.0})
    residents = [res("stale"), res("unrecorded")]
    assert choose_victims(residents, 100 * MB, 0, NOW, "gdsf", state) == ["stale"]


def test_cannot_fit_leaves_state_unchanged() -> None:
    state = record_use(PolicyState(), res("a"))
    victims, after = plan_eviction([res("a")], 500 * MB, 0, NOW, state, "gdsf")
    assert victims is None
    assert after is state


def test_lru_passes_state_through() -> None:
    state = record_use(PolicyState(), res("a"))
    _, after = plan_eviction([res("a")], 100 * MB, 0, NOW, state, "lru")
    assert after is state


def test_forget_drops_keys() -> None:
    state = record_use(record_use(PolicyState(), res("a")), res("b"))
    assert set(forget(state, ["a", "zzz"]).priorities) == {"b"}
