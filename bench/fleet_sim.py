"""Simulate a fleet of modelyard servers behind a router: which routing strategy needs fewest servers?

A discrete-event simulation of ``--servers`` servers sharing a catalogue of ``--models``
models. Each server is a modelyard manager in miniature: a memory budget (read by the
manager's own ``parse_budget``), admission that books a model before its load and evicts idle
models to fit, eviction decided by the manager's own policy (``modelyard.manager.eviction``:
``plan_eviction`` on a snapshot built as ``manager/_admission.py`` builds it), one load at a
time (the manager serialises measured loads), loads shared by the requests that wait for them,
and ``--workers`` inference slots. Requests arrive as a Poisson stream with Zipf popularity that
rotates over time (``--rotate-every`` seconds the ranks move ``--rotate-step`` places: models
climb and the hottest fall out), and each is routed by one strategy:

``round-robin``
    servers in turn (HAProxy ``balance roundrobin``, Envoy ``ROUND_ROBIN``).
``least-loaded``
    Envoy's ``LEAST_REQUEST`` as it is by default: two servers drawn at random, the one with
    fewer active requests (power of two choices; HAProxy's ``leastconn`` scans them all).
``consistent-hash``
    a hash ring of the servers (``--vnodes`` points each) keyed on the model name: every
    request for a model goes to its owner.
``bounded-load``
    the same ring with HAProxy's ``hash-balance-factor`` rule (``chash_server_is_eligible`` in
    HAProxy's lb_chash.c, after Mirrokni et al., "Consistent Hashing with Bounded Loads"): with
    ``T`` requests active in the fleet, ``ceil((T + 1) * factor / 100)`` slots are shared out
    among the servers (whole slots each, the remainder by server order, never fewer than one),
    and a server is eligible while its active requests are fewer than its slots; a request
    walks the ring from its owner to the first eligible server.
``sagemaker-mme``
    what SageMaker documents for multi-model endpoints: a request goes to an instance where its
    model is already loaded; "if the model receives many invocation requests" it goes to
    another instance, which loads it. Assumed here: among the instances holding the model and
    with a worker free, the one with the fewest active requests; when every holder has every
    worker busy (and for a model loaded nowhere), the instance with the fewest active requests
    in the fleet (ties at random). This router knows every server's residents, which a hashing
    proxy does not.

Latency = wait for the model (its load, queued behind the server's other loads, when it is not
resident) + wait for a worker slot + service time. Model sizes, load times and service times
come from ``MEASURED`` (see there and docs/fleet-simulation.md for where each comes from).

    python bench/fleet_sim.py                 # the full run: table, search, plot (a few minutes)
    python bench/fleet_sim.py --quick         # small and fast (what the tests run)
    python bench/fleet_sim.py --strategies consistent-hash,bounded-load --no-search

The table covers the requests after ``--warmup`` of the trace (caches filled); it is the same
for the same arguments and seed.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import heapq
import math
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelyard.manager.eviction import DEFAULT_POLICY, PolicyState, Resident, plan_eviction, value
from modelyard.manager.memory import parse_budget

# run as a script, bench/ is already first on sys.path; imported (tests), its siblings come last
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

from eviction_sim import zipf_weights  # noqa: E402

MB = 1_000_000
MiB = 1 << 20

STRATEGIES = ("round-robin", "least-loaded", "consistent-hash", "bounded-load", "sagemaker-mme")

#: What the simulation takes from measurements (docs/fleet-simulation.md, "Where the numbers
#: come from"). Load and service time against model.onnx size: least-squares fits of
#: ``bench/fleet_loads.py`` (real loads through ``POST /v2/repository/models/<m>/load`` of ONNX
#: MLPs of 0.5-258 MB on this 2-core machine). ``fetch_s``: the median extra time of a first
#: request from the S3 store (moto on loopback) over one from the disk cache, docs/performance.md
#: ("Cold start vs warm": 50 vs 17 ms). The books hold 2 x files + 8 MiB for these models (the
#: measured growth is below the manager's prediction from the files, so the prediction stands),
#: which is what the budget is charged. File sizes: lognormal around the 3.4 MB median of the
#: 100-model set of bench/many_models.py, with sigma 1.0 for a longer tail, clipped to 0.5-200 MB.
MEASURED = {
    "load_s_intercept": -0.0142,
    "load_s_per_mb": 0.00458,
    "load_s_min": 0.005,
    "fetch_s": 0.033,
    "service_ms_intercept": 0.412,
    "service_ms_per_mb": 0.0212,
    "service_sigma": 0.5,  # lognormal spread per request: measured p99/p50 of 1.4-3.9
    "file_mb_median": 3.4,
    "file_mb_sigma": 1.0,
    "file_mb_min": 0.5,
    "file_mb_max": 200.0,
}


@dataclass(frozen=True)
class Catalogue:
    """The models: what each books (bytes), takes to load (s) and to serve (median s)."""

    names: list[str]
    bytes: np.ndarray
    load_s: np.ndarray
    service_s: np.ndarray


def make_catalogue(rng: np.random.Generator, count: int) -> Catalogue:
    m = MEASURED
    file_mb = np.clip(
        rng.lognormal(math.log(m["file_mb_median"]), m["file_mb_sigma"], count),
        m["file_mb_min"],
        m["file_mb_max"],
    )
    booked = (2 * file_mb * MB + 8 * MiB).astype(np.int64)
    local = np.maximum(m["load_s_intercept"] + m["load_s_per_mb"] * file_mb, m["load_s_min"])
    service = (m["service_ms_intercept"] + m["service_ms_per_mb"] * file_mb) / 1000
    return Catalogue(
        [f"model-{i:05d}" for i in range(count)], booked, local + m["fetch_s"], service
    )


@dataclass(frozen=True)
class Trace:
    """Requests in arrival order: time (s), model index, service time (s)."""

    times: np.ndarray
    models: np.ndarray
    service: np.ndarray
    order: np.ndarray  # popularity order at time 0: order[rank] is a model index
    rotate_every: float
    rotate_step: int

    def hottest(self, at: float, k: int) -> np.ndarray:
        """The ``k`` most popular models at time ``at``."""
        shift = int(at // self.rotate_every) * self.rotate_step if self.rotate_every else 0
        return np.asarray(self.order[(np.arange(k) + shift) % len(self.order)])


def make_trace(
    rng: np.random.Generator,
    catalogue: Catalogue,
    requests: int,
    rate: float,
    zipf_s: float,
    rotate_every: float,
    rotate_step: int,
) -> Trace:
    count = len(catalogue.names)
    times = np.cumsum(rng.exponential(1.0 / rate, requests))
    ranks = rng.choice(count, size=requests, p=zipf_weights(count, zipf_s))
    order = rng.permutation(count)
    if rotate_every:
        ranks = (ranks + (times // rotate_every).astype(np.int64) * rotate_step) % count
    models = order[ranks]
    service = catalogue.service_s[models] * rng.lognormal(0.0, MEASURED["service_sigma"], requests)
    return Trace(times, models, service, order, rotate_every, rotate_step)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Ring:
    """A consistent-hash ring: ``vnodes`` points per server, a key owned by the next point."""

    def __init__(self, servers: Sequence[str], vnodes: int) -> None:
        points = sorted(
            (_hash(f"{s}#{v}"), i) for i, s in enumerate(servers) for v in range(vnodes)
        )
        self.points = [p for p, _ in points]
        self.owners = [i for _, i in points]
        self.size = len(servers)

    def start(self, key: str) -> int:
        """The ring position a key's walk starts at."""
        return bisect.bisect(self.points, _hash(key)) % len(self.points)

    def owner(self, key: str) -> int:
        return self.owners[self.start(key)]

    def walk(self, key: str) -> list[int]:
        """Every server once, in ring order from the key's owner (the spill order)."""
        seen: list[int] = []
        i = self.start(key)
        while len(seen) < self.size:
            s = self.owners[i]
            if s not in seen:
                seen.append(s)
            i = (i + 1) % len(self.owners)
        return seen


