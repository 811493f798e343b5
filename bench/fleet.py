"""A fleet on one machine: three ``modelyard serve`` behind a real proxy, one shared store.

Each server gets a memory budget that holds about a tenth of the models. One seeded Zipf
trace goes through the proxy four ways, each on a fresh fleet (cold caches): model-affinity
routing on HAProxy and on Envoy (the configs ``modelyard fleet router-config`` writes), the
same without bounded load, and
round-robin (the same HAProxy file with ``balance roundrobin``). Then the trace again with a
server SIGKILLed part-way: failed requests, how long until the proxy took it out and until
its hottest model answered from another server, and how many models of the *live* servers
moved (read from every server's statistics before and after, one request at a time).

    python bench/fleet.py                       # 60 models, 1500 requests (~4 min)
    python bench/fleet.py --models 120 --requests 6000 --zipf-s 1.1

Prints markdown tables (stdout); progress on stderr. Like bench/many_models.py, server errors
are counted with their text and never retried by the client: only the proxy retries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench's modules, and tests/ of the checkout
from tests.integration.fleet_proxies import RunningProxy, start_proxy  # noqa: E402

from many_models import (  # noqa: E402
    BODY,
    MB,
    ModelSpec,
    build_models,
    delta,
    drive,
    pct,
    scrape,
    zipf_trace,
)
from modelyard.testing.server import RunningServer, start_server  # noqa: E402


def log(msg: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def round_robin(text: str) -> str:
    """The generated HAProxy file with its one routing decision changed: round-robin."""
    out = text.replace("balance hash var(txn.model)", "balance roundrobin")
    return "\n".join(line for line in out.splitlines() if "hash-" not in line) + "\n"


@contextlib.contextmanager
def fleet(store: Path, budget: int, workdir: Path, n: int = 3) -> Iterator[list[RunningServer]]:
    servers: list[RunningServer] = []
    try:
        for _ in range(n):
            args = ["--memory-budget", str(budget), "--load-wait-timeout", "120"]
            servers.append(start_server(store, args, timeout=120))
        yield servers
    finally:
        for i, s in enumerate(servers):
            s.stop()
            with contextlib.suppress(OSError):
                shutil.copy(s.log_path, workdir / f"server-{i}.log")
                s.log_path.unlink()


def totals(servers: list[RunningServer]) -> dict[str, float]:
    out: Counter[str] = Counter()
    for s in servers:
        if s.process.poll() is None:
            out.update(scrape(s))
    return dict(out)


def per_model(server: RunningServer) -> dict[str, int]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("GET", "/v2/models/stats")
        body = orjson.loads(conn.getresponse().read())
    finally:
        conn.close()
    counts: Counter[str] = Counter()
    for row in body.get("model_stats", []):
        counts[row["name"]] += int(row["inference_stats"]["success"]["count"])
    return dict(counts)


def post(proxy: RunningProxy, name: str, timeout: float = 120) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request("POST", f"/v2/models/{name}/infer", BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def placement(
    proxy: RunningProxy, servers: list[RunningServer], names: list[str]
) -> dict[str, int]:
    """Which server answers each model, one request at a time (no load: the ring alone)."""
    live = [i for i, s in enumerate(servers) if s.process.poll() is None]
    before = {i: per_model(servers[i]) for i in live}
    for name in names:
        post(proxy, name)
    after = {i: per_model(servers[i]) for i in live}
    found = {}
    for name in names:
        got = {i: after[i].get(name, 0) - before[i].get(name, 0) for i in live}
        found[name] = max(got, key=lambda i: got[i])
    return found


@dataclass
class Row:
    routing: str
    requests: int
    errors: int
    hit_ratio: float
    loads: int
    evictions: int
    p50_ms: float
    p99_ms: float
    rps: float
    error_kinds: Counter[str]


def run_trace(
    label: str,
    router: str,
    servers: list[RunningServer],
    workdir: Path,
    names: list[str],
    trace: list[int],
    concurrency: int,
    rewrite: Callable[[str], str] | None = None,
    balance_factor: int = 150,
) -> tuple[Row, RunningProxy]:
    proxy = start_proxy(
        router, [s.url for s in servers], balance_factor, folder=workdir, rewrite=rewrite
    )
    before = totals(servers)
    target: Any = SimpleNamespace(host="127.0.0.1", port=proxy.port)
    got = asyncio.run(drive(target, names, trace, concurrency, 300))
    after = totals(servers)
    hits = delta(after, before, "modelyard_model_cache_hits_total")
    misses = delta(after, before, "modelyard_model_cache_misses_total")
    row = Row(
        routing=label,
        requests=len(trace),
        errors=sum(got.errors.values()),
        hit_ratio=hits / (hits + misses) if hits + misses else float("nan"),
        loads=int(delta(after, before, "modelyard_model_load_seconds_count")),
        evictions=int(delta(after, before, "modelyard_model_evictions_total")),
        p50_ms=pct(got.latencies, 0.5) * 1e3,
        p99_ms=pct(got.latencies, 0.99) * 1e3,
        rps=len(got.latencies) / got.wall if got.wall else float("nan"),
        error_kinds=got.errors,
    )
    log(f"{label}: {row.hit_ratio:.3f} hit ratio, p99 {row.p99_ms:.1f} ms, {row.errors} errors")
    return row, proxy


@dataclass
class KillRow:
    router: str
    requests: int
    failed: int
    down_after_s: float
    served_again_s: float
    victim_models: int
    others: int
    others_moved: int
    error_kinds: Counter[str]


def run_kill(
    router: str,
    store: Path,
    budget: int,
    workdir: Path,
    names: list[str],
    trace: list[int],
    concurrency: int,
    hottest: str,
) -> KillRow:
    folder = workdir / f"kill-{router}"
    folder.mkdir()
    with fleet(store, budget, folder) as servers:
        proxy = start_proxy(router, [s.url for s in servers], folder=folder)
        try:
            before = placement(proxy, servers, names)
            victim = before[hottest]
            killed_at: list[float] = []
            down_after: list[float] = []
            served_after: list[float] = []

            def killer() -> None:
                time.sleep(0.5)  # mid-trace: the trace takes a few seconds or more
                servers[victim].process.kill()
                t0 = time.monotonic()
                killed_at.append(t0)
                while post(proxy, hottest) != 200:  # the hottest model, from its next owner
                    time.sleep(0.01)
                served_after.append(time.monotonic() - t0)
                url = servers[victim].url
                while proxy.servers_up().get(url, True):
                    time.sleep(0.02)
                down_after.append(time.monotonic() - t0)

            thread = threading.Thread(target=killer)
            thread.start()
            target: Any = SimpleNamespace(host="127.0.0.1", port=proxy.port)
            got = asyncio.run(drive(target, names, trace, concurrency, 300))
            thread.join()
            after = placement(proxy, servers, names)
        finally:
            proxy.stop()
    others = [n for n in names if before[n] != victim]
    row = KillRow(
        router=router,
        requests=len(trace),
        failed=sum(got.errors.values()),
        down_after_s=down_after[0] if down_after else float("nan"),
        served_again_s=served_after[0] if served_after else float("nan"),
        victim_models=len(names) - len(others),
        others=len(others),
        others_moved=sum(1 for n in others if after[n] != before[n]),
        error_kinds=got.errors,
    )
    log(f"kill/{router}: {row.failed} failed, {row.others_moved}/{row.others} others moved")
    return row


def render(
    rows: list[Row], kills: list[KillRow], specs: list[ModelSpec], args: Any, budget: int
) -> str:
    mean_mb = sum(s.onnx_bytes for s in specs) / len(specs) / MB
    out = [
        f"{len(specs)} models (ONNX MLPs, mean {mean_mb:.1f} MB of weights), 3 servers, memory "
        f"budget {budget / MB:.0f} MB each (about a tenth of the models), Zipf s={args.zipf_s}, "
        f"{args.requests} requests, {args.concurrency} concurrent clients through the proxy, "
        "each routing on a fresh fleet (cold).",
        "",
        "| routing | fleet hit ratio | loads | evictions | p50 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.routing} | {r.hit_ratio:.3f} | {r.loads} | {r.evictions} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.rps:.0f} | {r.errors} |"
        )
    out += [
        "",
        "A server SIGKILLed 0.5 s into the same trace (affinity routing, bounded load 150%):",
        "",
        "| router | requests | failed | hottest model served again after | proxy took the server "
        "out after | models of live servers that moved |",
        "|---|---|---|---|---|---|",
    ]
    for k in kills:
        out.append(
            f"| {k.router} | {k.requests} | {k.failed} | {k.served_again_s * 1e3:.0f} ms "
            f"| {k.down_after_s * 1e3:.0f} ms | {k.others_moved} of {k.others} |"
        )
    kinds = Counter[str]()
    for r in rows:
        kinds.update(r.error_kinds)
    for k in kills:
        kinds.update({f"{k.router}: {e}": n for e, n in k.error_kinds.items()})
    if kinds:
        out += ["", "Errors:", ""] + [f"- {n} x {e}" for e, n in kinds.most_common(10)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=int, default=60)
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--zipf-s", type=float, default=1.0)
    p.add_argument("--min-mb", type=float, default=1.0, help="smallest model's weights, MB")
    p.add_argument("--max-mb", type=float, default=4.0, help="largest model's weights, MB")
    p.add_argument("--budget-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="modelyard-fleet-bench-"))
    try:
        store = workdir / "store"
        specs = build_models(store, args.models, args.min_mb, args.max_mb, args.seed)
        names = [s.name for s in specs]
        budget = int(sum(s.predicted_bytes for s in specs) * args.budget_fraction)
        trace = zipf_trace(len(specs), args.requests, args.zipf_s, args.seed)
        hottest = names[Counter(trace).most_common(1)[0][0]]
        log(f"{len(specs)} models in {store}, budget {budget / MB:.0f} MB per server")
        rows = []
        for i, (label, router, rewrite, factor) in enumerate(
            (
                ("affinity, bounded load 150% (HAProxy)", "haproxy", None, 150),
                ("affinity, bounded load 150% (Envoy)", "envoy", None, 150),
                ("affinity, unbounded (HAProxy)", "haproxy", None, 0),
                ("round-robin (HAProxy)", "haproxy", round_robin, 150),
            )
        ):
            folder = workdir / f"run-{i}"
            folder.mkdir(parents=True)
            with fleet(store, budget, folder) as servers:
                row, proxy = run_trace(
                    label, router, servers, folder, names, trace, args.concurrency, rewrite, factor
                )
                proxy.stop()
                rows.append(row)
        kills = [
            run_kill(r, store, budget, workdir, names, trace, args.concurrency, hottest)
            for r in ("haproxy", "envoy")
        ]
        print(render(rows, kills, specs, args, budget))
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
