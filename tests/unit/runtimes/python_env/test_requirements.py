"""requirements.txt: virtualenvs built with uv (or pip) from local wheels, cached, numpy lent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy
import pytest

import modelyard.runtimes.python.environments as environments
from modelyard.errors import EnvironmentUnusable
from modelyard.runtimes.python.environments import EnvironmentOptions, resolve_environment
from tests.unit.runtimes.python_env.conftest import make_model, run_in


def _pinned(tmp_path: Path, name: str, version: str) -> Path:
    return make_model(tmp_path, name, {"requirements.txt": f"myard-probe=={version}\n"})


def test_two_models_pin_two_versions_of_one_package(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    one = resolve_environment(_pinned(tmp_path, "v1", "1.0"), {}, options)
    two = resolve_environment(_pinned(tmp_path, "v2", "2.0"), {}, options)
    assert one.origin == two.origin == "requirements"
    assert one.key != two.key and one.python != two.python
    code = "import myard_probe; print(myard_probe.__version__)"
    assert run_in(one, code) == "1.0"
    assert run_in(two, code) == "2.0"


def test_the_servers_numpy_is_lent_at_the_lowest_priority(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    env = resolve_environment(_pinned(tmp_path, "np", "1.0"), {}, options)
    root = env.python.parent.parent
    out = run_in(env, "import sys, numpy; print(numpy.__version__); print(sys.path[-1])")
    version, last = out.splitlines()
    assert version == numpy.__version__
    lent = root / "modelyard-numpy"
    assert Path(last) == lent  # after the venv's own site-packages
    # only numpy (and its bundled libraries), never the server's whole site-packages
    assert {p.name for p in lent.iterdir()} <= {"numpy", "numpy.libs"}
    assert (lent / "numpy").resolve() == Path(numpy.__file__).parent.resolve()
    with pytest.raises(AssertionError):
        run_in(env, "import pytest")  # the server has it; the model's environment does not


def test_a_cached_environment_is_reused_without_installing(
    tmp_path: Path, options: EnvironmentOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = resolve_environment(_pinned(tmp_path, "a", "1.0"), {}, options)
    root = first.python.parent.parent
    record = root.with_suffix(".json")
    marks = (root.stat().st_mtime_ns, record.stat().st_mtime_ns, record.stat().st_ino)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached environment must not be built again")

    monkeypatch.setattr(environments, "build_venv", no_build)
    monkeypatch.setattr(environments, "probe", no_build)
    # another model with the same requirements, and a restart (a fresh call), share it
    other = _pinned(tmp_path, "b", "1.0")
    for _ in range(5):
        assert resolve_environment(other, {}, options) == first
    assert (root.stat().st_mtime_ns, record.stat().st_mtime_ns, record.stat().st_ino) == marks


def test_building_switched_off_names_the_missing_environment(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    model = _pinned(tmp_path, "prod", "2.0")
    production = dataclasses.replace(options, build=False)
    with pytest.raises(EnvironmentUnusable, match="building environments is switched off") as err:
        resolve_environment(model, {}, production)
    assert str(err.value).startswith("model 'prod': the Python environment for")
    assert "requirements.txt" in str(err.value) and "modelyard package" in str(err.value)
    built = resolve_environment(model, {}, options)  # built where building is allowed...
    assert resolve_environment(model, {}, production) == built  # ...and then served from cache


def test_an_unsatisfiable_requirement_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    model = _pinned(tmp_path, "nope", "9.9")
    with pytest.raises(
        EnvironmentUnusable, match=r"model 'nope': .*uv installing requirements.txt failed"
    ):
        resolve_environment(model, {}, options)
    assert not list((options.cache_dir / "envs").iterdir())


def test_pip_builds_the_same_way(tmp_path: Path, options: EnvironmentOptions) -> None:
    with_pip = dataclasses.replace(options, installer="pip")
    env = resolve_environment(_pinned(tmp_path, "pip", "2.0"), {}, with_pip)
    assert run_in(env, "import myard_probe, numpy; print(myard_probe.__version__)") == "2.0"
    uv_env = resolve_environment(_pinned(tmp_path, "uv", "2.0"), {}, options)
    assert uv_env.key != env.key  # the installer is part of the key


def test_an_unknown_installer(tmp_path: Path, options: EnvironmentOptions) -> None:
    with pytest.raises(EnvironmentUnusable, match="unknown Python environment installer 'conda'"):
        resolve_environment(
            _pinned(tmp_path, "x", "1.0"), {}, dataclasses.replace(options, installer="conda")
        )
