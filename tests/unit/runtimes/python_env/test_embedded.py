"""pack_environment (for `modelyard package`) and environments embedded in model folders."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sysconfig
import tarfile
from pathlib import Path

import pytest

from modelyard.errors import EnvironmentUnusable
from modelyard.runtimes.python.environments import (
    EMBEDDED_ARCHIVE,
    EMBEDDED_LOCK,
    EnvironmentOptions,
    pack_environment,
    resolve_environment,
)
from tests.factories.envs import pack_folder, venv_layout
from tests.unit.runtimes.python_env.conftest import make_model, run_in


def _packed(tmp_path: Path, options: EnvironmentOptions, name: str = "packed") -> Path:
    model = make_model(tmp_path, name, {"requirements.txt": "myard-probe==1.0\n"})
    pack_environment(
        model / "requirements.txt", model / EMBEDDED_LOCK, model / EMBEDDED_ARCHIVE, options
    )
    return model


def test_pack_writes_a_lock_and_a_reproducible_archive(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    model = _packed(tmp_path, options)
    lock = (model / EMBEDDED_LOCK).read_text()
    assert lock.startswith("myard-probe==1.0")
    assert "--hash=sha256:" in lock
    first = hashlib.sha256((model / EMBEDDED_ARCHIVE).read_bytes()).hexdigest()
    # again, with another cache (cold uv cache): the same bytes
    other = dataclasses.replace(options, cache_dir=tmp_path / "other-cache")
    pack_environment(model / "requirements.txt", tmp_path / "l2", tmp_path / "a2.tar.gz", other)
    assert hashlib.sha256((tmp_path / "a2.tar.gz").read_bytes()).hexdigest() == first
    assert (tmp_path / "l2").read_text() == lock
    with tarfile.open(model / EMBEDDED_ARCHIVE) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert {m.mtime for m in tar.getmembers()} == {315532800}
        assert {(m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()} == {(0, 0, "", "")}
    assert "pyvenv.cfg" in names and "modelyard-env.json" in names
    assert not [n for n in names if n.endswith(".pyc") or n.startswith("bin/python")]
    assert not [n for n in names if n.endswith("uv_cache.json")]


def test_an_embedded_environment_needs_no_index(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    model = _packed(tmp_path, options)
    # a production server: no find-links, no index, no building
    production = EnvironmentOptions(cache_dir=tmp_path / "prod-cache", build=False, no_index=True)
    env = resolve_environment(model, {}, production)
    assert env.origin == "embedded"
    out = run_in(env, "import myard_probe, numpy; print(myard_probe.__version__)")
    assert out == "1.0"  # numpy lent by the server, as for requirements.txt
    assert resolve_environment(model, {}, production) == env


def test_a_stray_environment_archive_without_lock_is_not_embedded(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    model = _packed(tmp_path, options)
    (model / EMBEDDED_LOCK).unlink()
    (model / "requirements.txt").unlink()
    assert resolve_environment(model, {}, options).origin == "server"


def _embedded(tmp_path: Path, name: str, *, platform: str, home: Path) -> Path:
    root = venv_layout(tmp_path / f"{name}-env", home=home, with_numpy=False)
    (root / "modelyard-env.json").write_text(json.dumps({"format": 1, "platform": platform}))
    model = make_model(tmp_path, name, {EMBEDDED_LOCK: "numpy\n"})
    pack_folder(root, model / EMBEDDED_ARCHIVE)
    return model


def test_an_embedded_environment_moves_to_this_servers_interpreter(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    # packed where Python lived elsewhere; same minor version here: bound to the server's
    model = _embedded(
        tmp_path, "moved", platform=sysconfig.get_platform(), home=Path("/opt/build-python/bin")
    )
    env = resolve_environment(model, {}, options)
    assert env.origin == "embedded"
    cfg = (env.python.parent.parent / "pyvenv.cfg").read_text()
    assert "/opt/build-python" not in cfg
    assert run_in(env, "import numpy; print('ok')") == "ok"


def test_an_embedded_environment_from_another_platform_is_refused(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    model = _embedded(tmp_path, "elsewhere", platform="macosx-14.0-arm64", home=Path("/x"))
    with pytest.raises(EnvironmentUnusable, match=r"packed on macosx-14\.0-arm64"):
        resolve_environment(model, {}, options)
