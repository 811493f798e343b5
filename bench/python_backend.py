"""Python-backend figures (issue 4): modelyard's Python backend against Triton's, in one run.

Both serve the same ``model.py`` from the same repository layout. Prints markdown tables.

    python bench/python_backend.py                      # everything, about 6 minutes
    python bench/python_backend.py --output bench/results/python_backend.md
    python bench/python_backend.py --models add_sub --concurrency 1,16 --duration 2 --repeats 1

What it measures (see bench/README.md):

1. the raw cross-process wake-up floor of this machine: a uvloop protocol ping-ponging 64 bytes
   with a forked process doing blocking ``recv_into``/``sendall`` over a socketpair;
2. the model's ``execute`` called in-process: ``bench/peer_models/triton_model.py`` imported with
   modelyard's ``triton_python_backend_utils`` on ``sys.path``, requests built as
   ``pb_utils.InferenceRequest``/``Tensor`` objects;
3. throughput and p50/p99 at each concurrency, JSON and binary, for ``modelyard-python`` and
   ``triton`` (bench/servers.py), measured by bench/run.py's ``measure_server`` with the server's
   whole process tree's CPU time; servers alternate, each started ``--repeats`` times (once per
   round), and the tables show the median;
4. model load time through the repository API (``--model-control-mode explicit``): add_sub, a
   model with a ``requirements.txt`` (a local wheel written here, installed with
   ``--python-env-no-index --python-env-find-links``), and Triton's add_sub; the first load and
   the p50 of ``--load-cycles`` load/unload cycles after it.

Progress goes to stderr, the tables to stdout (and ``--output``). Never two servers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from loadgen import ServerTree  # noqa: E402
from report import Results, render  # noqa: E402
from run import _csv, log, measure_server  # noqa: E402
from servers import (  # noqa: E402
    PEER_MODELS,
    SERVERS,
    ModelyardPython,
    Server,
    ServerUnavailable,
    Triton,
    _write,
)
from workloads import DEFAULT_ENCODINGS, ENCODINGS, ROOT, WORKLOADS, Workload, _p50_us  # noqa: E402

WORKER_LIB = ROOT / "src" / "modelyard" / "runtimes" / "python" / "worker_lib"
SERVER_NAMES = ("modelyard-python", "triton")
BASE = "modelyard-python"
LOAD_REQUIREMENT = 300.0  # ms, issue 4: a second load with a cached environment, p50

DEP = "myard_bench_dep"  # the wheel the requirements.txt model installs
ENV_MODEL = "add_sub_env"
ENV_MODEL_PY = f'''"""add_sub, importing a package its requirements.txt installs."""

import numpy as np
import triton_python_backend_utils as pb_utils

import {DEP}


class TritonPythonModel:
    def initialize(self, args):
        self.version = {DEP}.__version__

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out = [pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]
            responses.append(pb_utils.InferenceResponse(output_tensors=out))
        return responses
'''


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--models", type=_csv(str, tuple(WORKLOADS)), default=["add_sub", "mlp"])
    p.add_argument("--encodings", type=_csv(str, ENCODINGS), default=list(DEFAULT_ENCODINGS))
    p.add_argument("--concurrency", type=_csv(int), default=[1, 16, 64])
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    p.add_argument(
        "--repeats", type=int, default=2, help="rounds; each server is started once per round"
    )
    p.add_argument(
        "--retry-busy",
        type=int,
        default=1,
        help="measure a run again, up to N times, when other processes took CPU during it",
    )
    p.add_argument("--load-cycles", type=int, default=5, help="load/unload cycles after the first")
    p.add_argument("--inprocess-seconds", type=float, default=1.0)
    p.add_argument("--floor-seconds", type=float, default=2.0)
    p.add_argument("--idle-seconds", type=float, default=2.0, help="idle CPU sample per server")
    p.add_argument(
        "--skip",
        type=_csv(str, ("floor", "inprocess", "throughput", "load")),
        default=[],
        help="leave out these parts",
    )
    p.add_argument("--output", type=Path, help="also write the markdown here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (repositories, logs)")
    return p.parse_args(argv)


# -- 1. the cross-process wake-up floor ------------------------------------------------------


def wakeup_floor(seconds: float, size: int = 64) -> dict[str, float]:
    """p50/p99 µs of a uvloop protocol <-> forked blocking-socket echo round trip.

    Runs before anything in this process starts a thread (onnxruntime, servers), so the fork is
    clean. The child blocks in ``recv_into``; every round trip is two wake-ups of a sleeping
    process, what a request to a worker process pays at c=1 at the least."""
    import uvloop

    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echo: blocking reads, as a model worker waiting for its next request
        try:
            parent.close()
            buf = bytearray(4096)
            view = memoryview(buf)
            while True:
                n = child.recv_into(buf)
                if not n:
                    break
                child.sendall(view[:n])
        finally:
            os._exit(0)
    child.close()
    samples: list[float] = []
    msg = b"x" * size

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        start = time.perf_counter()
        warm_until, end = start + 0.3, start + 0.3 + seconds

        class Ping(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.got = 0
                self.send()

            def send(self) -> None:
                self.t0 = time.perf_counter()
                self.transport.write(msg)

            def data_received(self, data: bytes) -> None:
                self.got += len(data)
                if self.got < size:
                    return
                self.got = 0
                now = time.perf_counter()
                if now > warm_until:
                    samples.append(now - self.t0)
                if now < end:
                    self.send()
                else:
                    self.transport.close()
                    done.set_result(None)

        await loop.create_connection(Ping, sock=parent)
        await done

    uvloop.run(main())
    os.waitpid(pid, 0)
    samples.sort()
    n = len(samples)
    return {
        "p50_us": samples[n // 2] * 1e6,
        "p99_us": samples[int(n * 0.99)] * 1e6,
        "n": n,
    }


# -- 2. execute() in-process -------------------------------------------------------------------


def inprocess_execute(w: Workload, workdir: Path, seconds: float) -> dict[str, float]:
    """p50 µs of the benchmark model.py's work alone and of its ``execute`` with pb_utils."""
    if str(WORKER_LIB) not in sys.path:
        sys.path.insert(0, str(WORKER_LIB))
    import triton_python_backend_utils as pb_utils

    spec = importlib.util.spec_from_file_location(
        f"bench_model_{w.name}", PEER_MODELS / "triton_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = workdir / "inprocess" / w.name
    _write(folder / "1" / "model.onnx", w.onnx_bytes)
    config = {
        "name": w.name,
        "backend": "python",
        "input": [{"name": n, "data_type": "TYPE_FP32"} for n in w.inputs],
        "output": [{"name": n, "data_type": "TYPE_FP32"} for n in w.outputs],
    }
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_instance_kind": "CPU",
            "model_instance_name": f"{w.name}_0_0",
            "model_instance_device_id": "0",
            "model_repository": str(folder),
            "model_version": "1",
            "model_name": w.name,
        }
    )
    arrays = list(w.inputs.values())

    def make_request() -> Any:
        return pb_utils.InferenceRequest(
            model_name=w.name,
            inputs=[pb_utils.Tensor(n, a) for n, a in w.inputs.items()],
            requested_output_names=list(w.outputs),
        )

    request = make_request()
    (response,) = model.execute([request])
    for name, want in w.expected.items():
        got = pb_utils.get_output_tensor_by_name(response, name).as_numpy()
        if not np.allclose(got.ravel(), want.ravel(), rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"in-process {w.name}: {name} differs from onnxruntime's")

    def full() -> None:
        (resp,) = model.execute([make_request()])
        for t in resp.output_tensors():
            t.as_numpy()

    return {
        "work_us": _p50_us(lambda: model.fn(*arrays), seconds),
        "execute_us": _p50_us(lambda: model.execute([request]), seconds),
        "full_us": _p50_us(full, seconds),
    }