def bounded_slot(server: int, total_active: int, factor: int, servers: int) -> int:
    """HAProxy's slots for one server (equal weights) under ``hash-balance-factor`` ``factor``.

    ``chash_server_is_eligible``: ``tot_slots = ceil((served + 1) * factor / 100)`` where
    ``served`` is the backend's active requests, a whole number of slots per server, the
    remainder to servers by their cumulative weight (here: their order), and at least one.
    """
    tot = ((total_active + 1) * factor + 99) // 100
    per, rem = divmod(tot, servers)
    return max(per + ((server + 1) * rem) // servers - (server * rem) // servers, 1)


@dataclass
class Result:
    strategy: str
    servers: int
    requests: int = 0
    hits: int = 0
    joined: int = 0  # arrived while their model was loading on that server
    loads: int = 0
    evictions: int = 0
    refused: int = 0
    seconds: float = 0.0  # simulated time of the measured window
    p50: float = 0.0
    p99: float = 0.0
    copies_top1: float = 0.0
    copies_top10: float = 0.0
    max_active_over_cap: int = 0  # bounded-load: times a chosen server was at its cap (0)
    wall_s: float = 0.0
    latencies: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else float("nan")

    @property
    def loads_per_hour(self) -> float:
        return self.loads / self.seconds * 3600 if self.seconds else float("nan")


class _Server:
    """One server's books: residents, per-model history, load queue, workers, active requests."""

    __slots__ = (
        "active",
        "budget",
        "inflation",
        "load_free",
        "residents",
        "slots",
        "snaps",
        "stamps",
        "used",
        "uses",
    )

    def __init__(self, budget: int, workers: int) -> None:
        self.budget = budget
        self.used = 0
        # model -> [bytes, last_used, load_s, ready_at, busy_until]
        self.residents: dict[int, list[float]] = {}
        self.uses: dict[int, int] = {}  # requests served, across loads (the manager's history)
        self.stamps: dict[int, float] = {}  # GDSF's L at the model's last use (usage.inflation)
        self.snaps: dict[int, tuple[Resident, int, bool, float]] = {}  # snapshots, reused
        self.inflation = 0.0
        self.load_free = 0.0
        self.slots = [0.0] * workers
        self.active: list[float] = []  # finish times of requests routed here, a heap

    def active_at(self, now: float) -> int:
        heap = self.active
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        return len(heap)

    def plan(self, need: int, now: float, catalogue: Catalogue, policy: str) -> list[int] | None:
        """Victims, as Admission._make_room asks the manager's policy for them."""
        free = self.budget - self.used
        if free >= need:
            return []  # what plan_eviction answers at once, without a snapshot
        uses, stamps, snaps = self.uses, self.stamps, self.snaps
        residents = []
        priorities = {}
        for m, r in self.residents.items():
            busy = r[3] > now or r[4] > now  # loading, or requests in flight
            snap = snaps.get(m)
            if snap is None or snap[1] != uses[m] or snap[2] != busy:
                # Resident(key, bytes, last_used, uses, load_seconds, busy); each model's GDSF
                # priority was fixed at its last use: L then, plus its value now
                x = Resident(str(m), int(r[0]), r[1], uses[m], r[2], busy)
                snap = snaps[m] = (x, uses[m], busy, stamps[m] + value(x))
            residents.append(snap[0])
            priorities[snap[0].key] = snap[3]
        victims, state = plan_eviction(
            residents, need, free, now, PolicyState(self.inflation, priorities), policy
        )
        if victims is None:
            return None
        self.inflation = state.inflation
        return [int(v) for v in victims]


def simulate(
    catalogue: Catalogue,
    trace: Trace,
    servers: int,
    strategy: str,
    budget: int,
    *,
    workers: int = 4,
    balance_factor: int = 125,
    vnodes: int = 100,
    warmup: float = 0.3,
    policy: str = DEFAULT_POLICY,
    seed: int = 0,
    samples: int = 20,
    check: Callable[[int, int, list[int]], None] | None = None,
) -> Result:
    """Run one strategy over the trace; ``check(server, total_active, actives)`` sees each
    bounded-load decision (tests use it)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    started = time.perf_counter()
    fleet = [_Server(budget, workers) for _ in range(servers)]
    names = [f"server-{i:03d}" for i in range(servers)]
    ring = Ring(names, vnodes)
    holders: dict[int, set[int]] = {}
    rng = np.random.default_rng(seed)
    sizes = catalogue.bytes.tolist()
    load_s = catalogue.load_s.tolist()
    times = trace.times.tolist()
    models = trace.models.tolist()
    service = trace.service.tolist()
    n = len(times)
    first = int(n * warmup)
    result = Result(strategy, servers)
    latencies = np.empty(n - first)
    all_active: list[float] = []
    owners: dict[int, int] = {}
    walks: dict[int, list[int]] = {}
    picks = rng.integers(0, servers, size=(n, 2)).tolist() if strategy == "least-loaded" else []
    t_start = times[first] if first < n else 0.0
    sample_at = [t_start + (times[-1] - t_start) * (k + 0.5) / samples for k in range(samples)]
    top1: list[int] = []
    top10: list[float] = []

    def route(i: int, now: float, m: int) -> int:
        if strategy == "round-robin":
            return i % servers
        if strategy == "least-loaded":
            a, b = picks[i]
            return a if fleet[a].active_at(now) <= fleet[b].active_at(now) else b
        if strategy == "consistent-hash":
            owner = owners.get(m)
            if owner is None:
                owner = owners[m] = ring.owner(catalogue.names[m])
            return owner
        if strategy == "bounded-load":
            while all_active and all_active[0] <= now:
                heapq.heappop(all_active)
            total = len(all_active)
            walk = walks.get(m)
            if walk is None:
                walk = walks[m] = ring.walk(catalogue.names[m])
            for s in walk:
                if fleet[s].active_at(now) < bounded_slot(s, total, balance_factor, servers):
                    if check is not None:
                        check(s, total, [f.active_at(now) for f in fleet])
                    return s
            raise AssertionError("no eligible server: the slots always exceed the active requests")
        # sagemaker-mme: the least busy holder, unless every worker of every holder is busy
        best, best_active = -1, 0
        for s in holders.get(m, ()):
            if all(free > now for free in fleet[s].slots):
                continue
            a = fleet[s].active_at(now)
            if best < 0 or a < best_active or (a == best_active and s < best):
                best, best_active = s, a
        if best >= 0:
            return best
        actives = [f.active_at(now) for f in fleet]
        least = min(actives)
        idle = [s for s, a in enumerate(actives) if a == least]
        return idle[int(rng.integers(len(idle)))] if len(idle) > 1 else idle[0]

    track_active = strategy in ("least-loaded", "bounded-load", "sagemaker-mme")
    next_sample = 0
    for i in range(n):
        now, m = times[i], models[i]
        while next_sample < samples and now >= sample_at[next_sample]:
            hot = trace.hottest(now, 10).tolist()
            counts = [len(holders.get(h, ())) for h in hot]
            top1.append(counts[0])
            top10.append(sum(counts) / len(counts))
            next_sample += 1
        s = route(i, now, m)
        server = fleet[s]
        entry = server.residents.get(m)
        measured = i >= first
        if entry is None:
            need = sizes[m]
            if need > server.budget:
                if measured:
                    result.requests += 1
                    result.refused += 1
                    latencies[i - first] = math.inf
                continue
            at = now
            victims = server.plan(need, at, catalogue, policy)
            while victims is None:  # every idle model is too little: wait for a busy one
                at = min(max(r[3], r[4]) for r in server.residents.values() if max(r[3], r[4]) > at)
                victims = server.plan(need, at, catalogue, policy)
            for v in victims:
                gone = server.residents.pop(v)
                server.used -= int(gone[0])
                holders[v].discard(s)
            server.used += need
            start = max(at, server.load_free)
            ready = start + load_s[m]
            server.load_free = ready
            entry = server.residents[m] = [need, now, load_s[m], ready, ready]
            holders.setdefault(m, set()).add(s)
            server.stamps[m] = server.inflation
            if measured:
                result.loads += 1
                result.evictions += len(victims)
        else:
            ready = entry[3]
            if ready <= now:
                server.stamps[m] = server.inflation  # a hit: GDSF's priority set at each use
                if measured:
                    result.hits += 1
            elif measured:
                result.joined += 1
        server.uses[m] = server.uses.get(m, 0) + 1
        entry[1] = now
        ready = max(ready, now)
        # a worker: the one that frees latest but by the time the model is ready, else the first
        slots = server.slots
        best = -1
        for k, free in enumerate(slots):
            if free <= ready and (best < 0 or free > slots[best]):
                best = k
        if best < 0:
            best = min(range(len(slots)), key=slots.__getitem__)
        begin = max(ready, slots[best])
        finish = begin + service[i]
        slots[best] = finish
        if finish > entry[4]:
            entry[4] = finish
        if track_active:
            heapq.heappush(server.active, finish)
            if strategy == "bounded-load":
                heapq.heappush(all_active, finish)
        if measured:
            result.requests += 1
            latencies[i - first] = finish - now
    result.seconds = times[-1] - t_start if n else 0.0
    finite = latencies[np.isfinite(latencies)]
    if len(latencies):
        result.p50 = float(np.percentile(latencies, 50)) if len(finite) else math.inf
        result.p99 = float(np.percentile(latencies, 99)) if len(finite) else math.inf
    result.copies_top1 = float(np.mean(top1)) if top1 else 0.0
    result.copies_top10 = float(np.mean(top10)) if top10 else 0.0
    result.latencies = latencies
    result.wall_s = time.perf_counter() - started
    return result


def servers_needed(
    catalogue: Catalogue,
    trace: Trace,
    strategy: str,
    budget: int,
    target_p99: float,
    grid: Sequence[int],
    runs: dict[int, Result] | None = None,
    **options: object,
) -> tuple[int | None, list[Result]]:
    """The smallest fleet on ``grid`` whose p99 meets the target, and every run (by size).

    A bisection that takes p99 to fall as the fleet grows: the largest size first (``None``
    when even that misses the target), then halving the interval. ``runs`` holds runs already
    made on this trace (by fleet size), reused.
    """
    sizes = sorted(set(grid))
    runs = {} if runs is None else runs

    def meets(k: int) -> bool:
        size = sizes[k]
        if size not in runs:
            runs[size] = simulate(catalogue, trace, size, strategy, budget, **options)  # type: ignore[arg-type]
        return runs[size].p99 <= target_p99

    if not meets(len(sizes) - 1):
        return None, [runs[k] for k in sorted(runs)]
    lo, hi = 0, len(sizes) - 1  # sizes[hi] meets the target
    while lo < hi:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid + 1
    return sizes[hi], [runs[k] for k in sorted(runs)]


def render(results: list[Result], header: str) -> str:
    lines = [
        header,
        "",
        "| strategy | hit ratio | joined a load | loads / hour | evictions / hour "
        "| copies of the hottest (top 1 / top 10) | p50 ms | p99 ms | refused | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.strategy} | {r.hit_ratio:.3f} | {r.joined / max(r.requests, 1):.3f} "
            f"| {r.loads_per_hour:,.0f} | {r.evictions / r.seconds * 3600:,.0f} "
            f"| {r.copies_top1:.1f} / {r.copies_top10:.1f} | {1000 * r.p50:.2f} "
            f"| {1000 * r.p99:.1f} | {r.refused} | {r.wall_s:.1f} |"
        )
    return "\n".join(lines)


def render_search(found: dict[str, tuple[int | None, list[Result]]], target: float) -> str:
    lines = [
        f"Servers needed for p99 <= {1000 * target:g} ms (smallest on the grid; same trace):",
        "",
        "| strategy | servers needed | p99 ms at each size tried |",
        "|---|---:|---|",
    ]
    for strategy, (size, runs) in found.items():
        tried = ", ".join(f"{r.servers}: {1000 * r.p99:.0f}" for r in runs)
        lines.append(
            f"| {strategy} | {size if size is not None else 'more than tried'} | {tried} |"
        )
    return "\n".join(lines)


def plot(
    found: dict[str, tuple[int | None, list[Result]]], target: float, path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for strategy, (_, runs) in found.items():
        xs = [r.servers for r in runs]
        left.plot(xs, [1000 * r.p99 for r in runs], marker="o", label=strategy)
        right.plot(xs, [r.hit_ratio for r in runs], marker="o", label=strategy)
    left.axhline(
        1000 * target, color="grey", linestyle="--", label=f"p99 target {1000 * target:g} ms"
    )
    left.set_yscale("log")
    left.set_xlabel("servers")
    left.set_ylabel("p99 latency, ms (log)")
    left.legend(fontsize=8)
    right.set_xlabel("servers")
    right.set_ylabel("hit ratio")
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small fleet and a short trace")
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=500_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="fleet requests per second")
    parser.add_argument("--budget", default="1GiB", help="each server's --memory-budget")
    parser.add_argument("--workers", type=int, default=4, help="inference slots per server")
    parser.add_argument("--zipf-s", type=float, default=1.0)
    parser.add_argument("--rotate-every", type=float, default=60.0, help="seconds (0: never)")
    parser.add_argument("--rotate-step", type=int, default=20, help="ranks moved each time")
    parser.add_argument("--balance-factor", type=int, default=125, help="hash-balance-factor")
    parser.add_argument("--vnodes", type=int, default=100, help="ring points per server")
    parser.add_argument("--warmup", type=float, default=0.3, help="share of the trace not measured")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="the manager's eviction policy")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--target-p99-ms", type=float, default=100.0)
    parser.add_argument("--grid", default="20,30,40,50,60,70,80,100,120,150,200")
    parser.add_argument(
        "--plot-sizes", default="25,50,100,200", help="fleet sizes every strategy runs (plot)"
    )
    parser.add_argument("--search-requests", type=int, default=200_000)
    parser.add_argument("--no-search", action="store_true")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the fleet-size search")
    parser.add_argument("--seed", type=int, default=0)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in argv:  # smaller defaults; flags given still win
        parser.set_defaults(
            servers=8,
            models=400,
            requests=20_000,
            rate=200.0,
            budget="512MiB",
            search_requests=10_000,
            grid="2,4,8",
            plot_sizes="2,8",
            rotate_every=20.0,
        )
    args = parser.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    try:
        budget = parse_budget(args.budget, total=0)
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 <= args.warmup < 1:
        parser.error("--warmup is a share of the trace: at least 0, below 1")
    if args.balance_factor <= 100:
        parser.error("--balance-factor must be above 100 (HAProxy refuses 1-100, and 0 is off)")

    rng = np.random.default_rng(args.seed)
    catalogue = make_catalogue(rng, args.models)
    trace = make_trace(
        rng, catalogue, args.requests, args.rate, args.zipf_s, args.rotate_every, args.rotate_step
    )
    options = dict(
        workers=args.workers,
        balance_factor=args.balance_factor,
        vnodes=args.vnodes,
        warmup=args.warmup,
        policy=args.policy,
        seed=args.seed,
    )
    total = int(catalogue.bytes.sum())
    header = (
        f"{args.servers} servers x {args.budget} budget ({args.servers * budget / total:.0%} of the "
        f"catalogue's {total / 1e9:.0f} GB), {args.models} models (booked mean "
        f"{catalogue.bytes.mean() / MB:.0f} MB, load mean {1000 * catalogue.load_s.mean():.0f} ms), "
        f"{args.requests:,} requests at {args.rate:g}/s ({trace.times[-1]:.0f} s simulated), "
        f"Zipf s={args.zipf_s}, rotating {args.rotate_step} ranks every "
        f"{args.rotate_every:g} s, {args.workers} workers per server, {args.policy} eviction, "
        f"hash-balance-factor {args.balance_factor}, seed {args.seed}; measured after the first "
        f"{args.warmup:.0%}"
    )
    results = [
        simulate(catalogue, trace, args.servers, s, budget, **options)  # type: ignore[arg-type]
        for s in strategies
    ]
    print(render(results, header))
    if args.no_search:
        return 0
    search_trace = make_trace(
        np.random.default_rng(args.seed + 1),
        catalogue,
        args.search_requests,
        args.rate,
        args.zipf_s,
        args.rotate_every,
        args.rotate_step,
    )
    grid = sorted(int(g) for g in args.grid.split(","))
    sweep = sorted(int(g) for g in args.plot_sizes.split(",")) if args.plot else []
    target = args.target_p99_ms / 1000
    found = {}
    for s in strategies:
        runs = {
            size: simulate(catalogue, search_trace, size, s, budget, **options)  # type: ignore[arg-type]
            for size in sweep
        }
        found[s] = servers_needed(catalogue, search_trace, s, budget, target, grid, runs, **options)
    print()
    print(render_search(found, target))
    if args.plot is not None:
        plot(found, target, args.plot, header.split(";")[0])
        print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
