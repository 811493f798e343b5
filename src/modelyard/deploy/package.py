"""``modelyard package``: a model folder -> ``<model>_<version>.tar.gz`` (artifact.py's layout).

What goes in, for the model and (for an ensemble) each composing model found beside it:

* ``config.pbtxt`` and the model folder's other top-level files and folders (labels,
  ``warmup/``...), and the version folder being shipped; other version folders stay out.
  ``--version N`` names the artifact's version: folder ``N/`` when the model has one, else
  its newest version folder, shipped as ``N/`` (a monorepo keeps one folder and CI stamps
  the number). Composing models keep the version folders their steps use.
* For a Python model with a ``requirements.txt`` (and no ``EXECUTION_ENV_PATH``), its
  environment, packed by ``pack_environment`` into ``environment.tar.gz`` beside
  ``requirements.lock``, which the server then uses without any package index. The lock is
  resolved from ``requirements.lock`` in the model folder when it is there and was resolved
  from the current ``requirements.txt`` (its first line records that file's sha256), so a
  build is repeatable; otherwise from ``requirements.txt``, and the new lock is written
  back into the model folder, to be committed.
* ``tests/`` (the model's test cases, docs/deploy.md) as ``.modelyard/tests/<model>/``.

An ensemble's artifact is a bundle: the manifest lists every model version inside, and an
ensemble's entry the versions its steps run (``steps``), from which bundle.py writes each
composing model's own artifact, the same bytes this module writes for that model alone.

Left out: ``__pycache__/``, ``*.pyc``, VCS and tool folders, DVC's ``*.dvc`` pointers and
``.gitignore`` files, and what a ``.modelyardignore`` in the model folder lists (one glob a
line, matched against paths relative to the model folder and against base names). A DVC
pointer whose file is missing stops the build (``dvc pull`` first). Symbolic links are
followed (DVC may link weights from its cache).

Before anything is written, each model's config goes through the repository layer's
checks (``load_entry_config``: parse, Triton's normalisation and validation, known
backends) and its version policy must keep the shipped version: a config that would not
load is refused with the reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import modelyard
from modelyard.deploy.artifact import (
    TESTS_FOLDER,
    Manifest,
    Member,
    artifact_name,
    sha256_file,
    write_artifact,
)
from modelyard.errors import ConfigError
from modelyard.repository import (
    ENSEMBLE_PLATFORM,
    ModelConfig,
    load_entry_config,
    model_file_path,
    scan_model,
    select_versions,
)
from modelyard.runtimes.base import KNOWN_BACKENDS
from modelyard.runtimes.python.environments import (
    EMBEDDED_ARCHIVE,
    EMBEDDED_LOCK,
    EXECUTION_ENV_PATH,
    REQUIREMENTS,
    EnvironmentOptions,
    pack_environment,
)
from modelyard.store.catalog import parse_version

__all__ = ["PackageError", "PackageOptions", "PackageResult", "default_env_cache", "package"]

TESTS = "tests"
IGNORE_FILE = ".modelyardignore"
LOCK_HEADER = "# modelyard: resolved from requirements.txt sha256="
_SKIP_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".dvc", ".ipynb_checkpoints", ".pytest_cache",
     ".mypy_cache", ".ruff_cache", ".venv"}
)  # fmt: skip
NON_VERSIONS = frozenset({"warmup", "initial_state"})  # Triton never takes these as versions
_SKIP_FILES = frozenset({".gitignore", ".dvcignore", ".DS_Store", IGNORE_FILE})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".dvc")


class PackageError(ConfigError):
    """A model folder that cannot be packaged; the message says why and where."""


@dataclass(frozen=True, slots=True)
class PackageOptions:
    output: Path = Path("dist")
    version: int | None = None  # None: the newest version folder's number
    tests: bool = True  # ship tests/ inside the artifact (.modelyard/tests/)
    environments: bool = True  # pack Python environments from requirements.txt
    update_lock: bool = False  # re-resolve requirements.txt even when the lock is current
    write_lock: bool = True  # write a new lock back into the model folder
    check_only: bool = False  # validate and list, write nothing
    env: EnvironmentOptions = field(
        default_factory=lambda: EnvironmentOptions(cache_dir=default_env_cache())
    )


@dataclass(frozen=True, slots=True)
class PackageResult:
    model: str
    version: int
    artifact: Path | None  # None with check_only
    sha256: str  # "" with check_only
    size: int
    files: int
    models: list[str]  # every model folder inside (an ensemble's composing models too)
    notes: list[str]  # what a user should know (renumbered folder, lock written...)


def default_env_cache() -> Path:
    """Where environments are built: the server's default ``--python-env-dir``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modelyard" / "envs"


