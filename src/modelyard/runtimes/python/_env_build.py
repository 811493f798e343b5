"""Building virtualenvs from ``requirements.txt`` with uv (or pip), and packing them.

A built environment is a venv of the server's own base interpreter, so compiled packages match
the server's Python; its key (:func:`requirements_key`) hashes the requirements file's bytes,
the interpreter (path and full version), the platform and libc, the installer, and the index
options, so two models with the same requirements share one environment, across restarts.
Only ``requirements.txt`` itself is hashed: files it includes (``-r``, ``-c``) or wheels a
find-links folder gains later do not change the key.

:func:`pack` is what ``modelyard package`` embeds into an artifact: requirements resolved to a
lock file (``uv pip compile --generate-hashes``, or ``pip freeze``), installed into a fresh
venv, and written as a reproducible ``.tar.gz`` (sorted members, fixed times and owners, no
``.pyc``, no interpreter links, gzip header without name or time): the same lock on the same
platform gives the same bytes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelyard.errors import EnvironmentUnusable
from modelyard.runtimes import children

__all__ = [
    "ENV_METADATA",
    "IndexOptions",
    "Installer",
    "base_interpreter",
    "build_venv",
    "find_installer",
    "pack",
    "requirements_key",
]

BUILD_TIMEOUT_S = 1800.0
ENV_METADATA = "modelyard-env.json"
_KEY_FORMAT = 1
# 1980-01-01: the earliest time zip (wheels) can hold, for tools that repack what they find
_DEFAULT_EPOCH = 315532800
_SKIP_DIRS = {"__pycache__", "modelyard-numpy"}
# uv's own bookkeeping (uv_cache.json holds a cache timestamp), and what serving adds
_SKIP_FILES = {"zz_modelyard_numpy.pth", "CACHEDIR.TAG", ".gitignore", ".lock", "uv_cache.json"}
# interpreter links are re-made where the archive is unpacked; activation scripts are not used
# by workers and name the build folder
_SKIP_BIN = ("python", "activate", "deactivate", "pydoc")


class IndexOptions(Protocol):
    """The index settings of ``EnvironmentOptions`` this module reads."""

    @property
    def index_url(self) -> str | None: ...
    @property
    def extra_index_urls(self) -> tuple[str, ...]: ...
    @property
    def find_links(self) -> tuple[str, ...]: ...
    @property
    def no_index(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Installer:
    name: str  # "uv" | "pip"
    command: tuple[str, ...]


@functools.lru_cache(maxsize=4)
def find_installer(choice: str) -> Installer:
    """uv when available (``auto``, ``uv``), else pip; a clear error when neither can run."""
    if choice not in ("auto", "uv", "pip"):
        raise EnvironmentUnusable(
            f"unknown Python environment installer '{choice}': use auto, uv or pip"
        )
    if choice in ("auto", "uv"):
        uv = _uv_binary()
        if uv is not None:
            return Installer("uv", (uv,))
        if choice == "uv":
            raise EnvironmentUnusable(
                "the installer 'uv' was asked for and is not installed: pip install uv"
            )
    if importlib.util.find_spec("pip") is None:
        raise EnvironmentUnusable(
            "no installer to build Python environments with: neither uv nor pip is installed"
        )
    return Installer("pip", (sys.executable, "-m", "pip"))


def _uv_binary() -> str | None:
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def base_interpreter() -> Path:
    """The interpreter the server's own Python is made from (outside any venv)."""
    return Path(getattr(sys, "_base_executable", "") or sys.executable)


@functools.lru_cache(maxsize=1)
def _machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "interpreter": os.path.realpath(base_interpreter()),
        "platform": sysconfig.get_platform(),
        "libc": list(platform.libc_ver()),
    }


