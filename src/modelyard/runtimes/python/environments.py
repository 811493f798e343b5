"""Per-model Python environments: which interpreter, and which variables, a Python model's worker
starts with.

:func:`resolve_environment` looks, in this order, for:

1. ``EXECUTION_ENV_PATH`` in the model's ``parameters`` (Triton's key). ``$$TRITON_MODEL_DIRECTORY``
   in it is the model's folder, and the path it builds must stay inside that folder (Triton's
   documented rule; links are followed before checking). A relative path is taken from the
   model's folder and obeys the same rule; an absolute path elsewhere is accepted, as Triton
   does, unless ``EnvironmentOptions.external_env_paths`` is off. It names either
   a **packed archive** (``.tar.gz``/``.tar``): a conda-pack archive (``bin/python``,
   ``lib/pythonX.Y/``, ``conda-meta/``, ``bin/conda-unpack``), or a venv-pack archive
   (``pyvenv.cfg``, whose ``home`` interpreter must exist here) — or an **unpacked
   environment folder** (Triton's advice for slow loads), used where it is, never modified.
2. An environment **embedded** by ``modelyard package``: ``<model>/environment.tar.gz`` (a
   venv-pack-style archive written by :func:`pack_environment`, with ``modelyard-env.json``
   naming its Python and platform) beside ``<model>/requirements.lock`` (the exact versions
   inside; both files must be there, so a stray ``environment.tar.gz`` is not taken for one).
   Production servers need no package index for these. If the archive's interpreter folder
   does not exist here but the server's own Python has the same minor version, the
   environment is bound to the server's interpreter; if numpy is not in it, the server's
   numpy is lent (below).
3. ``<model>/requirements.txt``: a virtualenv of the server's own interpreter is built with uv
   (or pip) from the configured index and find-links, unless ``build`` is off (production),
   which makes a missing environment a clear load error. If the requirements bring no numpy
   (which the worker needs), the server's numpy is made importable at the lowest priority: a
   ``.pth`` file adds a folder holding only links to the server's ``numpy`` and
   ``numpy.libs``, never the server's whole site-packages.
4. Otherwise the server's own interpreter (``sys.executable``).

Archives are unpacked once into ``cache_dir``, keyed by their sha256 (itself remembered per
path, size, mtime, inode and ctime, so a big archive is not re-read), shared by every model
that names the same bytes, through :mod:`modelyard.store._archive`'s safe extraction (no
``..``, no absolute names, no device files, no link or write that leaves the target; size and
member caps), into a temporary folder renamed into place, under a per-key lock that holds
across threads and processes. conda-pack's prefix rewrite is done without running its script.
The worker's interpreter is run once (``python -c``: version, numpy) and the result is
recorded with the environment: an environment that cannot work (another Python minor version
without its own interpreter, a venv whose home is missing, no numpy, a Python older than
``min_python``) is a clear :class:`~modelyard.errors.EnvironmentUnusable` at load, not a
crash at import. Resolving an environment that is already in the cache reads a few small
files and starts nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelyard.errors import ConfigError, EnvironmentUnusable
from modelyard.runtimes.python._env_build import (
    ENV_METADATA,
    base_interpreter,
    build_venv,
    find_installer,
    pack,
    requirements_key,
)
from modelyard.runtimes.python._env_cache import ArchiveHashes, EnvCache, Record
from modelyard.runtimes.python._env_probe import (
    Layout,
    TransientProbeError,
    add_server_numpy,
    compose,
    inspect_root,
    probe,
    worker_vars,
)
from modelyard.runtimes.python._env_unpack import unpack

__all__ = [
    "EMBEDDED_ARCHIVE",
    "EMBEDDED_LOCK",
    "EXECUTION_ENV_PATH",
    "REQUIREMENTS",
    "EnvironmentOptions",
    "PythonEnvironment",
    "pack_environment",
    "resolve_environment",
]

EXECUTION_ENV_PATH = "EXECUTION_ENV_PATH"
MODEL_DIRECTORY = "$$TRITON_MODEL_DIRECTORY"
EMBEDDED_ARCHIVE = "environment.tar.gz"
EMBEDDED_LOCK = "requirements.lock"
REQUIREMENTS = "requirements.txt"

GiB = 1 << 30


@dataclass(frozen=True, slots=True)
class EnvironmentOptions:
    cache_dir: Path  # unpacked archives and built envs, shared by models and restarts
    build: bool = True  # build from requirements.txt; False in production -> clear load error
    installer: str = "auto"  # "auto" (uv if available, else pip) | "uv" | "pip"
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    # an absolute EXECUTION_ENV_PATH outside the model's folder (Triton accepts it)
    external_env_paths: bool = True
    max_unpacked_bytes: int = 64 * GiB  # an archive unpacking to more is refused
    max_members: int = 2_000_000  # and one with more members
    min_python: tuple[int, int] = (3, 8)  # the oldest Python the worker runs on


@dataclass(frozen=True, slots=True)
class PythonEnvironment:
    python: Path  # interpreter that runs the worker
    env: Mapping[str, str]  # variables to set for the worker (PATH/LD_LIBRARY_PATH etc.)
    origin: str  # "server" | "archive" | "folder" | "embedded" | "requirements"
    key: str  # content hash identifying it ("" for the server's own)
    python_version: tuple[int, int]

    def worker_environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The worker's whole environment: ``base`` (``os.environ`` by default) with ``env``
        applied and ``PYTHONHOME``/``PYTHONPATH`` removed (the caller sets ``PYTHONPATH`` to
        the worker's own folder)."""
        out = dict(os.environ if base is None else base)
        for name in ("PYTHONHOME", "PYTHONPATH"):
            out.pop(name, None)
        out.update(self.env)
        return out


