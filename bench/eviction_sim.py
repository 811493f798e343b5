"""Simulate on-demand loading under a memory budget and compare eviction policies.

A Zipf request trace over many models of random sizes (lognormal, clipped to 5-200 MB) whose
load time is proportional to size (plus an optional fixed cost), a budget that holds about
ten average models, and the real policy code (``modelyard.manager.eviction``) deciding what to
unload. Prints a markdown table per policy: hit ratio, loads, evictions, bytes loaded and
seconds spent loading.

    python bench/eviction_sim.py
    python bench/eviction_sim.py --models 100 --budget-models 10 --requests 200000 --zipf-s 1.0
    python bench/eviction_sim.py --shift-every 20000   # popularity reshuffles: tests aging

Models are served one request at a time, so nothing is ever busy; ``uses`` counts a model's
requests across loads (the manager keeps that history), and ``gdsf (no state)`` is GDSF
called without its PolicyState, i.e. without aging.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from modelyard.manager.eviction import PolicyState, Resident, plan_eviction, record_use

MB = 1_000_000


@dataclass
class Model:
    key: str
    bytes: int
    load_seconds: float


@dataclass
class Outcome:
    policy: str
    requests: int = 0
    hits: int = 0
    loads: int = 0
    evictions: int = 0
    bytes_loaded: int = 0
    load_seconds: float = 0.0
    refused: int = 0


def make_models(
    rng: np.random.Generator, count: int, mb_per_s: float, fixed_s: float
) -> list[Model]:
    sizes_mb = np.clip(rng.lognormal(mean=np.log(30.0), sigma=1.0, size=count), 5.0, 200.0)
    return [
        Model(f"m{i:03d}", int(mb * MB), float(mb / mb_per_s + fixed_s))
        for i, mb in enumerate(sizes_mb)
    ]


def zipf_weights(count: int, s: float) -> np.ndarray:
    """Request shares by popularity rank: ``1 / rank**s``, normalised (bench/fleet_sim.py too)."""
    weights = 1.0 / np.arange(1, count + 1) ** s
    return np.asarray(weights / weights.sum())


def make_trace(
    rng: np.random.Generator, count: int, requests: int, s: float, shift_every: int
) -> np.ndarray:
    """Model indices; popularity ranks are a random permutation, reshuffled every shift."""
    weights = zipf_weights(count, s)
    trace = np.empty(requests, dtype=np.int64)
    chunk = shift_every or requests
    for start in range(0, requests, chunk):
        ranks = rng.permutation(count)  # ranks[r] is the model at popularity rank r
        n = min(chunk, requests - start)
        trace[start : start + n] = ranks[rng.choice(count, size=n, p=weights)]
    return trace


def simulate(
    models: list[Model], trace: np.ndarray, budget: int, policy: str, stateful: bool
) -> Outcome:
    out = Outcome(policy if stateful or policy == "lru" else f"{policy} (no state)")
    resident: dict[str, Resident] = {}
    uses: dict[str, int] = {}
    state = PolicyState()
    used = 0
    for now, index in enumerate(trace.tolist()):
        model = models[index]
        out.requests += 1
        uses[model.key] = uses.get(model.key, 0) + 1
        if model.key in resident:
            out.hits += 1
        else:
            victims, next_state = plan_eviction(
                list(resident.values()), model.bytes, budget - used, float(now), state, policy
            )
            if victims is None:
                out.refused += 1
                continue
            state = next_state if stateful else PolicyState()
            for key in victims:
                used -= resident.pop(key).bytes
            out.evictions += len(victims)
            out.loads += 1
            out.bytes_loaded += model.bytes
            out.load_seconds += model.load_seconds
            used += model.bytes
        current = Resident(
            model.key, model.bytes, float(now), uses[model.key], model.load_seconds, busy=False
        )
        resident[model.key] = current
        if stateful:
            state = record_use(state, current)
    return out


def render(outcomes: list[Outcome], header: str) -> str:
    base = outcomes[0]
    lines = [
        header,
        "",
        "| policy | hit ratio | loads | evictions | GB loaded | load seconds | vs lru (load s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        ratio = o.load_seconds / base.load_seconds if base.load_seconds else float("nan")
        lines.append(
            f"| {o.policy} | {o.hits / o.requests:.3f} | {o.loads} | {o.evictions} "
            f"| {o.bytes_loaded / 1e9:.1f} | {o.load_seconds:.0f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument(
        "--budget-models", type=float, default=10.0, help="budget in average model sizes"
    )
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--zipf-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-mb-per-s", type=float, default=100.0, help="load throughput")
    parser.add_argument("--load-fixed-s", type=float, default=0.0, help="fixed cost per load")
    parser.add_argument(
        "--shift-every", type=int, default=0, help="reshuffle popularity every N requests"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    models = make_models(rng, args.models, args.load_mb_per_s, args.load_fixed_s)
    trace = make_trace(rng, args.models, args.requests, args.zipf_s, args.shift_every)
    mean = sum(m.bytes for m in models) / len(models)
    budget = int(args.budget_models * mean)
    outcomes = [
        simulate(models, trace, budget, "lru", stateful=True),
        simulate(models, trace, budget, "gdsf", stateful=False),
        simulate(models, trace, budget, "gdsf", stateful=True),
    ]
    header = (
        f"{args.requests} requests, Zipf s={args.zipf_s}, {args.models} models "
        f"(mean {mean / MB:.0f} MB), budget {budget / MB:.0f} MB (~{args.budget_models:g} models), "
        f"load {args.load_mb_per_s:g} MB/s + {args.load_fixed_s:g} s, "
        f"shift every {args.shift_every or 'never'}, seed {args.seed}"
    )
    print(render(outcomes, header))
    refused = [o for o in outcomes if o.refused]
    for o in refused:
        print(f"\n{o.policy}: {o.refused} requests refused (model larger than the whole budget)")


if __name__ == "__main__":
    main()
