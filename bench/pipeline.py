"""The example pipeline's end-to-end latency beside the sum of its steps run in-process.

Serves examples/screen_detection_pipeline as shipped (its pre-processing environment built
from the example's wheel), then at concurrency 1 measures the ensemble and each step alone
through HTTP (binary tensors), and the same three steps computed in this process (the
team's package, onnxruntime, the post-processing maths). The difference is what serving the
pipeline costs: HTTP, two Python worker round trips, the ensemble's bookkeeping.

    python bench/pipeline.py [--duration 5] [--output bench/results/pipeline.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "screen_detection_pipeline"
sys.path.insert(0, str(HERE))

from servers import free_port  # noqa: E402

IMAGE = np.random.default_rng(3).integers(0, 255, (1, 480, 640, 3), dtype=np.uint8)


def _serve(port: int, log: Path, env_dir: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "modelyard",
        "serve",
        "--model-repository",
        str(EXAMPLE / "repository"),
        "--http-port",
        str(port),
        "--http-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--model-control-mode",
        "none",
        "--python-env-find-links",
        str(EXAMPLE / "wheels"),
        "--python-env-no-index",
        "--python-env-dir",
        str(env_dir),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    url = f"http://127.0.0.1:{port}/v2/models/screen_detection_pipeline/ready"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:]) from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("pipeline not ready")


def _p50_us(fn: Any, seconds: float) -> tuple[float, float]:
    for _ in range(20):
        fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--output", type=Path)
    a = p.parse_args(argv)
    import onnxruntime as ort
    import tritonclient.http as httpclient

    # in-process: the same three steps, here
    sys.path.insert(0, str(EXAMPLE / "packages"))
    prep = _load(EXAMPLE / "packages" / "screen_preprocessing" / "__init__.py", "sp")
    session = ort.InferenceSession(
        str(EXAMPLE / "repository" / "screen_detection_inferencer" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )

    def step1() -> Any:
        return np.stack([prep.to_network_input(img) for img in IMAGE])

    batch = step1()

    def step2() -> Any:
        return session.run(["RAW"], {"IMAGE": batch})[0]

    raw = step2()

    def step3() -> Any:
        corners = 1 / (1 + np.exp(-raw[:, :4]))
        corners = np.concatenate(
            [
                np.minimum(corners[:, :2], corners[:, 2:]),
                np.maximum(corners[:, :2], corners[:, 2:]),
            ],
            axis=1,
        )
        scores = 1 / (1 + np.exp(-raw[:, 4:5]))
        labels = np.array([[b"screen" if s >= 0.5 else b"no_screen"] for s in scores[:, 0]])
        return corners * np.array([640, 480, 640, 480]), scores, labels

    local = {name: _p50_us(fn, a.duration / 3)[0] for name, fn in (
        ("preprocess", step1), ("screen_detection_inferencer", step2), ("postprocess", step3)
    )}  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="modelyard-pipeline-"))
    port = free_port()
    proc = _serve(port, work / "server.log", work / "envs")
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")

        def call(model: str, inputs: dict[str, np.ndarray]) -> Any:
            ins = []
            for name, arr in inputs.items():
                dtype = {np.uint8: "UINT8", np.float32: "FP32", np.int32: "INT32"}[arr.dtype.type]
                t = httpclient.InferInput(name, list(arr.shape), dtype)
                t.set_data_from_numpy(arr, binary_data=True)
                ins.append(t)
            return client.infer(model, ins)

        sizes = np.array([[480, 640]], dtype=np.int32)
        served = {}
        for model, inputs in (
            ("screen_detection_pipeline", {"RAW_IMAGE": IMAGE}),
            ("preprocess", {"RAW_IMAGE": IMAGE}),
            ("screen_detection_inferencer", {"IMAGE": batch}),
            ("postprocess", {"RAW": raw, "IMAGE_SIZE": sizes}),
        ):
            served[model] = _p50_us(lambda m=model, i=inputs: call(m, i), a.duration / 4)
            print(f"{model}: p50 {served[model][0]:.0f} us", file=sys.stderr)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    steps_local = sum(local.values())
    steps_served = sum(served[m][0] for m in local)
    pipe_p50, pipe_p99 = served["screen_detection_pipeline"]
    lines = [
        "## Pipeline: examples/screen_detection_pipeline (640x480 image, concurrency 1)",
        "",
        f"{os.cpu_count()} CPUs; tritonclient.http with binary tensors; p50 over "
        f"{a.duration:g} s in all.",
        "",
        "| step | in-process p50 µs | served alone p50 µs | serving cost µs |",
        "| --- | --- | --- | --- |",
    ]
    for name, us in local.items():
        lines.append(
            f"| {name} | {us:,.0f} | {served[name][0]:,.0f} | {served[name][0] - us:,.0f} |"
        )
    lines += [
        f"| **sum of the steps** | {steps_local:,.0f} | {steps_served:,.0f} | "
        f"{steps_served - steps_local:,.0f} |",
        f"| **the ensemble, one request** | | {pipe_p50:,.0f} (p99 {pipe_p99:,.0f}) | "
        f"{pipe_p50 - steps_local:,.0f} over in-process |",
        "",
        f"The ensemble answers in {pipe_p50 / steps_local:.2f}x the in-process time of its "
        f"steps and {pipe_p50 / steps_served:.2f}x the three steps called one by one over HTTP.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if a.output:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        a.output.write_text(table)


if __name__ == "__main__":
    main()
