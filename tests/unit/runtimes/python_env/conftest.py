"""Environments built once per session (they copy an interpreter and numpy), and helpers."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from modelyard.runtimes.python.environments import EnvironmentOptions, PythonEnvironment
from tests.factories.envs import conda_pack_archive, venv_pack_archive, write_wheel

ENV_PATH = "EXECUTION_ENV_PATH"


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links folder with myard_probe 1.0 and 2.0 (no index is ever asked)."""
    folder = tmp_path_factory.mktemp("wheels")
    write_wheel(folder, "myard_probe", "1.0")
    write_wheel(folder, "myard_probe", "2.0")
    return folder


@pytest.fixture(scope="session")
def conda_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("conda")
    return conda_pack_archive(work / "conda-env.tar.gz", work)


@pytest.fixture(scope="session")
def venv_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("venv")
    return venv_pack_archive(
        work / "venv-env.tar.gz", work, packages={"venv_marker": "WHERE = 'venv-pack'\n"}
    )


@pytest.fixture(scope="session")
def conda_folder(tmp_path_factory: pytest.TempPathFactory, conda_archive: Path) -> Path:
    """A model folder holding the conda archive unpacked by hand (``tar -xf``), as Triton's
    docs advise for faster loads."""
    model = tmp_path_factory.mktemp("models") / "unpacked"
    (model / "env").mkdir(parents=True)
    with tarfile.open(conda_archive) as tar:
        tar.extractall(model / "env", filter="tar")
    return model


@pytest.fixture
def options(tmp_path: Path, wheels: Path) -> EnvironmentOptions:
    return EnvironmentOptions(
        cache_dir=tmp_path / "cache", no_index=True, find_links=(str(wheels),)
    )


def make_model(parent: Path, name: str, files: dict[str, str | bytes] | None = None) -> Path:
    model = parent / name
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n')
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    for rel, content in (files or {}).items():
        path = model / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return model


def run_in(env: PythonEnvironment, code: str) -> str:
    """Run ``code`` with the environment's interpreter and variables, as the worker would be."""
    done = subprocess.run(
        [str(env.python), "-c", code],
        env=env.worker_environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
