"""Which models and versions a store holds: the identity rules of docs/model-store.md.

From a flat listing (:func:`catalog`):

* ``<model>/<version>/…`` is version ``<version>`` of ``<model>`` in Triton's folder layout;
  a version folder is a decimal number without leading zeros, as in Triton.
* Every other file under ``<model>/`` (``config.pbtxt``, ``labels.txt``, ``warmup/…``, a
  folder Triton would skip like ``01/``) is shared by the folder's versions and copied as-is,
  so the materialized folder behaves exactly as it would under Triton.
* ``<model>_<version>.tar.gz`` at the root is version ``<version>`` of ``<model>``, split on
  the *last* underscore (``screen_detection_pipeline_3.tar.gz`` is
  ``screen_detection_pipeline`` version 3). A ``.tar.gz`` whose name does not parse is
  skipped with a warning; other files at the root are ignored, as Triton ignores them.
* When a model has both a folder and artifacts, its versions merge; where both hold the same
  version, **the artifact wins** (it is the packaged, immutable form) and a warning says so.
* The newest version's source governs: its ``config.pbtxt`` and other top-level files are the
  model's (an artifact's own, or the folder's shared files).

Keys that could lead outside a folder once on disk (``..``, empty parts) are skipped with a
warning, and S3 folder markers (keys ending in ``/``) never reach here. The top-level folder
``.modelyard/`` is the deploy loop's bookkeeping (retired versions, docs/deploy.md), never
a model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal

from modelyard.store.base import RESERVED_FOLDER, StoreObject, is_safe_key

__all__ = ["ARTIFACT_SUFFIX", "StoreModel", "VersionSource", "catalog", "parse_artifact_name"]

logger = logging.getLogger(__name__)

ARTIFACT_SUFFIX = ".tar.gz"
_VERSION_NAME = re.compile(r"0|[1-9][0-9]*")
_INT64_MAX = 2**63 - 1  # Triton's versions are int64


def parse_version(name: str) -> int | None:
    """A version folder's number, or None where Triton would not take the name as one."""
    if _VERSION_NAME.fullmatch(name) and int(name) <= _INT64_MAX:
        return int(name)
    return None


def parse_artifact_name(key: str) -> tuple[str, int] | None:
    """``("screen_detection_pipeline", 3)`` for ``screen_detection_pipeline_3.tar.gz``."""
    if "/" in key or not key.endswith(ARTIFACT_SUFFIX):
        return None
    name, sep, version = key.removesuffix(ARTIFACT_SUFFIX).rpartition("_")
    number = parse_version(version)
    if not sep or not name or number is None:
        return None
    return name, number


@dataclass(frozen=True, slots=True)
class VersionSource:
    """Where one version's bytes are: one artifact, or the files of a version folder."""

    version: int
    artifact: StoreObject | None = None  # the <model>_<version>.tar.gz, or
    files: tuple[StoreObject, ...] = ()  # the files under <model>/<version>/, keys sorted

    @property
    def kind(self) -> Literal["artifact", "folder"]:
        return "artifact" if self.artifact is not None else "folder"


@dataclass(frozen=True, slots=True)
class StoreModel:
    """One model of a store and everything needed to materialize it."""

    name: str
    versions: dict[int, VersionSource] = field(default_factory=dict)  # ascending
    # files of <model>/ outside its version folders (config.pbtxt, labels...), keys sorted;
    # empty when the model has no folder in the store
    shared: tuple[StoreObject, ...] = ()
    has_folder: bool = False

    @property
    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None

    @property
    def governing(self) -> VersionSource | None:
        """The newest version's source, whose config.pbtxt governs (None: folder only)."""
        latest = self.latest
        return None if latest is None else self.versions[latest]

    @property
    def size(self) -> int:
        """Bytes in the store (archives compressed): a first guess at what loading costs."""
        total = sum(o.size for o in self.shared)
        for source in self.versions.values():
            total += source.artifact.size if source.artifact else sum(f.size for f in source.files)
        return total


@dataclass(slots=True)
class _Builder:
    folder_versions: dict[int, list[StoreObject]] = field(default_factory=dict)
    artifacts: dict[int, StoreObject] = field(default_factory=dict)
    shared: list[StoreObject] = field(default_factory=list)
    has_folder: bool = False


def catalog(objects: list[StoreObject]) -> dict[str, StoreModel]:
    """Every model in a listing, keyed and ordered by name (byte order, like Triton)."""
    builders: dict[str, _Builder] = {}
    for obj in objects:
        if not is_safe_key(obj.key):
            logger.warning("ignoring store object '%s': its key is not a plain path", obj.key)
            continue
        parts = obj.key.split("/")
        if parts[0] == RESERVED_FOLDER:
            continue  # retired versions and other bookkeeping of the deploy loop
        if len(parts) == 1:
            if not obj.key.endswith(ARTIFACT_SUFFIX):
                continue  # Triton ignores files at the repository's root
            parsed = parse_artifact_name(obj.key)
            if parsed is None:
                logger.warning(
                    "ignoring artifact '%s': expected <model>_<version>%s with a numeric version",
                    obj.key,
                    ARTIFACT_SUFFIX,
                )
                continue
            name, version = parsed
            builders.setdefault(name, _Builder()).artifacts[version] = obj
            continue
        builder = builders.setdefault(parts[0], _Builder())
        builder.has_folder = True
        folder_version = parse_version(parts[1]) if len(parts) > 2 else None
        if folder_version is None:
            builder.shared.append(obj)
        else:
            builder.folder_versions.setdefault(folder_version, []).append(obj)
    return {
        name: _build(name, builders[name]) for name in sorted(builders, key=lambda n: n.encode())
    }


def _build(name: str, builder: _Builder) -> StoreModel:
    versions = {
        v: VersionSource(v, files=tuple(sorted(files, key=lambda o: o.key)))
        for v, files in builder.folder_versions.items()
    }
    for v, obj in builder.artifacts.items():
        if v in versions:
            logger.warning(
                "model '%s' version %d is both a folder and the artifact '%s'; serving the artifact",
                name,
                v,
                obj.key,
            )
        versions[v] = VersionSource(v, artifact=obj)
    return StoreModel(
        name=name,
        versions=dict(sorted(versions.items())),
        shared=tuple(sorted(builder.shared, key=lambda o: o.key)),
        has_folder=builder.has_folder,
    )