def resolve_environment(
    model_dir: Path, parameters: Mapping[str, str], options: EnvironmentOptions
) -> PythonEnvironment:
    """The environment a Python model's worker runs in (order in the module docstring).

    Raises :class:`~modelyard.errors.EnvironmentUnusable` (or an ``ArchiveError`` for an
    archive that is refused), whose message starts with the model's name.
    """
    model_dir = Path(model_dir)
    try:
        return _resolve(model_dir, parameters, options)
    except ConfigError as err:
        prefix = f"model '{model_dir.name}': "
        if not err.message.startswith(prefix):
            err.message = prefix + err.message
            err.args = (err.message,)
        raise


def pack_environment(
    requirements: Path, lock: Path, dest_archive: Path, options: EnvironmentOptions
) -> None:
    """For ``modelyard package``: resolve ``requirements`` into ``lock``, build them, and
    write ``dest_archive`` reproducibly (an embedded environment, module docstring)."""
    cache = EnvCache(options.cache_dir)
    with tempfile.TemporaryDirectory(dir=cache.tmp_dir(), prefix="pack-") as work:
        pack(requirements, lock, dest_archive, options, options.installer, Path(work), _uv(cache))


def server_environment() -> PythonEnvironment:
    version = sys.version_info
    return PythonEnvironment(Path(sys.executable), {}, "server", "", (version[0], version[1]))


def _resolve(
    model_dir: Path, parameters: Mapping[str, str], options: EnvironmentOptions
) -> PythonEnvironment:
    cache = EnvCache(options.cache_dir)
    raw = (parameters.get(EXECUTION_ENV_PATH) or "").strip()
    if raw:
        path = _execution_env_path(model_dir, raw, options)
        if path.is_dir():
            return _from_folder(path, cache, options)
        return _from_archive(path, "archive", f"Python environment '{path}'", cache, options)
    embedded = model_dir / EMBEDDED_ARCHIVE
    if embedded.is_file() and (model_dir / EMBEDDED_LOCK).is_file():
        what = f"embedded Python environment '{embedded}'"
        return _from_archive(embedded, "embedded", what, cache, options)
    requirements = model_dir / REQUIREMENTS
    if requirements.is_file():
        return _from_requirements(requirements, cache, options)
    return server_environment()


