"""The deploy loop end to end, as a user runs it: init -> add a model -> package -> test the
artifact on a real server -> push to an S3 staging store (moto's server) -> a running staging
server serves the new version without a restart -> promote -> a production server serves it
-> rollback with traffic flowing and no failed request. Also: the scaffold's own pipeline
script (lint, package, test, publish), which stops before any push when a model test fails;
pushing over an existing version; byte-identical builds in two folders.

Python environments are built from a local wheel (``--no-index --find-links``), never a
registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelyard.cli.main import app
from modelyard.testing import RunningServer, running_server
from tests.factories.envs import write_wheel
from tests.integration.s3_server import MotoServer

SCALE_CONFIG = """
name: "scale"
backend: "python"
max_batch_size: 0
input [ { name: "X", data_type: TYPE_FP32, dims: [ 3 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ 3 ] } ]
"""

# multiplies by the major version of a package that only its own environment has
SCALE_PY = """
import triton_python_backend_utils as pb_utils
import tinyscale


class TritonPythonModel:
    def execute(self, requests):
        factor = float(tinyscale.__version__.split(".")[0])
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(
                "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * factor)])
            for r in requests
        ]
"""

SCALE_CASES = """
cases:
  - name: triples
    inputs: {X: [1, 2, 3]}
    outputs: {Y: {shape: [3], data: [3, 6, 9]}}
"""

BODY = {
    "inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
    ]
}

runner = CliRunner()


def cli(*args: str, ok: bool = True) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    if ok and result.exit_code != 0:
        pytest.fail(f"modelyard {' '.join(args)} exited {result.exit_code}:\n{result.output}")
    if not ok and result.exit_code == 0:
        pytest.fail(f"modelyard {' '.join(args)} should have failed:\n{result.output}")
    return result.output


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    write_wheel(folder, "tinyscale", "3.0")
    return folder


@pytest.fixture
def env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wheels: Path) -> Path:
    """Environments built from the local wheel only, in a cache of the test's own."""
    monkeypatch.setenv("MODELYARD_FIND_LINKS", str(wheels))
    monkeypatch.setenv("MODELYARD_NO_INDEX", "1")
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("MODELYARD_ENV_CACHE_DIR", str(cache))
    return cache


def add_scale_model(project: Path) -> Path:
    model = project / "models" / "scale"
    (model / "1").mkdir(parents=True)
    (model / "tests").mkdir()
    (model / "config.pbtxt").write_text(SCALE_CONFIG)
    (model / "1" / "model.py").write_text(SCALE_PY)
    (model / "requirements.txt").write_text("tinyscale==3.0\n")
    (model / "tests" / "cases.yaml").write_text(SCALE_CASES)
    return model


def new_version(model: Path, version: int) -> None:
    """A new version folder of a model, its code changed (a comment): other bytes."""
    previous = max(int(p.name) for p in model.iterdir() if p.name.isdigit())
    shutil.copytree(model / str(previous), model / str(version))
    code = model / str(version) / "model.py"
    code.write_text(code.read_text() + f"\n# version {version}\n")


