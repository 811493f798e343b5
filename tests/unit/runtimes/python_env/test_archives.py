"""Packed environments (conda-pack, venv-pack) and unpacked folders named by EXECUTION_ENV_PATH."""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import pytest

from modelyard.errors import ConfigError, EnvironmentUnusable
from modelyard.runtimes.python.environments import EnvironmentOptions, resolve_environment
from modelyard.store._archive import ArchiveTooLarge, UnsafeArchiveMember
from tests.factories.envs import (
    BINARY_PLACEHOLDER,
    TEXT_PLACEHOLDER,
    conda_pack_archive,
    member,
    pack_folder,
    tar_with,
    venv_layout,
    venv_pack_archive,
    write_conda_unpack,
)
from tests.unit.runtimes.python_env.conftest import ENV_PATH, make_model, run_in

IN_MODEL = "$$TRITON_MODEL_DIRECTORY/env.tar.gz"


def _model_with(tmp_path: Path, name: str, archive: Path | bytes) -> Path:
    data = archive if isinstance(archive, bytes) else archive.read_bytes()
    return make_model(tmp_path, name, {"env.tar.gz": data})


def test_conda_pack_archive_runs_its_own_interpreter_with_prefixes_rewritten(
    tmp_path: Path, conda_archive: Path, options: EnvironmentOptions
) -> None:
    model = _model_with(tmp_path, "conda", conda_archive)
    env = resolve_environment(model, {ENV_PATH: IN_MODEL}, options)
    root = env.python.parent.parent
    assert env.origin == "archive"
    assert root.parent == options.cache_dir / "envs"
    assert env.python_version == sys.version_info[:2]
    assert len(env.key) == 64
    assert env.env["CONDA_PREFIX"] == str(root)
    assert env.env["PATH"].startswith(f"{root}/bin{os.pathsep}")
    assert env.env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == f"{root}/lib"
    assert env.env["PYTHONNOUSERSITE"] == "1"
    # internal links survive unpacking
    assert os.readlink(root / "bin/python") == f"python{sys.version_info[0]}.{sys.version_info[1]}"
    # the interpreter is the archive's: its prefix, its stdlib, its numpy
    prefix, numpy_at = run_in(
        env, "import sys, numpy; print(sys.prefix); print(numpy.__file__)"
    ).splitlines()
    assert Path(prefix) == root
    assert Path(numpy_at).is_relative_to(root)
    # conda-unpack's work, done without running it: text, shebang-ish script, binary
    assert (root / "etc/probe.txt").read_text() == f"prefix={root}\n"
    assert (root / "bin/probe-tool").read_text().count(str(root)) == 2
    assert os.access(root / "bin/probe-tool", os.X_OK)
    binary = (root / "lib/probe.bin").read_bytes()
    assert TEXT_PLACEHOLDER.encode() not in binary and BINARY_PLACEHOLDER.encode() not in binary
    assert f"\x00{root}/lib/x.so\x00".encode() in binary
    assert len(binary) == len(
        b"\x7fELF head\x00" + BINARY_PLACEHOLDER.encode() + b"/lib/x.so\x00tail\x00"
    )
    assert binary.endswith(b"\x00tail\x00")


def test_the_same_archive_in_two_models_is_unpacked_once(
    tmp_path: Path, conda_archive: Path, options: EnvironmentOptions
) -> None:
    one = resolve_environment(
        _model_with(tmp_path, "a", conda_archive), {ENV_PATH: IN_MODEL}, options
    )
    two = resolve_environment(
        _model_with(tmp_path, "b", conda_archive), {ENV_PATH: IN_MODEL}, options
    )
    assert one == two
    assert [p.name for p in (options.cache_dir / "envs").iterdir() if p.is_dir()] == [
        one.python.parent.parent.name
    ]