# -- 3. throughput: run.py's machinery, alternating servers --------------------------------------


@dataclass
class Idle:
    cores: list[float] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    procs: int = 0


def sample_idle(server: Server, seconds: float, into: Idle) -> None:
    """The server's process-tree CPU with no request in flight (after its check requests)."""
    assert server.proc is not None
    time.sleep(0.5)
    tree = ServerTree(server.proc.pid)
    t0 = tree.times()
    time.sleep(seconds)
    use = tree.usage(t0, tree.times(), seconds, 0)
    into.cores.append(float(use["server_cpu_share"]))
    into.split.append(str(use["server_cpu_split"]))
    into.procs = int(use["server_procs"])
    log(f"   idle: {into.cores[-1]:.3f} cores over {seconds:g} s ({into.split[-1]})")


def throughput(
    args: argparse.Namespace, workdir: Path, res: Results, idle: dict[str, Idle]
) -> None:
    ns = argparse.Namespace(
        models=args.models,
        encodings=args.encodings,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        repeats=1,
        retry_busy=args.retry_busy,
    )
    for rnd in range(args.repeats):
        order = SERVER_NAMES if rnd % 2 == 0 else SERVER_NAMES[::-1]
        for name in order:
            if name in res.unavailable:
                continue
            log(f"-- round {rnd + 1}/{args.repeats}")
            server = SERVERS[name]()
            res.labels[name] = server.label
            slot = idle.setdefault(name, Idle())
            measure_server(
                server,
                ns,
                workdir,
                res,
                on_ready=lambda s, slot=slot: sample_idle(s, args.idle_seconds, slot),
            )


