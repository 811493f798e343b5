"""Many models through one server: on-demand loading from S3 under a memory budget, end to end.

Builds N real ONNX MLPs of varied sizes as ``<name>_1.tar.gz`` artifacts, puts them in a moto
S3 server (a subprocess on a free port) and in a local folder, then for each store and eviction
policy starts ``modelyard serve`` with a budget holding about ten average models and drives one
seeded Zipf trace over the models from concurrent clients. Prints markdown tables: throughput,
latency, errors, hit ratio, loads, evictions, load seconds and server memory for each policy
side by side, and cold-start latency (S3 with an empty cache, the disk cache after a restart)
against warm latency. The same tables go to ``--output``.

    python bench/many_models.py                         # 100 models, S3, lru vs gdsf (~3 min)
    python bench/many_models.py --store both --requests 5000 --zipf-s 1.2
    python bench/many_models.py --large --models 40     # 5-50 MB models

Unlike ``bench/eviction_sim.py`` (a pure simulation of the policy code) this runs the real
server: real downloads, extraction, onnxruntime sessions, measured sizes, concurrent requests.
Server errors are reported with their text and are never retried: the trace must run clean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.factories.onnx_models import mlp  # noqa: E402

from modelyard.testing.server import RunningServer, free_port, start_server  # noqa: E402

MiB = 1 << 20
MB = 1_000_000
# what the server predicts a model needs before it has measured it: 2 x files + 8 MiB
MODEL_OVERHEAD = 8 * MiB

CONFIG = """name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "INPUT", data_type: TYPE_FP32, dims: [ 64 ] }} ]
output [ {{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ 10 ] }} ]
"""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": MB,
    "mb": MB,
    "g": 10**9,
    "gb": 10**9,
    "kib": 1 << 10,
    "mib": MiB,
    "gib": 1 << 30,
}


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 200MiB, 150MB, 123456)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def log(msg: str) -> None:
    print(f"[many_models {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hidden: int
    onnx_bytes: int
    artifact: Path  # <store>/<name>_1.tar.gz

    @property
    def artifact_bytes(self) -> int:
        return self.artifact.stat().st_size

    @property
    def predicted_bytes(self) -> int:
        """The server's first guess: twice the extracted files plus a fixed overhead."""
        return 2 * (self.onnx_bytes + len(CONFIG.format(name=self.name))) + MODEL_OVERHEAD


def hidden_for(weight_bytes: float) -> int:
    """Width h of a 64 -> h -> h -> 10 MLP whose FP32 weights take about ``weight_bytes``."""
    # 4 * (64h + h^2 + 10h + 2h + 10) bytes
    floats = weight_bytes / 4
    return max(8, round((-76 + math.sqrt(76 * 76 + 4 * floats)) / 2))


def build_models(
    folder: Path, count: int, min_mb: float, max_mb: float, seed: int
) -> list[ModelSpec]:
    """``count`` MLPs with log-uniform weight sizes in [min_mb, max_mb], as tar.gz artifacts."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(math.log(min_mb), math.log(max_mb), size=count)) * MB
    specs = []
    for i, size in enumerate(sizes):
        name = f"mlp{i:03d}"
        hidden = hidden_for(float(size))
        onnx_bytes = mlp((64, hidden, hidden, 10), seed=seed * 100_003 + i)
        artifact = folder / f"{name}_1.tar.gz"
        buf = io.BytesIO()
        # random FP32 weights barely compress: level 1 is as small as 9 and much faster
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
            for arcname, data in (
                (f"{name}/config.pbtxt", CONFIG.format(name=name).encode()),
                (f"{name}/1/model.onnx", onnx_bytes),
            ):
                info = tarfile.TarInfo(arcname)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        artifact.write_bytes(buf.getvalue())
        specs.append(ModelSpec(name, hidden, len(onnx_bytes), artifact))
    return specs


# -- S3 (moto) ------------------------------------------------------------------------------


def aws_env(workdir: Path) -> dict[str, str]:
    """Credentials for moto and no configuration from this machine's user."""
    nowhere = str(workdir / "no-aws-config")
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
    }


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def moto_server(workdir: Path, env: dict[str, str]) -> Any:
    port = free_port()
    log_path = workdir / "moto.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_clean_env(env),
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto exited with {proc.returncode}: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto not ready after 60 s: {log_path.read_text()}"
                    ) from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def upload(host_port: str, env: dict[str, str], bucket: str, prefix: str, specs: list[ModelSpec]):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{host_port}",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    s3.create_bucket(Bucket=bucket)
    for spec in specs:
        s3.upload_file(str(spec.artifact), bucket, f"{prefix}/{spec.artifact.name}")