Log = Callable[[str], None]


def package(model_dir: Path, options: PackageOptions, log: Log | None = None) -> PackageResult:
    """Validate and write ``<output>/<model>_<version>.tar.gz`` plus its ``.sha256`` file."""
    say = log or (lambda _msg: None)
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PackageError(f"'{model_dir}' is not a model folder")
    model_dir = model_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="modelyard-package-") as work_dir:
        builder = _Builder(options, Path(work_dir), say)
        name, version = builder.add_model(model_dir, options.version, primary=True)
        members = builder.members
        files = {
            m.name: (_member_sha256(m), _member_size(m)) for m in members.values() if not m.is_dir
        }
        manifest = Manifest(
            model=name,
            version=version,
            files=files,
            models=builder.described,
            built_with=f"modelyard {modelyard.__version__}",
        )
        size = sum(s for _, s in files.values())
        if options.check_only:
            return PackageResult(
                name, version, None, "", size, len(files), builder.names, builder.notes
            )
        dest = options.output / artifact_name(name, version)
        write_artifact(members.values(), manifest, dest)
    digest = sha256_file(dest)
    sidecar = dest.with_name(dest.name + ".sha256")
    sidecar.write_text(f"{digest}  {dest.name}\n")
    return PackageResult(
        name, version, dest, digest, dest.stat().st_size, len(files), builder.names, builder.notes
    )


def _member_sha256(member: Member) -> str:
    if member.data is not None:
        return hashlib.sha256(member.data).hexdigest()
    assert member.source is not None
    return sha256_file(member.source)


def _member_size(member: Member) -> int:
    if member.data is not None:
        return len(member.data)
    assert member.source is not None
    return member.source.stat().st_size


