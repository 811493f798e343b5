"""The SageMaker container, run as SageMaker runs it: the image's own ENTRYPOINT and CMD.

The image cannot be built here (no Docker engine, no registry). What the image runs can: the
command is read from ``deploy/sagemaker/Dockerfile`` (ENTRYPOINT, then ``serve`` as SageMaker
passes it), started with the variables SageMaker sets (``SAGEMAKER_BIND_TO_PORT``,
``SAGEMAKER_SAFE_PORT_RANGE``, ``SAGEMAKER_MULTI_MODEL=true``) and driven with the platform's
calls: ``GET /ping``, ``POST /models`` for a model it unpacked under ``/opt/ml/models``,
``POST /models/<name>/invoke``, ``DELETE /models/<name>``. One difference from the image:
``/opt/ml`` is a temporary tree (``MODELYARD_SAGEMAKER_OPT_ML``), and ``python`` is this
interpreter. The Dockerfiles' LABEL, EXPOSE, ENTRYPOINT and CMD lines are checked to say what
was exercised.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from modelyard.cli.sagemaker_serve import DEFAULT_BIND_PORT
from modelyard.testing import free_port
from tests.factories.onnx_models import add_sub, write_model
from tests.integration.conftest import ADD_SUB

ROOT = Path(__file__).resolve().parents[2]
SAGEMAKER = ROOT / "deploy" / "sagemaker"
MULTI_MODEL_LABEL = "com.amazonaws.sagemaker.capabilities.multi-models"
A = np.arange(16, dtype=np.float32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.float32)


# -- the Dockerfiles -----------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path}: a continued line that never ends"
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)  # exec form: a JSON array, run without a shell
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def labels(stage: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for keyword, args in stage:
        if keyword == "LABEL":
            for pair in args.split():
                key, _, value = pair.partition("=")
                out[key] = value.strip('"')
    return out


def entrypoint(path: Path) -> list[str]:
    """The command ``docker run <image> serve`` runs: ENTRYPOINT plus SageMaker's argument."""
    (ep,) = [exec_form(a) for k, a in final_stage(path) if k == "ENTRYPOINT"]
    return [*ep, "serve"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_says_what_the_tests_run(dockerfile: str) -> None:
    path = SAGEMAKER / dockerfile
    stage = final_stage(path)
    assert labels(stage)[MULTI_MODEL_LABEL] == "true"
    assert labels(stage)["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    (expose,) = [a for k, a in stage if k == "EXPOSE"]
    assert expose == str(DEFAULT_BIND_PORT)  # SageMaker's port without SAGEMAKER_BIND_TO_PORT
    # SageMaker replaces CMD with `serve`; the image's own CMD is the same, so `docker run
    # <image>` does what SageMaker's run does
    (cmd,) = [exec_form(a) for k, a in stage if k == "CMD"]
    assert cmd == ["serve"]
    assert entrypoint(path) == ["python", "-m", "modelyard.cli.sagemaker_serve", "serve"]
    # what it copies into the build exists, and what it installs is this repository
    for keyword, args in instructions(path):
        if keyword == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    assert any(
        k == "RUN" and "pip wheel" in a and a.rstrip().endswith(" .") for k, a in instructions(path)
    )


def test_gpu_image_has_cuda_and_onnxruntime_gpu() -> None:
    stage = final_stage(SAGEMAKER / "Dockerfile.gpu")
    (base,) = [a for k, a in stage if k == "FROM"]
    assert base.startswith("nvidia/cuda:12.") and "cudnn" in base
    run = " ".join(a for k, a in stage if k == "RUN")
    # the CPU build goes, the GPU build takes its place (both install the module onnxruntime)
    assert run.index("pip uninstall -y onnxruntime") < run.index(
        'pip install --no-cache-dir "onnxruntime-gpu'
    )


# -- the entry point, as SageMaker runs it -------------------------------------------------


def _free_pair() -> int:
    """A port whose next port is free as well (a two-port safe range)."""
    for _ in range(50):
        low = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", low + 1))
        except OSError:
            continue
        return low
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Container:
    process: subprocess.Popen[bytes]
    log: Path
    bind_port: int
    http_port: int
    opt_ml: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.bind_port}", timeout=60)


def run_container(opt_ml: Path, environ: dict[str, str], ranged: bool = True) -> Container:
    """The Dockerfile's entry point with SageMaker's variables; returns once ``/ping`` is 200.

    The port range is two ports, the first of which becomes the HTTP port (the entry point's
    choice); the container face listens on ``SAGEMAKER_BIND_TO_PORT``, outside it.
    """
    command = entrypoint(SAGEMAKER / "Dockerfile")
    assert command[0] == "python"
    low, bind = _free_pair(), free_port()
    env = {**os.environ, **environ, "MODELYARD_SAGEMAKER_OPT_ML": str(opt_ml)}
    env["SAGEMAKER_BIND_TO_PORT"] = str(bind)
    if ranged:
        env["SAGEMAKER_SAFE_PORT_RANGE"] = f"{low}-{low + 1}"
    env["XDG_CACHE_HOME"] = str(opt_ml.parent / "cache")  # the container's home, not ours
    fd, name = tempfile.mkstemp(prefix="modelyard-sagemaker-", suffix=".log")
    with os.fdopen(fd, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, *command[1:]], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    container = Container(process, Path(name), bind, low, opt_ml)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"the container exited with {process.returncode}:\n{container.output()}")
        try:
            if httpx.get(f"http://127.0.0.1:{bind}/ping", timeout=2).status_code == 200:
                return container
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(container)
            pytest.fail(f"no /ping after 60 s:\n{container.output()}")
        time.sleep(0.1)


