"""bench/fleet_sim.py: its quick mode runs, and the properties its conclusions rest on hold.

The simulation is imported as the script's own module (bench/ on sys.path, as the script sees
its siblings), so these tests check the code the documented figures came from.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import modelyard.manager.eviction as manager_eviction
import modelyard.manager.memory as manager_memory

BENCH = Path(__file__).resolve().parents[3] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

import eviction_sim  # noqa: E402
import fleet_sim  # noqa: E402


@pytest.fixture(scope="module")
def small() -> tuple[fleet_sim.Catalogue, fleet_sim.Trace]:
    """400 models, 20,000 requests at 200/s, popularity rotating every 20 s."""
    rng = np.random.default_rng(7)
    catalogue = fleet_sim.make_catalogue(rng, 400)
    return catalogue, fleet_sim.make_trace(rng, catalogue, 20_000, 200.0, 1.0, 20.0, 10)


def test_quick_mode_prints_every_strategy_and_writes_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "fleet.png"
    assert fleet_sim.main(["--quick", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    for strategy in fleet_sim.STRATEGIES:
        assert f"| {strategy} |" in out
    assert "Servers needed for p99" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_eviction_policy_and_the_budget_are_the_managers_own() -> None:
    assert fleet_sim.plan_eviction is manager_eviction.plan_eviction
    assert fleet_sim.Resident is manager_eviction.Resident
    assert fleet_sim.PolicyState is manager_eviction.PolicyState
    assert fleet_sim.value is manager_eviction.value
    assert fleet_sim.DEFAULT_POLICY == manager_eviction.DEFAULT_POLICY
    assert fleet_sim.parse_budget is manager_memory.parse_budget


@pytest.mark.parametrize("policy", manager_eviction.POLICIES)
def test_one_server_decides_as_the_single_server_simulation_does(policy: str) -> None:
    """Requests a second apart (nothing is ever busy or loading when the next comes): one
    server of the fleet simulation hits, loads and evicts exactly as bench/eviction_sim.py
    does on the same trace with the manager's policy and its state carried between calls."""
    rng = np.random.default_rng(3)
    catalogue = fleet_sim.make_catalogue(rng, 60)
    drawn = fleet_sim.make_trace(rng, catalogue, 3_000, 1.0, 1.0, 0.0, 0)
    # a request every second, each served in 0.1 ms: loads (at most 0.3 s) end in between
    n = len(drawn.times)
    trace = fleet_sim.Trace(
        np.arange(n, dtype=float), drawn.models, np.full(n, 1e-4), drawn.order, 0.0, 0
    )
    assert catalogue.load_s.max() < 1.0
    budget = int(8 * catalogue.bytes.mean())
    fleet = fleet_sim.simulate(
        catalogue, trace, 1, "round-robin", budget, warmup=0.0, policy=policy, workers=1
    )
    models = [
        eviction_sim.Model(str(i), int(b), float(s))
        for i, (b, s) in enumerate(zip(catalogue.bytes, catalogue.load_s, strict=True))
    ]
    single = eviction_sim.simulate(models, trace.models, budget, policy, stateful=True)
    assert fleet.loads > 100  # the budget is small enough for the policy to matter
    assert (fleet.hits, fleet.loads, fleet.evictions) == (
        single.hits,
        single.loads,
        single.evictions,
    )


def test_removing_a_server_moves_only_its_own_models() -> None:
    names = [f"server-{i:03d}" for i in range(100)]
    keys = [f"model-{i:05d}" for i in range(10_000)]
    before = fleet_sim.Ring(names, 100)
    gone = 42
    after = fleet_sim.Ring([n for i, n in enumerate(names) if i != gone], 100)
    owner_before = {k: names[before.owner(k)] for k in keys}
    remaining = [n for i, n in enumerate(names) if i != gone]
    owner_after = {k: remaining[after.owner(k)] for k in keys}
    moved = {k for k in keys if owner_before[k] != owner_after[k]}
    assert moved == {k for k in keys if owner_before[k] == names[gone]}
    # about 1/N of the models: 100 points per server keep the shares close to even
    assert 0.3 / 100 < len(moved) / len(keys) < 2.0 / 100