def _execution_env_path(model_dir: Path, raw: str, options: EnvironmentOptions) -> Path:
    """EXECUTION_ENV_PATH with ``$$TRITON_MODEL_DIRECTORY`` expanded, links followed, checked."""
    uses_model_dir = MODEL_DIRECTORY in raw
    path = Path(raw.replace(MODEL_DIRECTORY, str(model_dir), 1))  # Triton: the first one
    must_stay_inside = uses_model_dir or not path.is_absolute()
    if not path.is_absolute():
        path = model_dir / path
    real = Path(os.path.realpath(path))
    real_model = Path(os.path.realpath(model_dir))
    if must_stay_inside and not real.is_relative_to(real_model):
        raise EnvironmentUnusable(
            f"EXECUTION_ENV_PATH '{raw}' leads to '{real}', outside the model's folder "
            f"'{real_model}'; a path made from {MODEL_DIRECTORY} (or relative to it) must stay "
            "inside the model's folder"
        )
    if not (options.external_env_paths or real.is_relative_to(real_model)):
        raise EnvironmentUnusable(
            f"EXECUTION_ENV_PATH '{raw}' is outside the model's folder, and this server "
            "takes Python environments from model folders only"
        )
    if not real.exists():
        raise EnvironmentUnusable(
            f"EXECUTION_ENV_PATH '{raw}' names '{path}', which does not exist"
        )
    return real


def _from_archive(
    path: Path, origin: str, what: str, cache: EnvCache, options: EnvironmentOptions
) -> PythonEnvironment:
    key = ArchiveHashes(cache.root).sha256(path)
    record = _ready(cache, origin, key)
    if record is None:
        with cache.lock(origin, key):
            record = _ready(cache, origin, key)
            if record is None:
                record = _unpack_and_check(path, origin, key, what, cache, options)
    return _environment(record)


def _unpack_and_check(
    path: Path, origin: str, key: str, what: str, cache: EnvCache, options: EnvironmentOptions
) -> Record:
    final = _fresh(cache, origin, key)
    embedded = origin == "embedded"
    root = unpack(
        path,
        final,
        cache.tmp_dir(),
        max_bytes=options.max_unpacked_bytes,
        max_members=options.max_members,
        what=what,
        rebind_home=base_interpreter() if embedded else None,
    )
    try:
        if embedded:
            _check_platform(root, what)
        layout = inspect_root(root, what)
        return _check_and_record(layout, origin, key, what, cache, options, lend_numpy=embedded)
    except EnvironmentUnusable:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _from_folder(path: Path, cache: EnvCache, options: EnvironmentOptions) -> PythonEnvironment:
    what = f"Python environment folder '{path}'"
    layout = inspect_root(path, what)
    key = _folder_key(layout)
    record = _ready(cache, "folder", key)
    if record is None:
        with cache.lock("folder", key):
            record = _ready(cache, "folder", key)
            if record is None:
                record = _check_and_record(layout, "folder", key, what, cache, options)
    return _environment(record)


