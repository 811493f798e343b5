"""Benchmark modelyard against in-process onnxruntime and, with --peers, Triton, MLServer and a
bare Starlette floor. Prints a markdown table of req/s and p50/p99 latency per concurrency.

    python bench/run.py                    # modelyard + in-process onnxruntime
    python bench/run.py --peers            # ... plus Triton, MLServer and the HTTP floor
    python bench/run.py --peers --output bench/results/latest.md
    python bench/run.py --quick            # before any performance claim: ~3 min, with ratios

Each server is started, checked (its outputs must match onnxruntime's), warmed, measured and
stopped in turn; never two at once. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadgen import CellResult, run_cell
from machine import Machine, cpu_model
from report import OTHER_CPU_NOTE, Results, aims, render
from servers import PEERS, SERVERS, Server, ServerUnavailable
from workloads import DEFAULT_ENCODINGS, ENCODINGS, WORKLOADS


def _csv(kind: type, choices: tuple[str, ...] | None = None):
    def parse(text: str) -> list:
        items = [kind(x) for x in text.split(",") if x.strip()]
        if choices is not None:
            bad = [x for x in items if x not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {choices}")
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--peers", action="store_true", help="also measure Triton, MLServer, floor")
    p.add_argument(
        "--quick",
        action="store_true",
        help="the check before a performance claim: --peers, both models and HTTP encodings, "
        "c=1/16/64, 0.5 s warm-up + 2 s measured, 1 run, busy runs measured again once",
    )
    p.add_argument(
        "--servers",
        type=_csv(str, tuple(SERVERS)),
        help="exactly these servers (overrides --peers), e.g. floor,triton",
    )
    p.add_argument("--models", type=_csv(str, tuple(WORKLOADS)), default=list(WORKLOADS))
    p.add_argument(
        "--encodings",
        type=_csv(str, ENCODINGS),
        default=list(DEFAULT_ENCODINGS),
        help="json, binary (HTTP) and grpc (KServe v2 gRPC, raw tensors; Triton's port)",
    )
    p.add_argument("--concurrency", type=_csv(int), default=[1, 16, 64])
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    p.add_argument("--repeats", type=int, default=2, help="runs per cell; the median is shown")
    p.add_argument(
        "--retry-busy",
        type=int,
        default=0,
        help="measure a run again, up to N times, when other processes took CPU during it",
    )
    p.add_argument("--output", type=Path, help="also write the markdown here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (repositories, logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.peers = True
        given = set(argv if argv is not None else sys.argv[1:])
        # --quick sets the timings unless they were given too
        for flag, name, value in (
            ("--duration", "duration", 2.0),
            ("--warmup", "warmup", 0.5),
            ("--repeats", "repeats", 1),
            ("--retry-busy", "retry_busy", 1),
        ):
            if not any(g == flag or g.startswith(flag + "=") for g in given):
                setattr(args, name, value)
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_server(
    server: Server,
    args: argparse.Namespace,
    workdir: Path,
    res: Results,
    on_ready: Callable[[Server], None] | None = None,
) -> None:
    """Start, check, measure every cell ``args.repeats`` times, stop. ``on_ready`` runs once
    after the checks, before the measured runs (bench/python_backend.py samples idle CPU)."""
    workloads = [WORKLOADS[m] for m in args.models]
    log(f"== {server.name}: starting on port {server.port}")
    t0 = time.monotonic()
    try:
        server.start(workdir, workloads)
    except ServerUnavailable as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first, last = lines[0] if lines else "?", lines[-1] if lines else "?"
        res.unavailable[server.name] = (first if first == last else f"{first} … {last}")[:400]
        log(f"   unavailable: {e}")
        return
    log(f"   ready in {time.monotonic() - t0:.1f} s")
    try:
        cells = []
        for w in workloads:
            for enc in args.encodings:
                why = _check(server, w, enc)
                if why is not None:
                    res.failed[(server.name, w.name, enc)] = why
                    log(f"   {w.name}/{enc}: check failed: {why}")
                    continue
                cells.append((w, enc))
        if on_ready is not None:
            on_ready(server)
        for rep in range(args.repeats):
            for w, enc in cells:
                request = w.request(enc, server.port)
                for c in args.concurrency:
                    try:
                        r, err = _run_cell_retrying(server, request, c, args, f"{w.name}/{enc}")
                    except (RuntimeError, OSError, ValueError) as e:
                        res.failed[(server.name, w.name, enc)] = f"c={c}: {e}"[:300]
                        log(f"   {w.name}/{enc} c={c}: {e}")
                        if server.proc is None or server.proc.poll() is not None:
                            log(f"   {server.name} died: {server.log_tail(500)}")
                            return
                        continue
                    res.cells.setdefault((server.name, w.name, enc, c), []).append(r)
                    if r.errors:
                        res.notes.append(
                            f"{server.label}, {w.name}, {enc}, c={c}: {r.errors} errors, "
                            f"first: {err[:150]!r}"
                        )
                    log(
                        f"   run {rep + 1}: {w.name:7} {enc:6} c={c:<3} {r.rps:8.0f} req/s "
                        f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms "
                        f"client {r.client_cpu_share:4.0%} ({r.client_us_per_req:.1f} µs/req) "
                        f"server {r.server_cpu_share:.2f} cores ({r.server_us_per_req:.0f} µs/req"
                        f"; {r.server_cpu_split}) others {r.other_cpu_share:.2f} cores"
                        + (f" errors={r.errors}: {err[:120]!r}" if r.errors else "")
                    )
    finally:
        server.stop()
        log(f"   stopped; log at {server.log_path}")


def _check(server: Server, w: Any, enc: str) -> str | None:
    """None when ``server`` answers ``w`` right in encoding ``enc``, else why not."""
    if enc == "grpc":
        if server.grpc_port is None:
            return "no KServe v2 gRPC endpoint"
        return w.check_grpc(server.grpc_port) if server.validates else None
    return w.check(server.port, enc) if server.validates else None


def _run_cell_retrying(
    server: Server, request: bytes, c: int, args: argparse.Namespace, what: str
) -> tuple[CellResult, str]:
    """One measured run; measured again (up to ``args.retry_busy`` times, after a pause) while
    other processes on the machine used more than OTHER_CPU_NOTE cores during it."""
    pid = server.proc.pid if server.proc is not None else None
    retries = getattr(args, "retry_busy", 0)
    grpc_mode = what.endswith("/grpc")
    port = server.grpc_port if grpc_mode and server.grpc_port else server.port
    for attempt in range(retries + 1):
        r, err = run_cell(
            port, request, c, args.duration, args.warmup, server_pid=pid, grpc_mode=grpc_mode
        )
        if attempt == retries or not r.other_cpu_share > OTHER_CPU_NOTE:
            break
        log(
            f"   {what} c={c}: {r.rps:.0f} req/s, but other processes used "
            f"{r.other_cpu_share:.2f} cores meanwhile; measuring again in 3 s"
        )
        time.sleep(3)
    return r, err


def header(args: argparse.Namespace) -> str:
    import onnxruntime

    cpu = cpu_model()
    return (
        f"## modelyard benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n\n"
        f"{os.cpu_count()} CPUs ({cpu}), shared with the load generator; Python "
        f"{platform.python_version()}, onnxruntime {onnxruntime.__version__} (1 intra-op thread "
        f"in-process and in the peers). Closed loop, HTTP/1.1 keep-alive, one connection per "
        f"concurrent request; {args.warmup:g} s warm-up + {args.duration:g} s measured, median of "
        f"{args.repeats} run(s). Client CPU = load-generator CPU time / wall time. Server CPU = "
        f"user + system time of the server's whole process tree (its process group and "
        f"descendants: Triton's Python-backend stubs, modelyard's worker processes) over the "
        f"measured window, as cores (1.00 = one core busy) and as CPU µs per request.\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = Machine()
    names = args.servers or (["modelyard", *PEERS] if args.peers else ["modelyard"])
    res = Results()
    log("== in-process onnxruntime")
    for m in args.models:
        res.inprocess[m] = WORKLOADS[m].inprocess()
        log(f"   {m}: {res.inprocess[m]}")
    workdir = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    servers = [SERVERS[n]() for n in names]
    for s in servers:
        res.labels[s.name] = s.label
    try:
        for s in servers:
            measure_server(s, args, workdir, res)
    finally:
        for s in servers:
            s.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    if "mlserver" in names and "binary" in args.encodings:
        res.notes.append(
            "MLServer 1.7.1 has no binary tensor extension over REST: it parses the whole body as "
            "JSON and answers HTTP 500 (RequestValidationError), so its binary cells are n/a."
        )
    base = next((n for n in ("modelyard", *names) if n in names and n.startswith("modelyard")), "")
    machine.finish()
    md = (
        header(args)
        + "\n"
        + machine.markdown()
        + "\n"
        + render(res, names, args.models, args.encodings, args.concurrency, base=base)
    )
    verdict = aims(res, base, args.models, args.encodings, args.concurrency)
    if verdict:
        md += "\n" + verdict
    print(md)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