def test_unpacked_folder_is_used_where_it_is(
    tmp_path: Path, conda_folder: Path, options: EnvironmentOptions
) -> None:
    before = (conda_folder / "env/etc/probe.txt").read_text()
    env = resolve_environment(conda_folder, {ENV_PATH: "$$TRITON_MODEL_DIRECTORY/env"}, options)
    assert env.origin == "folder"
    assert env.python == conda_folder / "env/bin/python"
    assert env.env["CONDA_PREFIX"] == str(conda_folder / "env")
    assert Path(run_in(env, "import sys; print(sys.prefix)")) == conda_folder / "env"
    assert (conda_folder / "env/etc/probe.txt").read_text() == before  # never modified
    again = resolve_environment(conda_folder, {ENV_PATH: "$$TRITON_MODEL_DIRECTORY/env"}, options)
    assert again == env


def test_venv_pack_archive_binds_to_its_home_interpreter(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions
) -> None:
    model = _model_with(tmp_path, "venv", venv_archive)
    env = resolve_environment(model, {ENV_PATH: IN_MODEL}, options)
    root = env.python.parent.parent
    assert env.origin == "archive"
    assert env.env["VIRTUAL_ENV"] == str(root)
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert os.readlink(root / "bin/python") == str(Path(sys.base_prefix) / "bin" / minor)
    out = run_in(env, "import sys, venv_marker, numpy; print(sys.prefix, venv_marker.WHERE)")
    assert out == f"{root} venv-pack"


def test_venv_whose_home_is_missing_is_a_clear_error(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    archive = venv_pack_archive(
        tmp_path / "gone.tar.gz", tmp_path, home=Path("/opt/no-such-python/bin"), with_numpy=False
    )
    model = _model_with(tmp_path, "homeless", archive)
    with pytest.raises(
        EnvironmentUnusable, match=r"home = '/opt/no-such-python/bin'\) does not exist"
    ) as err:
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)
    assert str(err.value).startswith("model 'homeless': Python environment")
    assert "conda-pack" in str(err.value)
    assert not [p for p in (options.cache_dir / "envs").iterdir() if p.is_dir()]
    assert not list((options.cache_dir / "tmp").iterdir())


def test_venv_for_a_python_its_home_lacks_is_a_clear_error(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    archive = venv_pack_archive(
        tmp_path / "py399.tar.gz", tmp_path, version="3.99.0", with_numpy=False
    )
    model = _model_with(tmp_path, "future", archive)
    with pytest.raises(
        EnvironmentUnusable, match=r"virtualenv for Python 3\.99.*has no python3\.99"
    ):
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)


def test_unpacked_venv_folder_whose_home_is_missing(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    model = make_model(tmp_path, "venvdir")
    venv_layout(model / "env", home=Path("/opt/no-such-python/bin"), with_numpy=False)
    with pytest.raises(EnvironmentUnusable, match="does not exist on this machine"):
        resolve_environment(model, {ENV_PATH: "$$TRITON_MODEL_DIRECTORY/env"}, options)


def test_an_environment_without_numpy_is_a_remembered_load_error(
    tmp_path: Path, options: EnvironmentOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = venv_pack_archive(tmp_path / "bare.tar.gz", tmp_path, with_numpy=False)
    model = _model_with(tmp_path, "bare", archive)
    with pytest.raises(EnvironmentUnusable, match=r"model 'bare': .*cannot import numpy"):
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)
    # the check's outcome is recorded with the environment: no second unpack, no second run
    import modelyard.runtimes.python.environments as environments

    monkeypatch.setattr(environments, "probe", _forbidden)
    monkeypatch.setattr(environments, "unpack", _forbidden)
    with pytest.raises(EnvironmentUnusable, match=r"model 'bare': .*cannot import numpy"):
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("a cached environment must not be unpacked or checked again")


def _other_python() -> Path | None:
    """Another CPython minor version installed beside this one (pyenv), if any."""
    mine = Path(sys.base_prefix)
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}."
    for sibling in sorted(mine.parent.glob("3.1*")):
        if not sibling.name.startswith(minor) and list(sibling.glob("lib/libpython3.*.so*")):
            return sibling
    return None