def _folder_key(layout: Layout) -> str:
    """A folder is not hashed whole: its path, its interpreter's identity and its pyvenv.cfg."""
    python = Path(os.path.realpath(layout.python))
    st = python.stat()
    cfg = layout.root / "pyvenv.cfg"
    ident = {
        "root": str(layout.root),
        "python": [str(python), st.st_size, st.st_mtime_ns, st.st_ino],
        "pyvenv": hashlib.sha256(cfg.read_bytes()).hexdigest() if cfg.is_file() else None,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _from_requirements(
    requirements: Path, cache: EnvCache, options: EnvironmentOptions
) -> PythonEnvironment:
    installer = find_installer(options.installer)
    key = requirements_key(requirements.read_bytes(), installer, options)
    record = _ready(cache, "requirements", key)
    if record is not None:
        return _environment(record)
    if not options.build:
        raise EnvironmentUnusable(
            f"the Python environment for '{requirements}' (key {key[:20]}) is not in the cache "
            f"'{cache.root}', and building environments is switched off on this server; embed "
            "it in the model with `modelyard package`, or allow building"
        )
    what = f"Python environment for '{requirements}'"
    with cache.lock("requirements", key):
        record = _ready(cache, "requirements", key)
        if record is None:
            final = _fresh(cache, "requirements", key)
            try:
                build_venv(installer, final, requirements, options, what, _uv(cache))
                layout = inspect_root(final, what)
                record = _check_and_record(
                    layout, "requirements", key, what, cache, options, lend_numpy=True
                )
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
    return _environment(record)


def _ready(cache: EnvCache, origin: str, key: str) -> Record | None:
    """The key's ready record, if its environment is still there."""
    record = cache.read(origin, key)
    if record is None or record.error is not None or os.path.exists(record.python):
        return record
    return None  # the folder went away (cleaned by hand): made again under the lock


def _fresh(cache: EnvCache, origin: str, key: str) -> Path:
    """The key's folder, emptied of what a crash (or a hand-cleaned record) left there."""
    final = cache.env_dir(origin, key)
    if final.exists() or final.is_symlink():
        shutil.rmtree(final)
    with contextlib.suppress(FileNotFoundError):
        cache.record_path(origin, key).unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    return final


def _check_and_record(
    layout: Layout,
    origin: str,
    key: str,
    what: str,
    cache: EnvCache,
    options: EnvironmentOptions,
    *,
    lend_numpy: bool = False,
) -> Record:
    """Run the interpreter once and record the outcome, an error included (not a timeout)."""
    set_vars, prepend = worker_vars(layout)
    record = Record(origin, key, str(layout.python), (0, 0), set_vars, prepend)
    env = PythonEnvironment(
        layout.python, compose(set_vars, prepend, os.environ), origin, key, (0, 0)
    )
    try:
        found = probe(layout.python, env.worker_environ(), what)
        version = (found.version[0], found.version[1])
        if (
            found.numpy is None
            and lend_numpy
            and layout.kind == "venv"
            and version == sys.version_info[:2]
        ):
            add_server_numpy(layout.root, version)
            found = probe(layout.python, env.worker_environ(), what)
        if version < options.min_python:
            raise EnvironmentUnusable(
                f"{what} runs Python {version[0]}.{version[1]}; the worker needs Python "
                f"{options.min_python[0]}.{options.min_python[1]} or newer"
            )
        if found.numpy is None:
            raise EnvironmentUnusable(
                f"{what} (Python {version[0]}.{version[1]}) cannot import numpy, which the "
                f"worker needs ({found.numpy_error}); install numpy into it"
            )
        record = Record(origin, key, str(layout.python), version, set_vars, prepend)
    except TransientProbeError:
        raise
    except EnvironmentUnusable as err:
        record = Record(origin, key, str(layout.python), (0, 0), set_vars, prepend, str(err))
    cache.write(record)
    return record


def _environment(record: Record) -> PythonEnvironment:
    if record.error is not None:
        raise EnvironmentUnusable(record.error)
    env = compose(record.set_vars, record.prepend_vars, os.environ)
    return PythonEnvironment(
        Path(record.python), env, record.origin, record.key, record.python_version
    )


def _check_platform(root: Path, what: str) -> None:
    try:
        meta = json.loads((root / ENV_METADATA).read_text())
    except (OSError, ValueError):
        return  # not written by modelyard package: the interpreter check decides
    packed_on = meta.get("platform") if isinstance(meta, dict) else None
    if packed_on and packed_on != sysconfig.get_platform():
        raise EnvironmentUnusable(
            f"{what} was packed on {packed_on} and this server runs on "
            f"{sysconfig.get_platform()}; package the model on the platform it is served on"
        )


def _uv(cache: EnvCache) -> Path:
    return cache.root / "uv"