def test_haproxy_slots_share_out_exactly_the_total() -> None:
    for servers in (1, 3, 10, 100):
        for active in (0, 1, 7, 99, 100, 101, 1234):
            for factor in (101, 125, 150, 200):
                tot = math.ceil((active + 1) * factor / 100)
                slots = [fleet_sim.bounded_slot(s, active, factor, servers) for s in range(servers)]
                assert min(slots) >= 1
                assert max(slots) <= max(1, math.ceil(tot / servers))
                if tot >= servers:
                    assert sum(slots) == tot


def test_bounded_load_caps_every_server_at_the_balance_factor_times_the_average(
    small: tuple[fleet_sim.Catalogue, fleet_sim.Trace],
) -> None:
    catalogue, trace = small
    factor, servers = 125, 8
    decisions = []

    def check(server: int, total: int, actives: list[int]) -> None:
        cap = max(1, math.ceil(math.ceil(factor * (total + 1) / 100) / servers))
        assert actives[server] + 1 <= cap  # with this request, at most the cap
        assert sum(actives) == total
        decisions.append(server)

    budget = manager_memory.parse_budget("512MiB", 0)
    fleet_sim.simulate(
        catalogue, trace, servers, "bounded-load", budget, balance_factor=factor, check=check
    )
    assert len(decisions) == len(trace.times)
    ring = fleet_sim.Ring([f"server-{i:03d}" for i in range(servers)], 100)
    owners = [ring.owner(catalogue.names[m]) for m in trace.models.tolist()]
    spilled = sum(d != o for d, o in zip(decisions, owners, strict=True))
    assert spilled > 0  # the bound was reached: requests went past their owner


def test_affinity_routing_beats_round_robin_on_hit_ratio_with_small_budgets(
    small: tuple[fleet_sim.Catalogue, fleet_sim.Trace],
) -> None:
    catalogue, trace = small
    budget = int(10 * catalogue.bytes.mean())  # each server holds about 10 of 400 models
    rr = fleet_sim.simulate(catalogue, trace, 8, "round-robin", budget)
    ch = fleet_sim.simulate(catalogue, trace, 8, "consistent-hash", budget)
    mme = fleet_sim.simulate(catalogue, trace, 8, "sagemaker-mme", budget)
    assert ch.hit_ratio > rr.hit_ratio + 0.1
    assert mme.hit_ratio > rr.hit_ratio + 0.1
    assert ch.loads < rr.loads
    # round-robin copies the hottest model everywhere; one owner holds it under hashing
    assert rr.copies_top1 > 4 * ch.copies_top1


def test_the_same_seed_gives_the_same_figures(
    small: tuple[fleet_sim.Catalogue, fleet_sim.Trace],
) -> None:
    catalogue, trace = small
    budget = manager_memory.parse_budget("256MiB", 0)
    a = fleet_sim.simulate(catalogue, trace, 8, "least-loaded", budget, seed=5)
    b = fleet_sim.simulate(catalogue, trace, 8, "least-loaded", budget, seed=5)
    assert (a.hits, a.loads, a.evictions, a.p99) == (b.hits, b.loads, b.evictions, b.p99)
    np.testing.assert_array_equal(a.latencies, b.latencies)


def test_bad_arguments_are_refused_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fleet_sim.main(["--quick", "--strategies", "round-robin,random"])
    assert exit_info.value.code == 2
    assert "unknown strategies ['random']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fleet_sim.main(["--quick", "--budget", "lots"])
    assert "memory budget 'lots' is not understood" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fleet_sim.main(["--quick", "--balance-factor", "100"])
    with pytest.raises(ValueError, match="unknown strategy 'random'"):
        rng = np.random.default_rng(0)
        catalogue = fleet_sim.make_catalogue(rng, 10)
        trace = fleet_sim.make_trace(rng, catalogue, 10, 1.0, 1.0, 0.0, 0)
        fleet_sim.simulate(catalogue, trace, 2, "random", 10**9)
