"""Python models served from their own environments: a conda-pack archive (with its own
interpreter, built by the test the way conda-pack lays one out), the same environment
unpacked by hand, and a venv-pack archive. Each model reports the interpreter it runs on."""

from __future__ import annotations

import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.testing import RunningServer, running_server
from tests.factories.envs import conda_pack_archive, venv_pack_archive
from tests.factories.python_models import write_python_model

WHERE_PY = """import sys

import numpy as np
import triton_python_backend_utils as pb_utils

try:
    import venv_marker
    MARK = venv_marker.WHERE
except ImportError:
    MARK = "none"


class TritonPythonModel:
    def execute(self, requests):
        info = np.array([sys.executable.encode(), sys.prefix.encode(), MARK.encode()], dtype=object)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("WHERE", info)]) for _ in requests]
"""

CONFIG = """name: "{name}"
backend: "python"
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "WHERE", data_type: TYPE_STRING, dims: [ 3 ] }} ]
parameters {{ key: "EXECUTION_ENV_PATH", value: {{ string_value: "{path}" }} }}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("envs")
    conda = conda_pack_archive(work / "conda-env.tar.gz", work)
    venv = venv_pack_archive(
        work / "venv-env.tar.gz", work, packages={"venv_marker": "WHERE = 'venv-pack'\n"}
    )
    root = work / "repo"
    for name, archive in (("in_conda", conda), ("in_venv", venv)):
        folder = write_python_model(
            root,
            name,
            WHERE_PY,
            CONFIG.format(name=name, path=f"$$TRITON_MODEL_DIRECTORY/{archive.name}"),
        )
        shutil.copy(archive, folder / archive.name)
    folder = write_python_model(
        root,
        "in_folder",
        WHERE_PY,
        CONFIG.format(name="in_folder", path="$$TRITON_MODEL_DIRECTORY/env"),
    )
    (folder / "env").mkdir()
    with tarfile.open(conda) as tar:
        tar.extractall(folder / "env", filter="tar")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    envs = tmp_path_factory.mktemp("env-cache")
    with running_server(repo, ["--python-env-dir", str(envs)], timeout=120) as srv:
        yield srv


def _where(server: RunningServer, model: str) -> list[str]:
    body = {"inputs": [{"name": "X", "shape": [1], "datatype": "FP32", "data": [0.0]}]}
    answer = httpx.post(f"{server.base_url}/v2/models/{model}/infer", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["outputs"][0]["data"])


@pytest.mark.parametrize("model", ["in_conda", "in_folder", "in_venv"])
def test_the_model_runs_on_its_environment(server: RunningServer, repo: Path, model: str) -> None:
    executable, prefix, mark = _where(server, model)
    assert not executable.startswith(sys.prefix)  # not the server's own environment
    if model == "in_folder":
        # used where it is, never copied or modified
        assert prefix == str((repo / "in_folder" / "env").resolve())
    elif model == "in_conda":
        assert "in_conda" not in prefix and Path(prefix).is_dir()  # unpacked into the cache
    else:
        assert mark == "venv-pack"


def test_a_cached_environment_is_not_unpacked_again(server: RunningServer) -> None:
    """Unload and load again: the archive is already unpacked, nothing is redone (the time
    this saves is a figure for bench/, not an assertion a loaded machine could fail)."""
    base = server.base_url
    prefix = Path(_where(server, "in_conda")[1])
    cache = prefix.parent
    before = {p.name: p.stat().st_ino for p in cache.iterdir()}
    stamp = prefix.stat().st_mtime_ns, prefix.stat().st_ino
    for _ in range(3):
        assert (
            httpx.post(f"{base}/v2/repository/models/in_conda/unload", timeout=60).status_code
            == 200
        )
        assert (
            httpx.post(f"{base}/v2/repository/models/in_conda/load", timeout=60).status_code == 200
        )
        assert Path(_where(server, "in_conda")[1]) == prefix  # the same unpacked folder
    assert (prefix.stat().st_mtime_ns, prefix.stat().st_ino) == stamp  # not rebuilt in place
    assert {p.name: p.stat().st_ino for p in cache.iterdir()} == before  # nor beside it