class Traffic:
    """Requests in a loop from a thread, recording each answer's model version or failure."""

    def __init__(self, server: RunningServer, model: str) -> None:
        self.url = f"{server.base_url}/v2/models/{model}/infer"
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 90  # bounded, whatever happens
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.post(self.url, json=BODY)
                except httpx.HTTPError as err:
                    self.failures.append(repr(err))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                    continue
                self.versions.append(response.json()["model_version"])

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)

    def wait_for(self, version: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.versions and self.versions[-1] == version:
                return
            time.sleep(0.05)
        pytest.fail(f"still serving {self.versions[-1:]} after {timeout} s, not {version}")


def wait_served(server: RunningServer, model: str, version: str, timeout: float = 20.0) -> None:
    """Wait until a request is answered by ``version`` (the model may not be there yet)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        response = httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=BODY, timeout=30)
        last = f"{response.status_code}: {response.text}"
        if response.status_code == 200 and response.json()["model_version"] == version:
            return
        time.sleep(0.1)
    pytest.fail(f"'{model}' version {version} not served after {timeout} s: {last}")


def test_the_loop_end_to_end(
    tmp_path: Path,
    moto_server: MotoServer,
    s3: Any,
    bucket: str,
    env_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    staging = f"s3://{moto_server.host_port}/{bucket}/staging"
    production = f"s3://{moto_server.host_port}/{bucket}/production"

    # init, and a second model with its own Python environment
    out = cli("init", "models-repo")
    assert "models/add_sub/tests/cases.yaml" in out and "scripts/pipeline" in out
    project = tmp_path / "models-repo"
    add_scale_model(project)
    add_sub = project / "models" / "add_sub"

    # package: artifacts with their manifest; the lock file is written back for committing
    out = cli("package", str(add_sub), str(project / "models" / "scale"), "--output", "dist")
    assert "dist/add_sub_1.tar.gz" in out and "dist/scale_1.tar.gz" in out
    assert (project / "models" / "scale" / "requirements.lock").is_file()

    # test the artifacts on a real server, with a JUnit report
    out = cli(
        "test",
        "dist/add_sub_1.tar.gz",
        "dist/scale_1.tar.gz",
        "--junit-xml",
        "report.xml",
        "--write-sha256",
        "tested.sha256",
    )
    assert "8 passed, 0 failed" in out, out
    assert 'failures="0"' in Path("report.xml").read_text()
    tested = dict(reversed(line.split()) for line in Path("tested.sha256").read_text().splitlines())
    assert set(tested) == {"add_sub_1.tar.gz", "scale_1.tar.gz"}

    flags = ["--repository-poll-secs", "0.3"]
    with (
        running_server(staging, flags) as staging_server,  # on-demand: loads on first use
        running_server(production, ["--model-control-mode", "poll", *flags]) as prod_server,
    ):
        # push the tested bytes to staging; the staging server serves them, no restart
        out = cli(
            "push", "dist/add_sub_1.tar.gz", "--to", staging, "--sha256", tested["add_sub_1.tar.gz"]
        )
        assert "add_sub_1.tar.gz ->" in out
        cli("push", "dist/scale_1.tar.gz", "--to", staging)
        wait_served(staging_server, "add_sub", "1")
        response = httpx.post(
            f"{staging_server.base_url}/v2/models/scale/infer",
            json={"inputs": [{"name": "X", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}]},
            timeout=60,
        )
        assert response.json()["outputs"][0]["data"] == [3, 6, 9]  # its own environment

        # the same bytes again: nothing to do; other bytes under version 1: refused
        assert "nothing to do" in cli("push", "dist/add_sub_1.tar.gz", "--to", staging)
        (add_sub / "1" / "model.py").write_text((add_sub / "1" / "model.py").read_text() + "#\n")
        cli("package", str(add_sub), "--output", "other")
        out = cli("push", "other/add_sub_1.tar.gz", "--to", staging, ok=False)
        assert "versions are immutable" in out

        # version 2: packaged, tested, pushed while traffic flows: staging switches
        new_version(add_sub, 2)
        cli("package", str(add_sub), "--output", "dist")
        cli("test", "dist/add_sub_2.tar.gz")
        with Traffic(staging_server, "add_sub").running() as traffic:
            cli("push", "dist/add_sub_2.tar.gz", "--to", staging)
            traffic.wait_for("2")
        assert not traffic.failures, traffic.failures[:3]
        assert traffic.versions[0] == "1"

        # promote both to production, checking the tested sha256: production serves 2
        out = cli(
            "promote", "add_sub", "1", "--from", staging, "--to", production,
            "--sha256", tested["add_sub_1.tar.gz"],
        )  # fmt: skip
        assert "add_sub_1.tar.gz ->" in out
        cli("promote", "add_sub", "2", "--from", staging, "--to", production)
        out = cli("promote", "add_sub", "2", "--from", staging, "--to", production)
        assert "nothing to do" in out
        wait_served(prod_server, "add_sub", "2")

        # roll production back while traffic flows: version 1 serves, no request fails
        with Traffic(prod_server, "add_sub").running() as traffic:
            traffic.wait_for("2")
            out = cli("rollback", "add_sub", "--store", production)
            assert "add_sub version 1 is now the newest" in out
            traffic.wait_for("1")
            time.sleep(0.3)  # and it stays there
        assert not traffic.failures, traffic.failures[:3]
        assert traffic.versions[-1] == "1"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        assert "production/.modelyard/retired/add_sub_2.tar.gz" in keys  # moved, not deleted
        assert "production/add_sub_2.tar.gz" not in keys

        out = cli("ls", production, "--retired")
        assert "serving" in out and "retired" in out and tested["add_sub_1.tar.gz"][:12] in out


def pipeline(project: Path, *stages: str, **env: str) -> subprocess.CompletedProcess[str]:
    venv_bin = str(Path(sys.executable).parent)
    return subprocess.run(
        [str(project / "scripts" / "pipeline"), *stages],
        cwd=project,
        env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_scaffold_pipeline_runs_locally_and_a_failing_test_stops_it(
    tmp_path: Path, env_cache: Path
) -> None:
    cli("init", str(tmp_path / "repo"))
    project = tmp_path / "repo"
    staging, production = tmp_path / "staging", tmp_path / "production"
    staging.mkdir()
    production.mkdir()
    stores = {"STAGING_STORE": str(staging), "PRODUCTION_STORE": str(production)}

    # the whole pipeline, as on main: lint, pull (no DVC here), package, test, publish
    done = pipeline(project, **stores, BRANCH="main")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dvc is not installed: skipping 'dvc pull'" in done.stdout
    assert sorted(p.name for p in production.iterdir()) == [
        "add_sub_1.tar.gz",
        "add_sub_1.tar.gz.sha256",
    ]
    tested = (project / "dist" / "tested.sha256").read_text().split()[0]
    assert (production / "add_sub_1.tar.gz.sha256").read_text().split()[0] == tested

    # version 2 with a wrong expectation: the test stage fails and nothing is pushed
    add_sub = project / "models" / "add_sub"
    new_version(add_sub, 2)
    cases = add_sub / "tests" / "cases.yaml"
    cases.write_text(cases.read_text().replace("[1.5, 2.5, 3.5, 4.5]", "[1.5, 2.5, 3.5, 9.5]"))
    done = pipeline(project, "package", "test", "publish", **stores, BRANCH="feature")
    assert done.returncode != 0
    assert "OUTPUT0" in done.stdout and "expected" in done.stdout  # the diff is shown
    assert not (staging / "add_sub_2.tar.gz").exists()
    assert not (project / "dist" / "tested.sha256").read_text().strip()


def test_two_builds_in_different_folders_are_byte_identical(
    tmp_path: Path, env_cache: Path
) -> None:
    first = add_scale_model(tmp_path / "a" / "repo")
    (first / "labels.txt").write_text("x\n")
    second = tmp_path / "b" / "elsewhere" / "scale"
    shutil.copytree(first, second)
    os.utime(second / "labels.txt", (1, 1))  # other times, owners do not matter
    cli("package", str(first), "--output", str(tmp_path / "out1"))
    shutil.rmtree(env_cache)  # the second build resolves and builds everything again
    cli("package", str(second), "--output", str(tmp_path / "out2"))
    one = (tmp_path / "out1" / "scale_1.tar.gz").read_bytes()
    two = (tmp_path / "out2" / "scale_1.tar.gz").read_bytes()
    assert one == two
    assert (
        b"environment.tar.gz"
        in subprocess.run(
            ["tar", "tzf", str(tmp_path / "out1" / "scale_1.tar.gz")],
            capture_output=True,
            check=True,
        ).stdout
    )


@pytest.mark.skipif(
    shutil.which("dvc") is None or shutil.which("git") is None,
    reason="needs dvc (pip install 'modelyard[dvc]') and git",
)
def test_weights_through_the_scaffolds_local_dvc_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # pragma: no cover - where DVC is installed
    monkeypatch.chdir(tmp_path)
    cli("init", "repo")
    project = tmp_path / "repo"
    for key, value in (("user.email", "ci@example.com"), ("user.name", "ci")):
        subprocess.run(["git", "config", key, value], cwd=project, check=True)
    weights = project / "models" / "add_sub" / "1" / "weights.bin"
    weights.write_bytes(os.urandom(1000))
    for command in (["dvc", "add", str(weights)], ["dvc", "push"]):
        subprocess.run(command, cwd=project, check=True, capture_output=True)
    assert (tmp_path / "repo-dvc-remote").is_dir()  # the local remote beside the repository
    weights.unlink()
    out = cli("package", str(project / "models" / "add_sub"), ok=False)
    assert "run `dvc pull`" in out
    done = pipeline(project, "pull", "package")
    assert done.returncode == 0, done.stdout + done.stderr
    names = subprocess.run(
        ["tar", "tzf", str(project / "dist" / "add_sub_1.tar.gz")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "add_sub/1/weights.bin" in names
    assert not [n for n in names if n.endswith((".dvc", ".gitignore"))]
