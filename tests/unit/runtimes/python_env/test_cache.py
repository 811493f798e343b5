"""The cache: one unpack under concurrent loads (threads and processes), fast cached resolves,
recovery from what a crash or a hand-cleaning leaves."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import modelyard.runtimes.python._env_cache as env_cache
import modelyard.runtimes.python.environments as environments
from modelyard.runtimes.python.environments import (
    EnvironmentOptions,
    PythonEnvironment,
    resolve_environment,
)
from tests.unit.runtimes.python_env.conftest import ENV_PATH, make_model

IN_MODEL = {ENV_PATH: "$$TRITON_MODEL_DIRECTORY/env.tar.gz"}


def test_two_threads_loading_one_archive_unpack_it_once(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = [
        make_model(tmp_path, f"m{i}", {"env.tar.gz": venv_archive.read_bytes()}) for i in (1, 2)
    ]
    calls: list[str] = []
    real_unpack = environments.unpack

    def slow_unpack(*args: object, **kwargs: object) -> Path:
        calls.append(threading.current_thread().name)
        time.sleep(0.2)  # widen the window in which the other thread arrives
        return real_unpack(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(environments, "unpack", slow_unpack)
    barrier = threading.Barrier(2)
    results: dict[int, PythonEnvironment | BaseException] = {}

    def load(i: int) -> None:
        barrier.wait()
        try:
            results[i] = resolve_environment(models[i], IN_MODEL, options)
        except BaseException as err:
            results[i] = err

    threads = [threading.Thread(target=load, args=(i,), name=f"loader-{i}") for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(calls) == 1
    assert isinstance(results[0], PythonEnvironment)
    assert results[0] == results[1]
    assert not list((options.cache_dir / "tmp").iterdir())


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import modelyard.runtimes.python.environments as environments
    real = environments.unpack
    def counted(*args, **kwargs):
        with open(sys.argv[3], "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(0.3)
        return real(*args, **kwargs)
    environments.unpack = counted
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.005)
    env = environments.resolve_environment(
        Path(sys.argv[1]),
        {"EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env.tar.gz"},
        environments.EnvironmentOptions(cache_dir=Path(sys.argv[2])),
    )
    print(env.python)
    """
)


def test_two_processes_loading_one_archive_unpack_it_once(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions
) -> None:
    model = make_model(tmp_path, "shared", {"env.tar.gz": venv_archive.read_bytes()})
    log, go = tmp_path / "unpacks.log", tmp_path / "go"
    args = [str(model), str(options.cache_dir), str(log), str(go)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # both imported and waiting
    go.touch()
    outs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], [o[1][-500:] for o in outs]
    assert outs[0][0] == outs[1][0]
    assert len(log.read_text().split()) == 1


def _median_ms(fn: object, runs: int = 30) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_cached_resolves_are_fast_and_touch_nothing(
    tmp_path: Path,
    venv_archive: Path,
    conda_folder: Path,
    options: EnvironmentOptions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    archive_model = make_model(tmp_path, "arch", {"env.tar.gz": venv_archive.read_bytes()})
    req_model = make_model(tmp_path, "req", {"requirements.txt": "myard-probe==1.0\n"})
    folder_params = {ENV_PATH: "$$TRITON_MODEL_DIRECTORY/env"}
    cases = {
        "archive": lambda: resolve_environment(archive_model, IN_MODEL, options),
        "requirements": lambda: resolve_environment(req_model, {}, options),
        "folder": lambda: resolve_environment(conda_folder, folder_params, options),
    }
    for load in cases.values():
        load()  # made once

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached environment must not be unpacked, built, hashed or run")

    for name in ("unpack", "build_venv", "probe"):
        monkeypatch.setattr(environments, name, forbidden)
    monkeypatch.setattr(env_cache, "file_sha256", forbidden)
    medians = {name: _median_ms(load) for name, load in cases.items()}
    print("cached resolve, median ms:", {k: round(v, 3) for k, v in medians.items()})
    assert all(ms < 20 for ms in medians.values()), medians


def test_an_archive_is_hashed_once_per_version_of_the_file(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(tmp_path, "h", {"env.tar.gz": venv_archive.read_bytes()})
    hashed: list[Path] = []
    real = env_cache.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(env_cache, "file_sha256", counting)
    first = resolve_environment(model, IN_MODEL, options)
    resolve_environment(model, IN_MODEL, options)
    assert len(hashed) == 1
    # the file is replaced (same bytes, new inode and times): hashed again, same environment
    data = (model / "env.tar.gz").read_bytes()
    (model / "env.tar.gz").unlink()
    (model / "env.tar.gz").write_bytes(data)
    assert resolve_environment(model, IN_MODEL, options) == first
    assert len(hashed) == 2


def test_leftovers_of_a_crash_or_a_cleanup_are_made_again(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions
) -> None:
    model = make_model(tmp_path, "redo", {"env.tar.gz": venv_archive.read_bytes()})
    env = resolve_environment(model, IN_MODEL, options)
    root = env.python.parent.parent
    # the folder was cleaned by hand, the record stayed
    shutil.rmtree(root)
    assert resolve_environment(model, IN_MODEL, options) == env
    assert env.python.exists()
    # a crash between unpacking and writing the record: a folder without a record
    root.with_suffix(".json").unlink()
    (root / "half-written").write_text("x")
    assert resolve_environment(model, IN_MODEL, options) == env
    assert not (root / "half-written").exists()


def test_worker_environ_puts_the_environment_first(
    tmp_path: Path, venv_archive: Path, options: EnvironmentOptions
) -> None:
    model = make_model(tmp_path, "vars", {"env.tar.gz": venv_archive.read_bytes()})
    env = resolve_environment(model, IN_MODEL, options)
    base = {"PATH": "/usr/bin", "PYTHONHOME": "/elsewhere", "PYTHONPATH": "/x", "KEEP": "1"}
    full = env.worker_environ(base)
    assert full["PATH"].split(os.pathsep)[0] == str(env.python.parent)
    assert full["KEEP"] == "1"
    assert "PYTHONHOME" not in full and "PYTHONPATH" not in full