class _Builder:
    """Collects the members of one artifact: a model, its composing models, their tests."""

    def __init__(self, options: PackageOptions, work: Path, say: Log) -> None:
        self.options = options
        self.work = work
        self.say = say
        self.members: dict[str, Member] = {}
        self.described: list[dict[str, Any]] = []
        self.names: list[str] = []
        self.notes: list[str] = []
        self._versions: dict[str, set[int]] = {}  # composing model -> versions added
        self._environments: dict[str, bool] = {}  # model -> its environment is packed
        self._stack: list[str] = []

    def add_model(self, model_dir: Path, version: int | None, *, primary: bool) -> tuple[str, int]:
        name = model_dir.name
        if name in self._stack:
            chain = " -> ".join([*self._stack, name])
            raise PackageError(f"ensemble '{self._stack[0]}' contains itself: {chain}")
        versions = _version_folders(model_dir)
        if not versions:
            raise PackageError(
                f"model folder '{model_dir}' has no version folder (1/, 2/, ...) to package"
            )
        source_version, shipped = self._pick_version(model_dir, versions, version)
        if not primary:
            shipped = source_version
        config = self._validated_config(model_dir, name, source_version, shipped)
        if shipped in self._versions.get(name, set()):
            return name, shipped
        self._versions.setdefault(name, set()).add(shipped)
        first_time = name not in self.names
        if first_time:
            self.names.append(name)
        ignore = _ignore_patterns(model_dir)
        if first_time:
            self._environments[name] = env_built = self._environment(model_dir, name, config)
            skip_top = {TESTS} | ({EMBEDDED_ARCHIVE, EMBEDDED_LOCK} if env_built else set())
            self._add_tree(model_dir, name, ignore, skip_top=skip_top, versions=versions)
            tests = model_dir / TESTS
            if self.options.tests and tests.is_dir():
                self._add_tree(tests, f"{TESTS_FOLDER}/{name}", ignore, rel_base=TESTS)
        version_dir = model_dir / str(source_version)
        self._add_tree(version_dir, f"{name}/{shipped}", ignore, rel_base=str(source_version))
        self.members.setdefault(f"{name}/{shipped}", Member(f"{name}/{shipped}"))
        entry: dict[str, Any] = {
            "name": name,
            "version": shipped,
            "backend": config.backend,
            "platform": config.platform,
            "role": "model" if primary else "composing",
            "environment": f"{name}/{EMBEDDED_ARCHIVE}" if self._environments[name] else None,
        }
        self.described.append(entry)
        if config.platform == ENSEMBLE_PLATFORM:
            self._stack.append(name)
            try:
                # the model versions its steps run, in the order they were added (bundle.py
                # rebuilds each composing ensemble's own artifact from them)
                entry["steps"] = [
                    {"name": step, "version": v} for step, v in self._add_steps(model_dir, config)
                ]
            finally:
                self._stack.pop()
        return name, shipped

    def _pick_version(
        self, model_dir: Path, versions: tuple[int, ...], version: int | None
    ) -> tuple[int, int]:
        if version is None:
            return versions[-1], versions[-1]
        if version in versions:
            return version, version
        newest = versions[-1]
        self.notes.append(
            f"{model_dir.name}: version folder {newest}/ is shipped as version {version}"
        )
        return newest, version

    def _validated_config(
        self, model_dir: Path, name: str, source_version: int, shipped: int
    ) -> ModelConfig:
        """The repository layer's checks, on a view of the model as it will be shipped."""
        view_root = self.work / "views" / f"{name}-{shipped}"
        view = view_root / name
        view.mkdir(parents=True)
        folders = {str(v) for v in _version_folders(model_dir)}
        for child in model_dir.iterdir():  # everything but the version folders, as shipped
            if child.name not in folders and child.name != TESTS:
                (view / child.name).symlink_to(child, target_is_directory=child.is_dir())
        (view / str(shipped)).symlink_to(model_dir / str(source_version), target_is_directory=True)
        where = f"model '{name}' ({model_dir})"
        try:
            entry = scan_model(view)
            config = load_entry_config(entry, known_backends=KNOWN_BACKENDS)
            if int(shipped) not in select_versions(config, list(entry.versions)):
                raise PackageError(
                    f"{where}: its version_policy does not serve version {shipped}, the one "
                    "being packaged"
                )
            if config.platform != ENSEMBLE_PLATFORM:
                model_file = model_file_path(view, shipped, config)
                if not model_file.exists():
                    raise PackageError(
                        f"{where}: version folder {source_version}/ has no "
                        f"'{model_file.name}', the file its backend loads"
                    )
        except PackageError:
            raise
        except ConfigError as err:  # name the user's files, not the view's links
            reason = str(err).replace(str(view), str(model_dir))
            raise PackageError(f"{where}: its config does not load: {reason}") from None
        finally:
            shutil.rmtree(view_root, ignore_errors=True)
        return config

    def _add_steps(self, model_dir: Path, config: ModelConfig) -> list[tuple[str, int]]:
        """Add the models an ensemble's steps run; returns them (name, version), in order."""
        repository = model_dir.parent
        added: list[tuple[str, int]] = []
        for step in config.ensemble_scheduling.step:
            step_dir = repository / step.model_name
            if not step_dir.is_dir():
                raise PackageError(
                    f"ensemble '{model_dir.name}': step model '{step.model_name}' is not in "
                    f"the repository folder '{repository}'"
                )
            pinned = int(step.model_version)
            if pinned >= 0:
                if pinned not in _version_folders(step_dir):
                    raise PackageError(
                        f"ensemble '{model_dir.name}': step model '{step.model_name}' has no "
                        f"version folder {pinned}/"
                    )
                added.append(self.add_model(step_dir, pinned, primary=False))
                continue
            step_versions = _version_folders(step_dir)
            if not step_versions:
                raise PackageError(
                    f"ensemble '{model_dir.name}': step model '{step.model_name}' has no "
                    "version folder"
                )
            newest = step_versions[-1]
            step_config = self._validated_config(step_dir, step_dir.name, newest, newest)
            for v in select_versions(step_config, list(step_versions)):
                added.append(self.add_model(step_dir, v, primary=False))
        return list(dict.fromkeys(added))

    # ---- files -------------------------------------------------------------------------

    def _add_tree(
        self,
        root: Path,
        arc_root: str,
        ignore: list[str],
        *,
        rel_base: str = "",
        skip_top: set[str] | None = None,
        versions: tuple[int, ...] = (),
    ) -> None:
        """Add ``root``'s files below ``arc_root``; ``versions`` are skipped at the top."""
        top_skip = (skip_top or set()) | {str(v) for v in versions}
        seen: set[str] = set()

        def walk(folder: Path, rel: str) -> None:
            real = os.path.realpath(folder)
            if real in seen:
                raise PackageError(f"'{folder}' links back to a folder it is in (a cycle)")
            seen.add(real)
            for child in sorted(os.scandir(folder), key=lambda e: e.name):
                child_rel = f"{rel}/{child.name}" if rel else child.name
                ignore_rel = f"{rel_base}/{child_rel}" if rel_base else child_rel
                if not rel and child.name in top_skip:
                    continue
                path = Path(child.path)
                is_dir = path.is_dir()  # follows links
                if _skipped(child.name, ignore_rel, is_dir, ignore):
                    if child.name.endswith(".dvc") and not is_dir:
                        _check_dvc_output(path)
                    continue
                if is_dir:
                    self.members[f"{arc_root}/{child_rel}"] = Member(f"{arc_root}/{child_rel}")
                    walk(path, child_rel)
                elif path.is_file():
                    executable = bool(path.stat().st_mode & 0o100)
                    name = f"{arc_root}/{child_rel}"
                    self.members[name] = Member(name, source=path, executable=executable)
                elif not path.exists():
                    raise PackageError(f"'{path}' is a broken symbolic link")
            seen.discard(real)

        walk(root, "")

    # ---- Python environments -----------------------------------------------------------

    def _environment(self, model_dir: Path, name: str, config: ModelConfig) -> bool:
        """Pack the model's environment into the artifact; True when one was packed."""
        requirements = model_dir / REQUIREMENTS
        if config.backend != "python" or not requirements.is_file():
            return False
        if EXECUTION_ENV_PATH in config.parameters:
            self.notes.append(f"{name}: EXECUTION_ENV_PATH is set; requirements.txt not packed")
            return False
        if not self.options.environments:
            self.notes.append(f"{name}: environment not packed (--no-env)")
            return False
        if self.options.check_only:
            return True
        requirements_hash = sha256_file(requirements)
        source_lock = model_dir / EMBEDDED_LOCK
        header = f"{LOCK_HEADER}{requirements_hash}\n"
        current = (
            source_lock.is_file()
            and source_lock.read_text(errors="replace").startswith(header)
            and not self.options.update_lock
        )
        out = self.work / "envs" / name
        out.mkdir(parents=True)
        resolve_from = source_lock if current else requirements
        self.say(
            f"{name}: packing its Python environment from {resolve_from.name}"
            + ("" if current else " (resolving)")
        )
        pack_environment(resolve_from, out / "lock", out / EMBEDDED_ARCHIVE, self.options.env)
        # the resolver drops comments: the lock records again what it was resolved from
        (out / EMBEDDED_LOCK).write_text(header + (out / "lock").read_text())
        if not current and self.options.write_lock:
            shutil.copyfile(out / EMBEDDED_LOCK, source_lock)
            self.notes.append(f"{name}: wrote {source_lock} (commit it: builds repeat from it)")
        self.members[f"{name}/{EMBEDDED_ARCHIVE}"] = Member(
            f"{name}/{EMBEDDED_ARCHIVE}", source=out / EMBEDDED_ARCHIVE
        )
        self.members[f"{name}/{EMBEDDED_LOCK}"] = Member(
            f"{name}/{EMBEDDED_LOCK}", source=out / EMBEDDED_LOCK
        )
        return True