def requirements_key(requirements: bytes, installer: Installer, options: IndexOptions) -> str:
    ident = {
        "format": _KEY_FORMAT,
        "requirements": hashlib.sha256(requirements).hexdigest(),
        "machine": _machine(),
        "installer": installer.name,
        "index_url": options.index_url,
        "extra_index_urls": list(options.extra_index_urls),
        "find_links": list(options.find_links),
        "no_index": options.no_index,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _index_args(options: IndexOptions) -> list[str]:
    args: list[str] = []
    if options.index_url:
        args += ["--index-url", options.index_url]
    for url in options.extra_index_urls:
        args += ["--extra-index-url", url]
    for link in options.find_links:
        args += ["--find-links", link]
    if options.no_index:
        args.append("--no-index")
    return args


def _run(command: Sequence[str], what: str, step: str, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        # through modelyard.runtimes.children: pip and its own subprocesses die with the
        # server (and with a timed-out build), never left running on their own
        done = children.run(list(command), env=env, cwd=cwd, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EnvironmentUnusable(f"{what}: {step} failed: {err}") from err
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()[-15:]
        raise EnvironmentUnusable(
            f"{what}: {step} failed (exit status {done.returncode}): " + "\n".join(lines)
        )
    return done.stdout.decode(errors="replace")


def create_venv(
    installer: Installer, folder: Path, what: str, cache: Path, *, relocatable: bool = False
) -> Path:
    """An empty venv of the server's base interpreter; returns its interpreter."""
    base = str(base_interpreter())
    if installer.name == "uv":
        command = [*installer.command, "venv", str(folder), "--python", base, "--quiet"]
        command += ["--no-project", "--cache-dir", str(cache)]
        if relocatable:
            command.append("--relocatable")
    else:
        command = [base, "-m", "venv", "--without-pip", str(folder)]
    _run(command, what, "creating a virtualenv")
    return folder / "bin" / "python"


def install(
    installer: Installer,
    python: Path,
    requirements: Path,
    options: IndexOptions,
    what: str,
    cache: Path,
) -> None:
    """Install ``requirements`` into the venv of ``python``; run from the file's folder, so
    relative paths in it (``./wheels/x.whl``, ``-r base.txt``) mean what they say."""
    if installer.name == "uv":
        command = [*installer.command, "pip", "install", "--python", str(python), "--quiet"]
        command += ["--cache-dir", str(cache)]
    else:
        command = [*installer.command, "--python", str(python), "install", "--quiet"]
        command += ["--disable-pip-version-check", "--no-input"]
    command += ["-r", str(requirements.resolve()), *_index_args(options)]
    _run(command, what, f"{installer.name} installing {requirements.name}", requirements.parent)


def build_venv(
    installer: Installer,
    folder: Path,
    requirements: Path,
    options: IndexOptions,
    what: str,
    cache: Path,
) -> Path:
    """A venv at ``folder`` (built in place: its scripts name their real location)."""
    python = create_venv(installer, folder, what, cache)
    install(installer, python, requirements, options, what, cache)
    return python


def compile_lock(
    installer: Installer,
    python: Path,
    requirements: Path,
    options: IndexOptions,
    what: str,
    cache: Path,
) -> str:
    """The exact versions ``requirements`` resolve to here (with hashes when uv resolves)."""
    if installer.name == "uv":
        command = [*installer.command, "pip", "compile", str(requirements.resolve())]
        command += ["--python", str(python), "--no-header", "--no-annotate", "--quiet"]
        command += ["--generate-hashes", "--cache-dir", str(cache), *_index_args(options)]
        return _run(command, what, "uv resolving the requirements", requirements.parent)
    install(installer, python, requirements, options, what, cache)
    frozen = _run(
        [*installer.command, "--python", str(python), "freeze", "--disable-pip-version-check"],
        what,
        "pip freezing the environment",
    )
    return "".join(sorted(line + "\n" for line in frozen.splitlines() if line.strip()))


def pack(
    requirements: Path,
    lock: Path,
    dest_archive: Path,
    options: IndexOptions,
    installer_choice: str,
    work: Path,
    cache: Path,
) -> None:
    """Resolve, build, and write a reproducible archive and its lock file (see module doc)."""
    what = f"packing the environment of '{requirements}'"
    installer = find_installer(installer_choice)
    folder = work / "env"
    python = create_venv(installer, folder, what, cache, relocatable=True)
    locked = compile_lock(installer, python, requirements, options, what, cache)
    lock_tmp = work / "requirements.lock"
    lock_tmp.write_text(locked)
    if installer.name == "uv":
        install(installer, python, lock_tmp, options, what, cache)
    version = sys.version_info
    (folder / ENV_METADATA).write_text(
        json.dumps(
            {
                "format": 1,
                "python": [version[0], version[1]],
                "implementation": sys.implementation.name,
                "platform": sysconfig.get_platform(),
                "installer": installer.name,
            },
            sort_keys=True,
        )
        + "\n"
    )
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", _DEFAULT_EPOCH))
    archive_tmp = work / "environment.tar.gz"
    write_reproducible_tar(folder, archive_tmp, epoch)
    _publish(lock_tmp, lock)
    _publish(archive_tmp, dest_archive)


def _publish(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` atomically (a reader never sees half a file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def _skipped(rel: str, is_dir: bool) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if is_dir:
        return name in _SKIP_DIRS
    if name in _SKIP_FILES or name.endswith(".pyc"):
        return True
    return rel.startswith("bin/") and (
        name.startswith(_SKIP_BIN) or name.endswith((".bat", ".ps1"))
    )


def write_reproducible_tar(root: Path, dest: Path, epoch: int) -> None:
    """``root``'s content as a .tar.gz whose bytes depend only on that content."""
    members: list[tuple[str, Path]] = []
    for current, dirs, files in os.walk(root):
        rel_dir = Path(current).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        keep_dirs = []
        for name in sorted(dirs):
            full = Path(current) / name
            if _skipped(prefix + name, is_dir=not full.is_symlink()):
                continue
            members.append((prefix + name, full))
            if not full.is_symlink():
                keep_dirs.append(name)
        dirs[:] = keep_dirs
        members.extend(
            (prefix + name, Path(current) / name)
            for name in sorted(files)
            if not _skipped(prefix + name, is_dir=False)
        )
    members.sort(key=lambda member: member[0])
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel, path in members:
            info = tar.gettarinfo(str(path), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = epoch
            if info.isreg():
                info.mode = 0o755 if info.mode & stat.S_IXUSR else 0o644
                data = _script_fixed(path, rel, root)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.mode = 0o755 if info.isdir() else 0o777
                tar.addfile(info)


def _script_fixed(path: Path, rel: str, root: Path) -> bytes:
    """A file's bytes; a ``bin/`` script whose shebang names the build folder gets
    ``#!/usr/bin/env python`` instead, as venv-pack does."""
    data = path.read_bytes()
    if rel.startswith("bin/") and data.startswith(b"#!"):
        first, sep, rest = data.partition(b"\n")
        if str(root).encode() in first:
            return b"#!/usr/bin/env python" + sep + rest
    return data