# -- the server and its metrics -------------------------------------------------------------

_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(server: RunningServer) -> dict[str, float]:
    """GET /metrics: each unlabelled or labelled sample, summed over its labels."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if m and not m.group(1).endswith("_bucket"):
            with contextlib.suppress(ValueError):
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def s3_gets(workdir: Path) -> int:
    """Artifact GETs moto served so far (its access log): the downloads that really happened."""
    path = workdir / "moto.log"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"GET /models/many/' in line)


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def process_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class Sampler(threading.Thread):
    """Samples the server's RSS (every ``interval``) and its loaded-models gauge (every 0.5 s)."""

    def __init__(self, server: RunningServer, interval: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.proc = psutil.Process(server.process.pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.max_rss = 0
        self.max_gauge = 0.0
        self.samples = 0

    def run(self) -> None:
        next_scrape = 0.0
        while not self.stop_event.is_set():
            with contextlib.suppress(psutil.Error):
                self.max_rss = max(self.max_rss, process_rss(self.proc))
                self.samples += 1
            now = time.monotonic()
            if now >= next_scrape:
                next_scrape = now + 0.5
                with contextlib.suppress(OSError, http.client.HTTPException):
                    gauge = scrape(self.server).get("modelyard_model_memory_bytes", 0.0)
                    self.max_gauge = max(self.max_gauge, gauge)
            self.stop_event.wait(self.interval)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(5)


def serve(
    repository: str,
    budget: int,
    policy: str,
    cache_dir: Path,
    load_wait_timeout: float,
    env: dict[str, str],
) -> RunningServer:
    return start_server(
        repository,
        [
            "--memory-budget",
            str(budget),
            "--eviction-policy",
            policy,
            "--model-cache-dir",
            str(cache_dir),
            "--load-wait-timeout",
            str(load_wait_timeout),
        ],
        timeout=120,
        env=env,
    )


def stop(server: RunningServer, logs: Path, label: str) -> None:
    server.stop()
    with contextlib.suppress(OSError):
        shutil.copy(server.log_path, logs / f"server-{label}.log")
        server.log_path.unlink()


# -- requests -------------------------------------------------------------------------------

BODY = orjson.dumps(
    {
        "inputs": [
            {
                "name": "INPUT",
                "shape": [1, 64],
                "datatype": "FP32",
                "data": np.random.default_rng(7).standard_normal(64).astype(np.float32).tolist(),
            }
        ]
    }
)


def request_bytes(name: str, host: str, port: int) -> bytes:
    head = (
        f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


@dataclass
class TraceResult:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    rss_after_first: int = 0


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
) -> tuple[int, bytes]:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if m is None:
        raise RuntimeError(f"no content-length in {head[:200]!r}")
    body = await reader.readexactly(int(m.group(1)))
    return status, body


async def drive(
    server: RunningServer,
    names: list[str],
    trace: list[int],
    concurrency: int,
    request_timeout: float,
) -> TraceResult:
    """``concurrency`` keep-alive connections take the trace's requests in order, closed loop."""
    reqs = [request_bytes(n, server.host, server.port) for n in names]
    result = TraceResult()
    position = 0

    async def client() -> None:
        nonlocal position
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            while position < len(trace):
                index = trace[position]
                position += 1
                t0 = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(
                        _exchange(reader, writer, reqs[index]), request_timeout
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError, RuntimeError) as e:
                    result.errors[f"{names[index]}: client error {e!r}"[:300]] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(server.host, server.port)
                    continue
                result.latencies.append(time.perf_counter() - t0)
                if status != 200:
                    text = body.decode(errors="replace")
                    # the same failure on different models counts as one kind of error
                    text = text.replace(names[index], "<model>")
                    result.errors[f"HTTP {status}: {text}"[:400]] += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.wall = time.perf_counter() - t0
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def zipf_trace(count: int, requests: int, s: float, seed: int) -> list[int]:
    """Model indices; popularity ranks are a seeded random permutation, so size and rank are
    unrelated (as in ``bench/eviction_sim.py``)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, count + 1) ** s
    weights /= weights.sum()
    ranks = rng.permutation(count)
    return [int(i) for i in ranks[rng.choice(count, size=requests, p=weights)]]


# -- phases ---------------------------------------------------------------------------------


@dataclass
class RunRow:
    store: str
    policy: str
    repeat: int
    requests: int
    wall: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    hit_ratio: float
    hits: int
    misses: int
    loads: int
    evictions: int
    load_s: float
    download_s: float
    downloads: int
    idle_rss: int
    rss_after_first: int
    max_rss: int
    max_gauge: float
    budget: int
    error_kinds: Counter[str]
    mb_loaded: float = float("nan")  # model.onnx MB of every load (from the server's log)
    s3_gets: int = -1  # artifact GETs in moto's access log (-1: not an S3 run)
    log_tail: str = ""


def run_trace(
    store: str,
    repository: str,
    policy: str,
    repeat: int,
    specs: list[ModelSpec],
    trace: list[int],
    budget: int,
    args: argparse.Namespace,
    workdir: Path,
    env: dict[str, str],
) -> RunRow:
    label = f"{store}-{policy}-{repeat}"
    cache = workdir / f"cache-{label}"
    shutil.rmtree(cache, ignore_errors=True)
    server = serve(repository, budget, policy, cache, args.load_wait_timeout, env)
    try:
        time.sleep(0.5)
        proc = psutil.Process(server.process.pid)
        idle_rss = process_rss(proc)
        # one model loaded alone first (the smallest; the same for every run): the RSS after it
        # holds the runtime's one-off start-up, the baseline the budget is compared against
        primer = min(specs, key=lambda s: s.onnx_bytes)
        _, status, text = timed_request(server, primer.name, args.load_wait_timeout + 60)
        primer_error = f"primer {primer.name}: HTTP {status}: {text}" if status != 200 else ""
        rss_after_first = process_rss(proc)
        before = scrape(server)
        gets_before = s3_gets(workdir)
        sampler = Sampler(server, args.rss_interval)
        sampler.start()
        got = asyncio.run(
            drive(
                server,
                [s.name for s in specs],
                trace,
                args.concurrency,
                args.load_wait_timeout + 60,
            )
        )
        sampler.finish()
        after = scrape(server)
        gets = s3_gets(workdir) - gets_before if store == "s3" else -1
    except BaseException:
        stop(server, workdir, label)
        raise
    if primer_error:
        got.errors[primer_error] += 1
    got.rss_after_first = rss_after_first
    hits = delta(after, before, "modelyard_model_cache_hits_total")
    misses = delta(after, before, "modelyard_model_cache_misses_total")
    errors = sum(got.errors.values())
    output = server.output()
    tail = "\n".join(output.splitlines()[-40:]) if errors else ""
    onnx_bytes = {s.name: s.onnx_bytes for s in specs}
    loaded = re.findall(r"loaded model '([^']+)'", output)
    mb_loaded = sum(onnx_bytes.get(n, 0) for n in loaded) / MB if loaded else float("nan")
    stop(server, workdir, label)
    n = len(got.latencies)
    return RunRow(
        store=store,
        policy=policy,
        repeat=repeat,
        requests=len(trace),
        wall=got.wall,
        rps=n / got.wall if got.wall else float("nan"),
        p50_ms=pct(got.latencies, 0.5) * 1e3,
        p99_ms=pct(got.latencies, 0.99) * 1e3,
        errors=errors,
        hit_ratio=hits / (hits + misses) if hits + misses else float("nan"),
        hits=int(hits),
        misses=int(misses),
        loads=int(delta(after, before, "modelyard_model_load_seconds_count")),
        evictions=int(delta(after, before, "modelyard_model_evictions_total")),
        load_s=delta(after, before, "modelyard_model_load_seconds_sum"),
        download_s=delta(after, before, "modelyard_model_download_seconds_sum"),
        downloads=int(delta(after, before, "modelyard_model_download_seconds_count")),
        idle_rss=idle_rss,
        rss_after_first=got.rss_after_first,
        max_rss=max(sampler.max_rss, got.rss_after_first),
        max_gauge=sampler.max_gauge,
        budget=budget,
        error_kinds=got.errors,
        mb_loaded=mb_loaded,
        s3_gets=gets,
        log_tail=tail,
    )


def timed_request(server: RunningServer, name: str, timeout: float) -> tuple[float, int, str]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request("POST", f"/v2/models/{name}/infer", BODY, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        return time.perf_counter() - t0, resp.status, body.decode(errors="replace")[:300]
    finally:
        conn.close()


@dataclass
class ColdRow:
    store: str
    model: str
    artifact_mb: float
    first_store_ms: float  # empty cache: download + extract + load + first inference
    first_disk_ms: float  # restarted on the same cache dir: load + first inference


@dataclass
class ColdResult:
    rows: list[ColdRow]
    warm_p50_ms: dict[str, float]
    warm_p99_ms: dict[str, float]
    download_s: dict[str, float]
    errors: list[str]
    primer_ms: dict[str, tuple[str, float, float]]  # store -> (model, empty cache, restart)


def cold_start(
    stores: dict[str, str],
    specs: list[ModelSpec],
    budget: int,
    args: argparse.Namespace,
    workdir: Path,
    env: dict[str, str],
) -> ColdResult:
    """First request to models not loaded: empty cache, then the disk cache after a restart."""
    rng = np.random.default_rng(args.seed + 2)
    # spread over the size range: sorted by size, evenly spaced picks
    by_size = sorted(specs, key=lambda s: s.onnx_bytes)
    k = min(args.cold_models, len(specs))
    picks = [by_size[round(i * (len(by_size) - 1) / max(1, k - 1))] for i in range(k)]
    rng.shuffle(picks)  # request order unrelated to size
    # the first model a process loads also pays one-off costs (the runtime's own start-up):
    # a primer model, not among the picks, takes them so the picks show per-model costs
    primer = next(s for s in by_size if s not in picks)
    out = ColdResult([], {}, {}, {}, [], {})
    timeout = args.load_wait_timeout + 60
    for store, repository in stores.items():
        cache = workdir / f"cache-cold-{store}"
        shutil.rmtree(cache, ignore_errors=True)
        policy = args.policies[0]
        firsts: dict[str, float] = {}
        server = serve(repository, budget, policy, cache, args.load_wait_timeout, env)
        try:
            primer_first, status, text = timed_request(server, primer.name, timeout)
            if status != 200:
                out.errors.append(f"{store} primer {primer.name}: HTTP {status}: {text}")
            before = scrape(server)
            for spec in picks:
                seconds, status, text = timed_request(server, spec.name, timeout)
                if status != 200:
                    out.errors.append(f"{store} cold {spec.name}: HTTP {status}: {text}")
                firsts[spec.name] = seconds
            after = scrape(server)
            out.download_s[store] = delta(after, before, "modelyard_model_download_seconds_sum")
            warm_name = picks[-1].name
            warm = []
            for _ in range(args.warm_requests):
                seconds, status, text = timed_request(server, warm_name, timeout)
                if status != 200:
                    out.errors.append(f"{store} warm {warm_name}: HTTP {status}: {text}")
                warm.append(seconds)
            # http.client opens a connection per request here; so do the cold requests, so
            # the comparison is like for like
            out.warm_p50_ms[store] = pct(warm, 0.5) * 1e3
            out.warm_p99_ms[store] = pct(warm, 0.99) * 1e3
        finally:
            stop(server, workdir, f"cold-{store}")
        server = serve(repository, budget, policy, cache, args.load_wait_timeout, env)
        try:
            primer_restart, status, text = timed_request(server, primer.name, timeout)
            if status != 200:
                out.errors.append(f"{store} primer (restart) {primer.name}: HTTP {status}: {text}")
            out.primer_ms[store] = (primer.name, primer_first * 1e3, primer_restart * 1e3)
            for spec in picks:
                seconds, status, text = timed_request(server, spec.name, timeout)
                if status != 200:
                    out.errors.append(f"{store} disk-cache {spec.name}: HTTP {status}: {text}")
                out.rows.append(
                    ColdRow(
                        store,
                        spec.name,
                        spec.artifact_bytes / MB,
                        firsts[spec.name] * 1e3,
                        seconds * 1e3,
                    )
                )
        finally:
            stop(server, workdir, f"cold-restart-{store}")
    return out


# -- tables ---------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / MB:.1f}"


def render_models(specs: list[ModelSpec], budget: int, budget_note: str) -> str:
    art = [s.artifact_bytes for s in specs]
    onnx = [s.onnx_bytes for s in specs]
    pred = [s.predicted_bytes for s in specs]
    rows = [
        ("models", f"{len(specs)}"),
        ("hidden widths", f"{min(s.hidden for s in specs)}-{max(s.hidden for s in specs)}"),
        (
            "model.onnx MB (min / median / mean / max)",
            f"{mb(min(onnx))} / {mb(statistics.median(onnx))} / {mb(statistics.mean(onnx))}"
            f" / {mb(max(onnx))}",
        ),
        ("artifacts, total MB", mb(sum(art))),
        ("server's predicted size, mean MB (2 x files + 8 MiB)", mb(statistics.mean(pred))),
        ("memory budget", f"{mb(budget)} MB ({budget_note})"),
    ]
    lines = ["### Models", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def run_order(policies: list[str], repeats: int) -> list[tuple[int, str]]:
    """Repeats alternate the order (lru, gdsf, gdsf, lru, ...) so drift hits both alike."""
    out = []
    for repeat in range(1, repeats + 1):
        order = policies if repeat % 2 else policies[::-1]
        out += [(repeat, p) for p in order]
    return out


def render_runs(rows: list[RunRow], slack: int) -> str:
    cols = [
        ("req/s", lambda r: f"{r.rps:.0f}"),
        ("p50 ms", lambda r: f"{r.p50_ms:.1f}"),
        ("p99 ms", lambda r: f"{r.p99_ms:.0f}"),
        ("errors", lambda r: f"{r.errors}"),
        ("hit ratio", lambda r: f"{r.hit_ratio:.3f}"),
        ("hits / misses", lambda r: f"{r.hits} / {r.misses}"),
        ("loads", lambda r: f"{r.loads}"),
        ("evictions", lambda r: f"{r.evictions}"),
        ("load s (sum)", lambda r: f"{r.load_s:.1f}"),
        ("mean load ms", lambda r: f"{r.load_s / r.loads * 1e3:.0f}" if r.loads else "n/a"),
        ("MB loaded", lambda r: f"{r.mb_loaded:.0f}"),
        ("downloads (s)", lambda r: f"{r.downloads} ({r.download_s:.1f})"),
        ("S3 GETs (moto log)", lambda r: f"{r.s3_gets}" if r.s3_gets >= 0 else "n/a"),
        ("wall s", lambda r: f"{r.wall:.1f}"),
        (
            "RSS idle / after 1st / max MB",
            lambda r: f"{mb(r.idle_rss)} / {mb(r.rss_after_first)} / {mb(r.max_rss)}",
        ),
        ("max RSS - after 1st MB", lambda r: mb(r.max_rss - r.rss_after_first)),
        ("max RSS - idle MB", lambda r: mb(r.max_rss - r.idle_rss)),
        ("max models gauge MB", lambda r: mb(r.max_gauge)),
        ("budget MB", lambda r: mb(r.budget)),
        (
            f"RSS growth ≤ budget + {slack // MiB} MiB",
            lambda r: "yes" if r.max_rss - r.rss_after_first <= r.budget + slack else "**no**",
        ),
    ]
    lines = [
        "### Zipf trace: lru vs gdsf",
        "",
        "| store | policy | run | " + " | ".join(c for c, _ in cols) + " |",
        "|---|---|---:|" + "---:|" * len(cols),
    ]
    for r in sorted(rows, key=lambda r: (r.store, r.policy != "lru", r.policy, r.repeat)):
        cells = " | ".join(f(r) for _, f in cols)
        lines.append(f"| {r.store} | {r.policy} | {r.repeat} | {cells} |")
    return "\n".join(lines)


@dataclass
class Median:
    hit_ratio: float
    loads: float
    load_s: float
    mb_loaded: float
    p99_ms: float
    rps: float


def _median(rows: list[RunRow]) -> Median:
    def med(f: Any) -> float:
        return float(statistics.median(f(r) for r in rows))

    return Median(
        med(lambda r: r.hit_ratio),
        med(lambda r: r.loads),
        med(lambda r: r.load_s),
        med(lambda r: r.mb_loaded),
        med(lambda r: r.p99_ms),
        med(lambda r: r.rps),
    )


def render_compare(rows: list[RunRow]) -> str:
    lines = []
    repeats = max((r.repeat for r in rows), default=1)
    what = f"median of {repeats} runs each" if repeats > 1 else "one run each"
    for store in dict.fromkeys(r.store for r in rows):
        lru_rows = [r for r in rows if r.store == store and r.policy == "lru"]
        gdsf_rows = [r for r in rows if r.store == store and r.policy == "gdsf"]
        if not lru_rows or not gdsf_rows:
            continue
        lru, gdsf = _median(lru_rows), _median(gdsf_rows)
        lines.append(
            f"- {store} ({what}): gdsf hit ratio {gdsf.hit_ratio:.3f} vs lru {lru.hit_ratio:.3f} "
            f"({(gdsf.hit_ratio - lru.hit_ratio) * 100:+.1f} points); loads {gdsf.loads:.0f} vs "
            f"{lru.loads:.0f} ({_rel(gdsf.loads, lru.loads)}); MB loaded {gdsf.mb_loaded:.0f} vs "
            f"{lru.mb_loaded:.0f} ({_rel(gdsf.mb_loaded, lru.mb_loaded)}); load seconds {gdsf.load_s:.1f} vs "
            f"{lru.load_s:.1f} ({_rel(gdsf.load_s, lru.load_s)}); p99 {gdsf.p99_ms:.0f} vs "
            f"{lru.p99_ms:.0f} ms ({_rel(gdsf.p99_ms, lru.p99_ms)}); throughput {gdsf.rps:.0f} "
            f"vs {lru.rps:.0f} req/s ({_rel(gdsf.rps, lru.rps)})"
        )
    return "\n".join(lines)


def _rel(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.0f}%" if b else "n/a"


def render_cold(cold: ColdResult) -> str:
    stores = list(dict.fromkeys(r.store for r in cold.rows))
    head = "| model | artifact MB |"
    sep = "|---|---:|"
    for s in stores:
        what = "S3" if s == "s3" else "local store"
        head += f" {s}: first request, {what}, empty cache ms | {s}: after restart, disk cache ms |"
        sep += "---:|---:|"
    lines = ["### Cold start vs warm", "", head, sep]
    names = list(dict.fromkeys(r.model for r in cold.rows))
    by = {(r.store, r.model): r for r in cold.rows}
    for name in names:
        first = by[(stores[0], name)]
        cells = [name, f"{first.artifact_mb:.1f}"]
        for s in stores:
            r = by[(s, name)]
            cells += [f"{r.first_store_ms:.0f}", f"{r.first_disk_ms:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**median**", ""]
    for s in stores:
        rs = [r for r in cold.rows if r.store == s]
        cells += [
            f"**{statistics.median(r.first_store_ms for r in rs):.0f}**",
            f"**{statistics.median(r.first_disk_ms for r in rs):.0f}**",
        ]
    lines.append("| " + " | ".join(cells) + " |")
    cells = ["first model in a fresh process (primer, not in the median)", ""]
    for s in stores:
        name, first, restart = cold.primer_ms[s]
        cells += [f"{first:.0f} ({name})", f"{restart:.0f}"]
    lines.append("| " + " | ".join(cells) + " |")
    cells = ["warm (loaded model) p50 / p99", ""]
    for s in stores:
        cells += [f"{cold.warm_p50_ms[s]:.2f} / {cold.warm_p99_ms[s]:.2f}", ""]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--models", type=int, default=100, help="number of models")
    p.add_argument("--large", action="store_true", help="5-50 MB models instead of 1-8 MB")
    p.add_argument("--min-mb", type=float, help="smallest weights, MB (default 1, --large 5)")
    p.add_argument("--max-mb", type=float, help="largest weights, MB (default 8, --large 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", choices=("s3", "local", "both"), default="s3")
    p.add_argument("--policies", default="lru,gdsf", help="comma-separated, in run order")
    p.add_argument("--budget", type=parse_bytes, help="memory budget (200MiB, bytes, ...)")
    p.add_argument(
        "--budget-models",
        type=float,
        default=10.0,
        help="without --budget: this many mean predicted model sizes",
    )
    p.add_argument("--requests", type=int, default=3000, help="requests in the trace")
    p.add_argument("--repeats", type=int, default=1, help="runs per policy, alternating the order")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    p.add_argument("--zipf-s", type=float, default=1.0, help="Zipf exponent of popularity")
    p.add_argument("--load-wait-timeout", type=float, default=60.0)
    p.add_argument("--rss-interval", type=float, default=0.05, help="RSS sampling period, s")
    p.add_argument(
        "--rss-slack",
        type=parse_bytes,
        default=64 * MiB,
        help="allowed RSS growth over the budget before the check says no",
    )
    p.add_argument("--cold-models", type=int, default=5, help="models timed for cold start")
    p.add_argument("--warm-requests", type=int, default=200)
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--output", type=Path, default=ROOT / "bench/results/many_models.md")
    p.add_argument("--workdir", type=Path, help="keep artifacts, caches and logs here")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = p.parse_args(argv)
    args.policies = [x.strip() for x in args.policies.split(",") if x.strip()]
    min_mb = args.min_mb or (5.0 if args.large else 1.0)
    max_mb = args.max_mb or (50.0 if args.large else 8.0)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="many-models-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        return _main(args, workdir, min_mb, max_mb, started)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work folder kept: {workdir}")


def _main(
    args: argparse.Namespace, workdir: Path, min_mb: float, max_mb: float, started: float
) -> int:
    log(f"building {args.models} models ({min_mb:g}-{max_mb:g} MB) in {workdir}")
    local_store = workdir / "store"
    specs = build_models(local_store, args.models, min_mb, max_mb, args.seed)
    if args.budget is not None:
        budget, note = args.budget, "--budget"
    else:
        budget = int(args.budget_models * statistics.mean(s.predicted_bytes for s in specs))
        note = f"{args.budget_models:g} x mean predicted size"
    trace = zipf_trace(len(specs), args.requests, args.zipf_s, args.seed + 1)
    distinct = len(set(trace))
    log(f"built in {time.monotonic() - started:.0f} s; budget {budget / MB:.0f} MB")

    env = aws_env(workdir)
    stores: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if args.store in ("s3", "both"):
            host_port, _ = stack.enter_context(moto_server(workdir, env))
            log(f"moto on {host_port}; uploading")
            upload(host_port, env, "models", "many", specs)
            stores["s3"] = f"s3://{host_port}/models/many"
        if args.store in ("local", "both"):
            stores["local"] = str(local_store)
        server_env = _clean_env(env)

        runs: list[RunRow] = []
        for store, repository in stores.items():
            for repeat, policy in run_order(args.policies, args.repeats):
                log(
                    f"trace: {store} / {policy} (run {repeat}): {args.requests} requests, "
                    f"c={args.concurrency}"
                )
                row = run_trace(
                    store,
                    repository,
                    policy,
                    repeat,
                    specs,
                    trace,
                    budget,
                    args,
                    workdir,
                    server_env,
                )
                log(
                    f"  {row.rps:.0f} req/s, hit ratio {row.hit_ratio:.3f}, "
                    f"{row.loads} loads, {row.errors} errors, {row.wall:.0f} s"
                )
                runs.append(row)
        cold = None
        if not args.skip_cold:
            log("cold start")
            cold = cold_start(stores, specs, budget, args, workdir, server_env)

    parts = [
        "## Many models: on-demand loading under a memory budget (`bench/many_models.py`)",
        "",
        f"{os.cpu_count()} CPUs, shared by the server, the load generator and moto; Python "
        f"{sys.version.split()[0]}. Trace: {args.requests} requests, Zipf(s={args.zipf_s:g}) "
        f"over {len(specs)} models ({distinct} distinct requested; popularity rank unrelated to "
        f"size), seed {args.seed}, {args.concurrency} closed-loop keep-alive clients, the same "
        "trace for every run; each run a fresh server and an empty --model-cache-dir. Hit "
        "ratio, loads, evictions and load/download seconds are deltas of the server's /metrics "
        "over the run (after one request to the smallest model, loaded alone first so the RSS after it "
        "includes the runtime's start-up); RSS is the server's (with children), sampled every "
        f"{args.rss_interval * 1e3:.0f} ms; the models gauge is modelyard_model_memory_bytes "
        "sampled every 0.5 s.",
        "",
        render_models(specs, budget, note),
        "",
        render_runs(runs, args.rss_slack),
        "",
        render_compare(runs),
    ]
    errors_text = []
    for r in runs:
        for text, n in r.error_kinds.most_common(10):
            errors_text.append(f"- {r.store}/{r.policy}: {n} x `{text}`")
        if r.log_tail:
            errors_text.append(
                f"\n<details><summary>server log tail, {r.store}/{r.policy}</summary>\n\n"
                f"```\n{r.log_tail}\n```\n</details>\n"
            )
    if cold is not None:
        parts += [
            "",
            render_cold(cold),
            "",
            "Cold requests and warm requests each open a fresh connection (http.client), one at "
            "a time. Download seconds (modelyard_model_download_seconds) of the cold models: "
            + ", ".join(f"{s} {v:.2f} s" for s, v in cold.download_s.items())
            + ".",
        ]
        errors_text += [f"- {e}" for e in cold.errors]
    if errors_text:
        parts += ["", "### Errors", "", *errors_text]
    else:
        parts += ["", "No request failed."]
    parts += ["", f"Total bench time {time.monotonic() - started:.0f} s."]
    text = "\n".join(parts) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"wrote {args.output}")
    return 1 if errors_text else 0


if __name__ == "__main__":
    sys.exit(main())