# -- 4. model load time through the repository API ------------------------------------------------


def _http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body or None, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class LoadTimes:
    first_ms: float = float("nan")
    cycles_ms: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def p50(self) -> float:
        return statistics.median(self.cycles_ms) if self.cycles_ms else float("nan")


@dataclass
class ModelyardExplicit(ModelyardPython):
    """modelyard-python in explicit mode, with add_sub and the requirements.txt model."""

    name: str = "modelyard-python-load"
    extra: list[str] = field(default_factory=list)

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        Triton.prepare(self, repo, [WORKLOADS["add_sub"]])  # type: ignore[arg-type]
        body = WORKLOADS["add_sub"].config_body
        _write(repo / ENV_MODEL / "config.pbtxt", f'name: "{ENV_MODEL}"\nbackend: "python"\n{body}')
        _write(repo / ENV_MODEL / "1" / "model.py", ENV_MODEL_PY)
        _write(repo / ENV_MODEL / "requirements.txt", f"{DEP}==1.0\n")

    def command(self, repo: Path) -> list[str]:
        return [*super().command(repo), "--model-control-mode", "explicit", *self.extra]


@dataclass
class TritonExplicit(Triton):
    name: str = "triton-load"

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        super().prepare(repo, [WORKLOADS["add_sub"]])

    def command(self, repo: Path) -> list[str]:
        return [*super().command(repo), "--model-control-mode=explicit"]


def _tree_size(pid: int) -> int:
    return len(ServerTree(pid).times())


def load_cycles(server: Server, model: str, cycles: int) -> LoadTimes:
    """The first load, then ``cycles`` timed load/unload cycles. Each load is checked with one
    request; each unload waits until the model's processes are gone, so loads never overlap
    the previous instance's shutdown."""
    assert server.proc is not None
    pid, port = server.proc.pid, server.port
    base = _tree_size(pid)
    out = LoadTimes()
    add_sub = WORKLOADS["add_sub"]
    for i in range(cycles + 1):
        t0 = time.perf_counter()
        status, body = _http(port, "POST", f"/v2/repository/models/{model}/load")
        ms = (time.perf_counter() - t0) * 1e3
        if status != 200:
            out.error = f"load {i + 1}: HTTP {status}: {body[:300]!r}"
            log(f"   {model}: {out.error}")
            return out
        why = add_sub.check(port, "json", model_name=model)
        if why is not None:
            out.error = f"load {i + 1}: the loaded model answered wrong: {why}"
            log(f"   {model}: {out.error}")
            return out
        if i == 0:
            out.first_ms = ms
        else:
            out.cycles_ms.append(ms)
        log(f"   {model}: load {i + 1}: {ms:.0f} ms" + (" (first)" if i == 0 else ""))
        status, body = _http(port, "POST", f"/v2/repository/models/{model}/unload")
        if status != 200:
            out.error = f"unload {i + 1}: HTTP {status}: {body[:300]!r}"
            return out
        deadline = time.monotonic() + 30
        while _tree_size(pid) > base or _http(port, "GET", f"/v2/models/{model}/ready")[0] == 200:
            if time.monotonic() > deadline:
                out.error = f"unload {i + 1}: the model's processes did not exit within 30 s"
                return out
            time.sleep(0.05)
        time.sleep(0.2)
    return out


