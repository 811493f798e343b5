"""An ensemble's artifact is a bundle: split it into one artifact per composing model.

``modelyard package`` of an ensemble writes the ensemble's folder and every model its steps
run (the versions they run) into one artifact, ``<ensemble>_<version>.tar.gz``: the file
that is tested, and whose sha256 CI records. A store serves each model from its own
artifact (docs/model-store.md), so ``push``, ``promote`` and ``modelyard test`` split the
bundle: :func:`split_bundle` writes ``<step>_<version>.tar.gz`` for every composing model
version, with its own manifest, exactly as ``modelyard package <step> --version <version>``
writes it from the same folder with the same options (same members, same manifest, same
member times): the same bytes, so a step pushed on its own and through its ensemble is one
artifact, and pushing both is a no-op the second time.

A composing ensemble (an ensemble step of an ensemble) is split into a bundle of its own
(itself and the models its steps run). :attr:`Bundle.parts` come leaves first: each model
is published before any ensemble that runs it, and the bundle's own model last.

The manifest's ``models`` say which model versions are inside; an ensemble's entry lists the
versions its steps run (``steps``), in the order ``package`` added them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.deploy.artifact import (
    TESTS_FOLDER,
    ArtifactError,
    Manifest,
    Member,
    artifact_name,
    sha256_file,
    unpack_artifact,
    write_artifact,
)
from modelyard.repository import ENSEMBLE_PLATFORM
from modelyard.store.catalog import parse_version

__all__ = ["BundlePart", "composing_models", "split_bundle"]

ModelVersion = tuple[str, int]


@dataclass(frozen=True, slots=True)
class BundlePart:
    """One composing model version of a bundle, written as its own artifact."""

    model: str
    version: int
    path: Path  # <dest>/<model>_<version>.tar.gz
    sha256: str
    used_by: str  # the ensemble whose step runs it (the first one, in package order)

    @property
    def key(self) -> str:
        return artifact_name(self.model, self.version)


def composing_models(manifest: Manifest) -> list[ModelVersion]:
    """The composing model versions an artifact carries, in package order (none: not a bundle)."""
    return [key for key, entry in _entries(manifest).items() if entry.get("role") == "composing"]


def _entries(manifest: Manifest) -> dict[ModelVersion, dict[str, Any]]:
    where = f"{artifact_name(manifest.model, manifest.version)}: its manifest"
    out: dict[ModelVersion, dict[str, Any]] = {}
    for entry in manifest.models:
        try:
            key = (str(entry["name"]), int(entry["version"]))
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{where} has a model entry without a name or version") from None
        if key in out:
            raise ArtifactError(f"{where} lists '{key[0]}' version {key[1]} twice")
        out[key] = entry
    return out


def _steps(entry: dict[str, Any], where: str) -> list[ModelVersion]:
    raw = entry.get("steps")
    if not isinstance(raw, list):
        raise ArtifactError(
            f"{where}: ensemble '{entry.get('name')}' does not list the versions its steps run "
            "(it was packaged by an earlier modelyard): package it again"
        )
    try:
        return [(str(s["name"]), int(s["version"])) for s in raw]
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{where}: ensemble '{entry.get('name')}' has a bad step") from None


def split_bundle(bundle: Path, manifest: Manifest, dest: Path) -> list[BundlePart]:
    """Write one artifact per composing model version of ``bundle`` into ``dest``.

    ``manifest`` is the bundle's, from ``verify_artifact`` (call that first: the members are
    taken as they are). Returns the parts leaves first (publishing order); nothing for an
    artifact that carries no composing model (nothing is unpacked then).
    """
    entries = _entries(manifest)
    if not composing_models(manifest):
        return []
    where = f"'{bundle.name}'"
    root = (manifest.model, manifest.version)
    if root not in entries:
        raise ArtifactError(f"{where}: its manifest does not describe its own model")
    graph: dict[ModelVersion, list[ModelVersion]] = {}
    for key, entry in entries.items():
        graph[key] = _steps(entry, where) if entry.get("platform") == ENSEMBLE_PLATFORM else []
        for step in graph[key]:
            if step not in entries:
                raise ArtifactError(
                    f"{where}: ensemble '{key[0]}' runs '{step[0]}' version {step[1]}, which "
                    "the artifact does not hold"
                )
            if step[0] == manifest.model:
                raise ArtifactError(f"{where}: ensemble '{manifest.model}' contains itself")
    order = _post_order(graph, root)  # leaves first, the root last
    unreachable = sorted(set(entries) - set(order))
    if unreachable:
        raise ArtifactError(
            f"{where}: it holds '{unreachable[0][0]}' version {unreachable[0][1]}, which no "
            "step runs"
        )
    used_by: dict[ModelVersion, str] = {}  # the first ensemble, in package order, to run it
    for key in _pre_order(graph, root):
        for step in graph[key]:
            used_by.setdefault(step, key[0])
    members, epoch = unpack_artifact(bundle, dest / ".bundle")
    parts = []
    for key in order[:-1]:
        closure = _pre_order(graph, key)  # the order package adds them: the manifest's order
        described = [{**entries[k], "role": "model" if k == key else "composing"} for k in closure]
        chosen = _members_of(members, closure)
        part_manifest = Manifest(
            model=key[0],
            version=key[1],
            files={n: manifest.files[n] for n, m in chosen.items() if not m.is_dir},
            models=described,
            built_with=manifest.built_with,
        )
        path = dest / artifact_name(*key)
        write_artifact(chosen.values(), part_manifest, path, epoch=epoch)
        parts.append(BundlePart(key[0], key[1], path, sha256_file(path), used_by[key]))
    return parts


def _post_order(
    graph: dict[ModelVersion, list[ModelVersion]], root: ModelVersion
) -> list[ModelVersion]:
    """Depth first, each model after the steps it runs (leaves first, the root last)."""
    return _walk(graph, root, steps_first=True)


def _pre_order(
    graph: dict[ModelVersion, list[ModelVersion]], root: ModelVersion
) -> list[ModelVersion]:
    """Depth first, each model before the steps it runs (the root first)."""
    return _walk(graph, root, steps_first=False)


def _walk(
    graph: dict[ModelVersion, list[ModelVersion]], root: ModelVersion, steps_first: bool
) -> list[ModelVersion]:
    seen: set[ModelVersion] = set()
    out: list[ModelVersion] = []

    def visit(node: ModelVersion) -> None:
        if node in seen:
            return
        seen.add(node)
        if not steps_first:
            out.append(node)
        for step in graph[node]:
            visit(step)
        if steps_first:
            out.append(node)

    visit(root)
    return out


def _members_of(members: dict[str, Member], closure: list[ModelVersion]) -> dict[str, Member]:
    """The members of the models in ``closure``: their folders with only the versions in it,
    and their test cases."""
    versions: dict[str, set[int]] = {}
    for name, version in closure:
        versions.setdefault(name, set()).add(version)
    tests = TESTS_FOLDER.split("/")
    return {name: m for name, m in members.items() if _keeps(name.split("/"), versions, tests)}


def _keeps(parts: list[str], versions: dict[str, set[int]], tests: list[str]) -> bool:
    if parts[: len(tests)] == tests:
        return len(parts) > len(tests) and parts[len(tests)] in versions
    if parts[0] not in versions:
        return False
    if len(parts) == 1:
        return True
    version = parse_version(parts[1])  # package ships only version folders as numbers
    return version is None or version in versions[parts[0]]
