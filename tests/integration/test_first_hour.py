"""A newcomer's first hour (issue 13.4): what the server says at start, on a busy port, and
what it does and does not log, checked on the real process and its real output."""

from __future__ import annotations

import importlib.metadata
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import modelyard
from modelyard.testing import running_server
from tests.factories.onnx_models import add_sub, write_model

_CLI = [str(Path(sys.executable).with_name("modelyard"))]  # the installed console script


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_version() -> None:
    out = _cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"modelyard {modelyard.__version__}"


@pytest.mark.parametrize("front_end", ["modelyard", "uvicorn"])
def test_a_port_in_use_is_one_line_naming_the_port_and_the_flag(
    tmp_path: Path, front_end: str
) -> None:
    write_model(tmp_path, "add_sub", add_sub(), None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _cli(
            "serve",
            "--model-repository",
            str(tmp_path),
            "--http-address",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--allow-metrics",
            "false",
            "--http-server",
            front_end,
        )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1, text
    assert f"127.0.0.1:{port}" in errors[0] and "--http-port" in errors[0], errors[0]


def test_start_up_says_which_store_and_how_many_models(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_model(tmp_path, name, add_sub(), None)
    with running_server(tmp_path) as server:
        assert re.search(rf"serving 3 models from {re.escape(str(tmp_path))}", server.output())


def test_refused_requests_are_not_logged_one_line_each_but_failed_loads_are(
    tmp_path: Path,
) -> None:
    write_model(tmp_path, "add_sub", add_sub(), None)
    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: x\n')
    with running_server(tmp_path) as server, httpx.Client(base_url=server.base_url) as http:
        for i in range(20):
            assert http.get(f"/v2/models/nobody_{i}").status_code == 404
        bad = {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": "x"}]}
        assert http.post("/v2/models/add_sub/infer", json=bad).status_code == 400
        assert http.post("/v2/models/broken/infer", json=bad).status_code >= 400
        output = server.output()
    assert "nobody_" not in output  # a client's mistakes are its own business
    failed = [line for line in output.splitlines() if "broken" in line]
    assert failed and all(" ERROR " in line or " WARNING " in line for line in failed), failed


def test_modelyard_test_needs_nothing_beyond_the_package() -> None:
    """`modelyard test` runs a project's pytest files: pytest comes with the package itself,
    not with an extra the README's install would miss."""
    requires = importlib.metadata.requires("modelyard") or []
    core = [r for r in requires if "extra ==" not in r]
    assert any(re.match(r"pytest\b", r) for r in core), core


def test_init_suggests_the_readmes_own_commands(tmp_path: Path) -> None:
    out = _cli("init", str(tmp_path / "my-models"), "--no-git")
    assert out.returncode == 0, out.stdout + out.stderr
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    hinted = [line.strip() for line in out.stdout.splitlines() if line.startswith("  modelyard ")]
    assert len(hinted) == 4, out.stdout
    for command in hinted:
        assert command in readme, command