def load_times(args: argparse.Namespace, workdir: Path) -> dict[str, LoadTimes]:
    sys.path.insert(0, str(ROOT))
    from tests.factories.envs import write_wheel

    wheels = workdir / "wheels"
    write_wheel(wheels, DEP, "1.0")
    envs = workdir / "python-envs"
    extra = [
        "--python-env-dir",
        str(envs),
        "--python-env-no-index",
        "--python-env-find-links",
        str(wheels),
    ]
    out: dict[str, LoadTimes] = {}

    def alone(key: str, server: Server, model: str, cycles: int) -> None:
        log(f"== load times: {key}")
        try:
            server.start(workdir, [])
        except ServerUnavailable as e:
            out[key] = LoadTimes(error=str(e).strip().splitlines()[0][:300])
            log(f"   unavailable: {e}")
            return
        try:
            out[key] = load_cycles(server, model, cycles)
        finally:
            server.stop()

    # a fresh server and an empty environment folder: add_sub, then the first load of the
    # requirements.txt model builds its environment, the later ones find it cached
    server = ModelyardExplicit(extra=extra)
    log("== load times: modelyard (explicit mode)")
    try:
        server.start(workdir, [])
    except ServerUnavailable as e:
        out["modelyard add_sub"] = LoadTimes(error=str(e).strip().splitlines()[0][:300])
    else:
        try:
            out["modelyard add_sub"] = load_cycles(server, "add_sub", args.load_cycles)
            out["modelyard env"] = load_cycles(server, ENV_MODEL, args.load_cycles)
        finally:
            server.stop()
    # a restarted server on the same environment folder: the environment is on disk only
    alone("modelyard env restart", ModelyardExplicit(extra=extra), ENV_MODEL, 0)
    alone("triton add_sub", TritonExplicit(), "add_sub", args.load_cycles)
    return out


# -- tables -------------------------------------------------------------------------------------


def _f(x: float, digits: int = 0) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def header(args: argparse.Namespace, load_before: float) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"## Python backend: modelyard vs Triton ({time.strftime('%Y-%m-%d %H:%M')})\n\n"
        f"{os.cpu_count()} CPUs ({cpu}), shared by the server, its model processes and the load "
        f"generator; Python {platform.python_version()}. Both servers serve the same repository "
        f'(`backend: "python"`, bench/peer_models/triton_model.py: numpy for add_sub, '
        f"onnxruntime with 1 thread for mlp), one instance per model. Closed loop, HTTP/1.1 "
        f"keep-alive, one connection per concurrent request; {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per cell; {args.repeats} round(s), each starting every "
        f"server afresh (order alternating), median shown. Client CPU = load-generator CPU time "
        f"/ wall time; server CPU = user + system time of the server's whole process tree "
        f"(process group and descendants: Triton's `triton_python_backend_stub`, modelyard's "
        f"`modelyard_worker` processes) over the same window. A run during which other "
        f"processes on the machine used more than 0.15 cores was measured again (up to "
        f"{args.retry_busy} time(s)); the notes list the runs kept anyway. Load average (1 min) "
        f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.\n"
    )