def stop(container: Container) -> int:
    """What SageMaker does to end a container: SIGTERM (then SIGKILL if it hangs)."""
    if container.process.poll() is None:
        container.process.send_signal(signal.SIGTERM)
        try:
            container.process.wait(60)
        except subprocess.TimeoutExpired:
            container.process.kill()
            container.process.wait()
    return container.process.returncode


@pytest.fixture(scope="module")
def multi_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A multi-model endpoint's container; the platform unpacked one model to
    ``/opt/ml/models/<hash>/model`` (the archive held the model's folder)."""
    opt_ml = tmp_path_factory.mktemp("sagemaker") / "opt" / "ml"
    write_model(
        opt_ml / "models" / "9f8e7d6c" / "model", "add_sub", add_sub(dims=["batch", 16]), ADD_SUB
    )
    container = run_container(opt_ml, {"SAGEMAKER_MULTI_MODEL": "true"})
    yield container
    stop(container)
    container.log.unlink(missing_ok=True)


def _body() -> bytes:
    inputs = [
        {"name": n, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        for n, x in (("INPUT0", A), ("INPUT1", B))
    ]
    return orjson.dumps({"inputs": inputs})


def _output(doc: dict[str, Any], name: str) -> Any:
    (out,) = [o for o in doc["outputs"] if o["name"] == name]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def test_the_platform_s_calls_on_a_multi_model_container(multi_model: Container) -> None:
    url = str(multi_model.opt_ml / "models" / "9f8e7d6c" / "model")
    headers = {"Content-Type": "application/json"}
    with multi_model.client() as platform:
        assert platform.get("/ping").status_code == 200
        assert platform.get("/models").json()["models"] == []
        loaded = platform.post("/models", json={"model_name": "9f8e7d6c", "url": url})
        assert loaded.status_code == 200, loaded.text
        assert platform.get("/models/9f8e7d6c").json() == {"modelName": "9f8e7d6c", "modelUrl": url}
        answer = platform.post("/models/9f8e7d6c/invoke", content=_body(), headers=headers)
        assert answer.status_code == 200, answer.text
        doc = orjson.loads(answer.content)
        np.testing.assert_array_equal(_output(doc, "OUTPUT0"), A + B)
        np.testing.assert_array_equal(_output(doc, "OUTPUT1"), A - B)
        # a folder outside /opt/ml/models is not the platform's: refused
        outside = platform.post("/models", json={"model_name": "x", "url": str(multi_model.opt_ml)})
        assert outside.status_code == 400
        assert platform.delete("/models/9f8e7d6c").status_code == 200
        assert (
            platform.post("/models/9f8e7d6c/invoke", content=_body(), headers=headers).status_code
            == 404
        )
        assert platform.get("/models").json()["models"] == []


def test_the_other_listeners_are_inside_the_safe_range(multi_model: Container) -> None:
    """SAGEMAKER_SAFE_PORT_RANGE: the HTTP listener took the range's first port; metrics are
    off, as in Triton's container (nothing else needs a port)."""
    ready = httpx.get(f"http://127.0.0.1:{multi_model.http_port}/v2/health/ready", timeout=30)
    assert ready.status_code == 200
    command = next(
        line for line in multi_model.output().splitlines() if line.startswith("modelyard serve ")
    )
    assert f"--http-port {multi_model.http_port}" in command
    assert "--allow-metrics=false" in command
    assert "--model-control-mode explicit" in command


def test_single_model_container_serves_invocations(tmp_path: Path) -> None:
    """Without SAGEMAKER_MULTI_MODEL: the model in /opt/ml/model is loaded at start and
    ``/invocations`` serves it (the repository's only model, by Triton's rule)."""
    opt_ml = tmp_path / "opt" / "ml"
    write_model(opt_ml / "model", "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    container = run_container(opt_ml, {}, ranged=False)
    try:
        with container.client() as platform:
            answer = platform.post(
                "/invocations", content=_body(), headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 200, answer.text
            np.testing.assert_array_equal(_output(orjson.loads(answer.content), "OUTPUT0"), A + B)
    finally:
        assert stop(container) == 0  # SIGTERM drains and exits 0
        container.log.unlink(missing_ok=True)


def test_the_container_ends_cleanly_on_sigterm(multi_model: Container) -> None:
    assert stop(multi_model) == 0
    assert multi_model.process.returncode == 0


@pytest.mark.parametrize(
    ("argv", "layout", "message"),
    [
        (["train"], None, "SageMaker runs it as 'serve', got 'train'"),
        (["serve"], "flat", "the model archive must contain the model's folder"),
        (["serve"], "empty", "no model folder in"),
    ],
)
def test_what_the_container_refuses_at_start(
    tmp_path: Path, argv: list[str], layout: str | None, message: str
) -> None:
    opt_ml = tmp_path / "opt" / "ml"
    (opt_ml / "model").mkdir(parents=True)
    if layout == "flat":  # config.pbtxt at the top of /opt/ml/model
        (opt_ml / "model" / "config.pbtxt").write_text(ADD_SUB)
    command = entrypoint(SAGEMAKER / "Dockerfile")[:-1] + argv
    env = {**os.environ, "MODELYARD_SAGEMAKER_OPT_ML": str(opt_ml)}
    done = subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
