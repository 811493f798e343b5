"""EXECUTION_ENV_PATH: $$TRITON_MODEL_DIRECTORY, the model-folder rule, and the fallbacks."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

from modelyard.errors import EnvironmentUnusable
from modelyard.runtimes.python.environments import EnvironmentOptions, resolve_environment
from tests.unit.runtimes.python_env.conftest import ENV_PATH, make_model


def test_no_environment_is_the_servers_own(tmp_path: Path, options: EnvironmentOptions) -> None:
    model = make_model(tmp_path, "plain")
    for params in ({}, {ENV_PATH: ""}, {ENV_PATH: "   "}):
        env = resolve_environment(model, params, options)
        assert env.origin == "server"
        assert env.python == Path(sys.executable)
        assert env.key == ""
        assert env.env == {}
        assert env.python_version == sys.version_info[:2]
    assert not options.cache_dir.exists()  # nothing is made for the server's own


@pytest.mark.parametrize(
    "value",
    [
        "$$TRITON_MODEL_DIRECTORY/../shared/env.tar.gz",
        "$$TRITON_MODEL_DIRECTORY/sub/../../shared/env.tar.gz",
        "../shared/env.tar.gz",
        "$$TRITON_MODEL_DIRECTORY/link.tar.gz",  # a link inside that leads out
    ],
)
def test_a_path_leaving_the_model_folder_is_refused(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions, value: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(venv_archive, shared / "env.tar.gz")
    model = make_model(tmp_path, "escapes")
    (model / "sub").mkdir()
    (model / "link.tar.gz").symlink_to(shared / "env.tar.gz")
    with pytest.raises(EnvironmentUnusable, match="outside the model's folder") as err:
        resolve_environment(model, {ENV_PATH: value}, options)
    assert str(err.value).startswith("model 'escapes': EXECUTION_ENV_PATH")
    assert value in str(err.value)
    assert not (options.cache_dir / "envs").exists()


def test_model_directory_and_relative_paths_stay_inside(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions
) -> None:
    model = make_model(tmp_path, "inside", {"envs/env.tar.gz": venv_archive.read_bytes()})
    one = resolve_environment(
        model, {ENV_PATH: "$$TRITON_MODEL_DIRECTORY/envs/env.tar.gz"}, options
    )
    two = resolve_environment(model, {ENV_PATH: "envs/env.tar.gz"}, options)
    assert one == two
    assert one.origin == "archive"


def test_an_absolute_path_elsewhere_is_accepted_as_triton_does(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions
) -> None:
    model = make_model(tmp_path, "absolute")
    env = resolve_environment(model, {ENV_PATH: str(venv_archive)}, options)
    assert env.origin == "archive"
    strict = dataclasses.replace(options, external_env_paths=False)
    with pytest.raises(EnvironmentUnusable, match="from model folders only"):
        resolve_environment(model, {ENV_PATH: str(venv_archive)}, strict)


def test_a_missing_path_is_named(tmp_path: Path, options: EnvironmentOptions) -> None:
    model = make_model(tmp_path, "missing")
    with pytest.raises(EnvironmentUnusable, match=r"names '.*/missing/nope\.tar\.gz'.*not exist"):
        resolve_environment(model, {ENV_PATH: "$$TRITON_MODEL_DIRECTORY/nope.tar.gz"}, options)