def render_cpu(res: Results, idle: dict[str, Idle], models: list[str], encs: list[str]) -> str:
    out = [
        "### Server CPU by process at c=1, and idle",
        "",
        "| server | idle cores, each round (processes: cores by process) | model | enc | "
        "c=1 req/s | c=1 cores | c=1 CPU µs/req | c=1 cores by process (sleeps/req) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in SERVER_NAMES:
        if s in res.unavailable:
            continue
        i = idle.get(s, Idle())
        idle_txt = "-"
        if i.cores:  # every round's figure; the busiest round's split
            busiest = i.split[i.cores.index(max(i.cores))]
            idle_txt = " / ".join(f"{x:.3f}" for x in i.cores) + f" ({i.procs}: {busiest})"
        for m in models:
            for e in encs:
                r = res.median((s, m, e, 1))
                if r is None:
                    continue
                out.append(
                    f"| {res.labels.get(s, s)} | {idle_txt} | {m} | {e} | {r.rps / 1000:.1f}k | "
                    f"{r.server_cpu_share:.2f} | {r.server_us_per_req:.0f} | {r.server_cpu_split} |"
                )
                idle_txt = "″"
    return "\n".join(out) + "\n"


def render_overhead(
    res: Results,
    inproc: dict[str, dict[str, float]],
    floor: dict[str, float] | None,
    models: list[str],
) -> str:
    out = []
    if floor:
        out += [
            "### The cross-process wake-up floor",
            "",
            "| round trip | p50 µs | p99 µs | samples |",
            "| --- | --- | --- | --- |",
            f"| uvloop protocol ↔ forked process blocking in `recv_into`/`sendall`, 64 bytes "
            f"over a socketpair | {floor['p50_us']:.1f} | {floor['p99_us']:.1f} | "
            f"{floor['n']:.0f} |",
            "",
        ]
    if inproc:
        out += [
            "### Python-model request overhead at c=1",
            "",
            "| model | model work µs | `execute` in-process µs | build requests + `execute` "
            "µs | modelyard c=1 p50 ms (json / binary) | Triton c=1 p50 ms (json / binary) | "
            "modelyard p50 - `execute`, ms (json / binary) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for m in models:
            ip = inproc.get(m)
            if ip is None:
                continue
            cols = []
            for s in (BASE, "triton"):
                rs = [res.median((s, m, e, 1)) for e in ("json", "binary")]
                cols.append(" / ".join(f"{r.p50_ms:.3f}" if r else "-" for r in rs))
            over = []
            for e in ("json", "binary"):
                r = res.median((BASE, m, e, 1))
                over.append(f"{r.p50_ms - ip['execute_us'] / 1000:.3f}" if r else "-")
            out.append(
                f"| {m} | {ip['work_us']:.1f} | {ip['execute_us']:.1f} | {ip['full_us']:.1f} | "
                f"{cols[0]} | {cols[1]} | {' / '.join(over)} |"
            )
        out.append("")
    return "\n".join(out)


def render_load(loads: dict[str, LoadTimes], cycles: int) -> str:
    rows = [
        ("modelyard add_sub", "modelyard", "add_sub, the server's own environment"),
        (
            "modelyard env",
            "modelyard",
            f"{ENV_MODEL}: `requirements.txt` ({DEP}==1.0, local wheel); the first load "
            "builds the environment",
        ),
        (
            "modelyard env restart",
            "modelyard, restarted",
            f"{ENV_MODEL}: environment already on disk from the run above",
        ),
        ("triton add_sub", "Triton 2.51", "add_sub"),
    ]
    out = [
        "### Model load time (repository API, explicit mode)",
        "",
        f"| server | model | first load ms | p50 of {cycles} later loads ms | min / max ms | "
        f"≤ {LOAD_REQUIREMENT:.0f} ms p50 (issue 4, cached environment) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for key, server, what in rows:
        lt = loads.get(key)
        if lt is None:
            continue
        spread = f"{min(lt.cycles_ms):.0f} / {max(lt.cycles_ms):.0f}" if lt.cycles_ms else "-"
        verdict = ""
        if key == "modelyard env" and lt.cycles_ms:
            verdict = "**yes**" if lt.p50 <= LOAD_REQUIREMENT else "**no**"
        out.append(
            f"| {server} | {what} | {_f(lt.first_ms)} | {_f(lt.p50)} | {spread} | {verdict} |"
        )
        if lt.error:
            notes.append(f"- {server}, {what}: {lt.error}")
    out.append("")
    out.append(
        "Each load is `POST /v2/repository/models/<m>/load`, timed until the answer; one "
        "request checks the loaded model; then `/unload`, and the next load waits until the "
        "model's process has exited."
    )
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    floor = None
    if "floor" not in args.skip:
        log("== wake-up floor (uvloop <-> forked blocking socket)")
        floor = wakeup_floor(args.floor_seconds)
        log(f"   p50 {floor['p50_us']:.1f} µs p99 {floor['p99_us']:.1f} µs")
    workdir = Path(tempfile.mkdtemp(prefix="modelyard-pybench-"))
    res = Results()
    idle: dict[str, Idle] = {}
    inproc: dict[str, dict[str, float]] = {}
    loads: dict[str, LoadTimes] = {}
    try:
        if "inprocess" not in args.skip:
            log("== execute() in-process")
            for m in args.models:
                inproc[m] = inprocess_execute(WORKLOADS[m], workdir, args.inprocess_seconds)
                log(f"   {m}: " + ", ".join(f"{k} {v:.1f}" for k, v in inproc[m].items()))
        if "throughput" not in args.skip:
            throughput(args, workdir, res, idle)
        if "load" not in args.skip:
            loads = load_times(args, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    parts = [header(args, load_before)]
    if "throughput" not in args.skip:
        names = [s for s in SERVER_NAMES if s in res.labels or s in res.unavailable]
        parts.append(render(res, names, args.models, args.encodings, args.concurrency, base=BASE))
        if 1 in args.concurrency:
            parts.append(render_cpu(res, idle, args.models, args.encodings))
    parts.append(render_overhead(res, inproc, floor, args.models))
    if loads:
        parts.append(render_load(loads, args.load_cycles))
    parts.append(f"Total bench time {time.monotonic() - started:.0f} s.\n")
    md = "\n".join(p for p in parts if p)
    print(md)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