@pytest.mark.skipif(_other_python() is None, reason="no other Python minor version installed")
def test_conda_archive_for_another_python_runs_its_own_interpreter(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    other = _other_python()
    assert other is not None
    archive = conda_pack_archive(tmp_path / "other.tar.gz", tmp_path, base=other, with_numpy=False)
    model = _model_with(tmp_path, "other", archive)
    version = other.name.rsplit(".", 1)[0]
    # it starts (its own interpreter, not the server's); numpy is all it lacks here
    with pytest.raises(EnvironmentUnusable, match=rf"\(Python {version}\) cannot import numpy"):
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)


def _conda_like(*extra: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    return tar_with([(member("bin/python"), b"#!/bin/sh\n"), *extra])


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (_conda_like((member("../evil"), b"x")), "leads outside"),
        (_conda_like((member("/tmp/evil-abs"), b"x")), "absolute path"),
        (
            _conda_like((member("bin/evil", tarfile.SYMTYPE, linkname="../../../evil"), None)),
            "symbolic link leading outside",
        ),
        (
            _conda_like((member("lib/passwd", tarfile.SYMTYPE, linkname="/etc/passwd"), None)),
            "symbolic link leading outside",
        ),
        (
            _conda_like((member("bin/hard", tarfile.LNKTYPE, linkname="../../../evil"), None)),
            "leads outside",
        ),
        (
            _conda_like((member("bin/hard", tarfile.LNKTYPE, linkname="/etc/passwd"), None)),
            "absolute path",
        ),
        (
            _conda_like((member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), None)),
            "device file",
        ),
        (_conda_like((member("dev/fifo", tarfile.FIFOTYPE), None)), "FIFO"),
    ],
)
def test_hostile_archives_are_refused_and_nothing_is_written_outside(
    tmp_path: Path, options: EnvironmentOptions, archive: bytes, message: str
) -> None:
    models = tmp_path / "repo"
    model = _model_with(models, "hostile", archive)
    with pytest.raises(UnsafeArchiveMember, match=message) as err:
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)
    assert isinstance(err.value, ConfigError)
    assert str(err.value).startswith(f"model 'hostile': archive '{model / 'env.tar.gz'}'")
    assert not [p for p in (options.cache_dir / "envs").iterdir() if p.is_dir()]
    assert not list((options.cache_dir / "tmp").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "repo"]
    assert not Path("/tmp/evil-abs").exists()


def test_conda_unpack_records_cannot_name_files_outside(
    tmp_path: Path, options: EnvironmentOptions
) -> None:
    root = tmp_path / "env"
    (root / "bin").mkdir(parents=True)
    (root / "bin/python").write_text("#!/bin/sh\n")
    (tmp_path / "victim.txt").write_text(f"prefix={TEXT_PLACEHOLDER}\n")
    write_conda_unpack(root, [("../../../victim.txt", TEXT_PLACEHOLDER, "text")])
    model = _model_with(tmp_path, "records", pack_folder(root, tmp_path / "r.tar.gz"))
    with pytest.raises(UnsafeArchiveMember, match="outside the environment"):
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)
    assert (tmp_path / "victim.txt").read_text() == f"prefix={TEXT_PLACEHOLDER}\n"


def test_size_cap_applies(tmp_path: Path, venv_archive: Path, options: EnvironmentOptions) -> None:
    import dataclasses

    small = dataclasses.replace(options, max_unpacked_bytes=1 << 20)
    model = _model_with(tmp_path, "big", venv_archive)
    with pytest.raises(ArchiveTooLarge, match="more than 1048576 bytes"):
        resolve_environment(model, {ENV_PATH: IN_MODEL}, small)


def test_an_archive_that_is_no_environment(tmp_path: Path, options: EnvironmentOptions) -> None:
    model = _model_with(tmp_path, "notenv", tar_with([(member("README"), b"hi")]))
    with pytest.raises(EnvironmentUnusable, match="neither a conda environment"):
        resolve_environment(model, {ENV_PATH: IN_MODEL}, options)