def _version_folders(model_dir: Path) -> tuple[int, ...]:
    """Version folders as Triton takes them (``0``, ``3``; not ``03``, ``tests``), ascending."""
    return tuple(
        sorted(
            int(p.name)
            for p in model_dir.iterdir()
            if p.is_dir() and parse_version(p.name) is not None and p.name not in NON_VERSIONS
        )
    )


def _ignore_patterns(model_dir: Path) -> list[str]:
    path = model_dir / IGNORE_FILE
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _skipped(name: str, rel: str, is_dir: bool, patterns: list[str]) -> bool:
    if is_dir and name in _SKIP_DIRS:
        return True
    if not is_dir and (name in _SKIP_FILES or name.endswith(_SKIP_SUFFIXES)):
        return True
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pat = pattern.rstrip("/").lstrip("/")
        if dir_only and not is_dir:
            continue
        if fnmatch.fnmatchcase(rel, pat) or ("/" not in pat and fnmatch.fnmatchcase(name, pat)):
            return True
    return False


def _check_dvc_output(pointer: Path) -> None:
    """A DVC pointer (``model.onnx.dvc``) whose file is not there: weights never pulled."""
    target = pointer.with_name(pointer.name.removesuffix(".dvc"))
    if not target.exists():
        raise PackageError(
            f"'{target}' is tracked by DVC ('{pointer.name}') but is not there: run `dvc pull` "
            "before packaging"
        )
