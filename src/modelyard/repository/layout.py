"""Where models and versions are in a Triton repository, found the way Triton finds them.

* Every immediate subdirectory of the root is a model, hidden ones included (Triton loads
  ``.hidden/`` and tries ``.ipynb_checkpoints/``); files at the root are ignored; symlinks to
  directories count, as Triton follows them.
* A model folder may lack ``config.pbtxt``; Triton then autofills, and so do we
  (``ModelEntry.config_path`` is None and the runtime has to complete the config).
* Version folders are named by a decimal number without leading zeros (``0`` is valid,
  ``01`` is ignored), and ``warmup``/``initial_state`` are never versions. Triton's ``stoll``
  also takes ``3x`` as version 3 and then fails to load ``3/``; we ignore such names instead.
* ``version_policy`` picks among them: ``latest`` (newest N, default 1), ``all``, ``specific``.

The scan is a pure read of the folder, returning a fresh, ordered snapshot each call; the
manager decides when to rescan.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository._common import (
    BACKEND_DEFAULT_FILENAME,
    CONFIG_FILENAME,
    ENSEMBLE_PLATFORM,
    NON_VERSION_FOLDERS,
    PLATFORM_DEFAULT_FILENAME,
    ModelConfigError,
)
from modelyard.repository._versions import no_version_reason, select_versions
from modelyard.repository.config import load_config, normalize_config, validate_config

__all__ = [
    "ModelEntry",
    "default_model_filename",
    "list_versions",
    "load_entry_config",
    "model_file_path",
    "scan_model",
    "scan_repository",
    "select_versions",
    "versions_to_load",
]

logger = logging.getLogger(__name__)

_VERSION_NAME = re.compile(r"0|[1-9][0-9]*")
_INT64_MAX = 2**63 - 1  # Triton's versions are int64


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model folder: its name (the folder's), where it is, and its version folders."""

    name: str
    path: Path
    config_path: Path | None  # None: no config.pbtxt, the runtime must autocomplete
    versions: tuple[int, ...]  # every valid version folder, ascending, before any policy
    # served under ``name`` whatever the folder and its config call it (Triton's model
    # mapping, as SageMaker's POST /models uses it): the config takes ``name``
    mapped: bool = False
    # ensemble steps as written -> the names they are served under (a SageMaker model's
    # steps, scoped to it as Triton's model namespacing scopes them to their repository)
    aliases: tuple[tuple[str, str], ...] = ()


def scan_repository(root: Path) -> dict[str, ModelEntry]:
    """Every model folder under ``root``, keyed and ordered by name (byte order, like Triton)."""
    if not root.is_dir():
        raise ModelConfigError(f"model repository '{root}' is not a directory")
    entries = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name.encode())
    return {path.name: scan_model(path) for path in entries}


def scan_model(
    model_dir: Path, name: str | None = None, aliases: tuple[tuple[str, str], ...] = ()
) -> ModelEntry:
    """The entry for one model folder, named as the folder is, or ``name`` (mapped)."""
    config_path = model_dir / CONFIG_FILENAME
    return ModelEntry(
        name=name or model_dir.name,
        path=model_dir,
        config_path=config_path if config_path.is_file() else None,
        versions=list_versions(model_dir),
        mapped=name is not None,
        aliases=aliases,
    )


def list_versions(model_dir: Path) -> tuple[int, ...]:
    """The version folders Triton accepts, ascending; others are logged and skipped."""
    versions: list[int] = []
    for child in model_dir.iterdir():
        if not child.is_dir() or child.name in NON_VERSION_FOLDERS:
            continue
        if _VERSION_NAME.fullmatch(child.name) and int(child.name) <= _INT64_MAX:
            versions.append(int(child.name))
        elif len(child.name) > 1 and child.name[0] == "0":
            logger.warning(
                "ignore version directory '%s' which contains leading zeros in its directory name",
                child.name,
            )
        else:
            logger.warning(
                "ignore version directory '%s' which fails to convert to integral number",
                child.name,
            )
    return tuple(sorted(versions))


def versions_to_load(entry: ModelEntry, config: mc.ModelConfig) -> list[int]:
    """:func:`select_versions` on the entry's folders; none left is Triton's load error."""
    versions = select_versions(config, entry.versions)
    if not versions:
        raise ModelConfigError(no_version_reason(entry.name), entry.config_path)
    return versions


def default_model_filename(config: mc.ModelConfig) -> str:
    """The file a backend loads from a version folder when the config does not name one."""
    if config.default_model_filename:
        return str(config.default_model_filename)
    if config.backend in BACKEND_DEFAULT_FILENAME:
        return BACKEND_DEFAULT_FILENAME[config.backend]
    if config.platform in PLATFORM_DEFAULT_FILENAME:
        return PLATFORM_DEFAULT_FILENAME[config.platform]
    if config.backend:
        return f"model.{config.backend}"  # Triton's convention for custom backends
    raise ModelConfigError(f"cannot tell the model file of '{config.name}': no backend or platform")


def model_file_path(model_dir: Path, version: int, config: mc.ModelConfig) -> Path:
    """``<model_dir>/<version>/<default_model_filename or the backend's default>``.

    Refuses a file name that leads out of the version folder (``../x``, an absolute path):
    Triton passes it through to the backend, but a served repository must not reach outside.
    An ensemble has no model file: its path is the version folder itself.
    """
    version_dir = model_dir / str(version)
    if config.platform == ENSEMBLE_PLATFORM:
        return version_dir
    path = version_dir / default_model_filename(config)
    if not path.resolve().is_relative_to(version_dir.resolve()):
        raise ModelConfigError(
            f"default_model_filename '{config.default_model_filename}' of model "
            f"'{config.name}' leads outside its version directory"
        )
    return path


def load_entry_config(
    entry: ModelEntry,
    *,
    known_backends: Collection[str] | None = None,
    gpus: Sequence[int] = (),
) -> mc.ModelConfig:
    """Parse, normalize and validate an entry's config, in Triton's order.

    Without a config.pbtxt we start, as Triton's autofill does, from an empty config that
    takes its name from the folder and its backend from the first version folder's files;
    its inputs and outputs stay empty for the runtime to complete. Also checks that the
    version policy leaves at least one version.
    """
    config = load_config(entry.config_path) if entry.config_path else mc.ModelConfig()
    normalize_config(config, model_dir=entry.path, gpus=gpus)
    try:
        validate_config(
            config,
            folder_name=entry.name,
            config_path=entry.config_path,
            known_backends=known_backends,
            gpus=gpus,
            versions=entry.versions,
        )
    except ModelConfigError as err:
        if err.path is None:  # no config.pbtxt: name the model folder instead
            raise ModelConfigError(err.reason, entry.path) from None
        raise
    return config
