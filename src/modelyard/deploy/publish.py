"""``push``, ``promote``, ``rollback`` and ``ls``: artifacts in stores, immutable and checked.

The store layout (docs/deploy.md)::

    <model>_<version>.tar.gz              a live version: servers serve it
    <model>_<version>.tar.gz.sha256       its sha256, in ``sha256sum`` form (servers ignore it)
    .modelyard/retired/<model>_<version>.tar.gz[.sha256]   a retired version (never served)
    .modelyard/retired/<model>_<version>.tar.gz.json       when and why it was retired

Rules:

* **Immutable versions.** Publishing is atomic and exclusive (``WritableStore.publish``):
  a server never sees half an artifact, and a key is never overwritten. Pushing the same
  bytes again is a no-op; different bytes under an existing (or retired) version are
  refused: a changed model needs a new version number.
* **Checked bytes.** The artifact's own manifest is verified before anything is sent; the
  sha256 a caller expects (``--sha256``: the one ``modelyard test`` passed) must be the
  file's; ``promote`` downloads the artifact, checks it against the source store's
  ``.sha256`` record (and the expected sha256), and publishes those very bytes.
* **Nothing is deleted.** ``rollback`` makes a version the newest live one by moving the
  newer ones to ``.modelyard/retired/`` (and moving a retired target back); servers see
  the newest live version disappear on their next listing and switch to the one now
  newest, the old one serving until the new one is ready.
* **Ensembles: every model its own artifact.** An ensemble's artifact is a bundle
  (bundle.py): ``push`` and ``promote`` publish each composing model version as its own
  ``<step>_<version>.tar.gz`` (split from the bundle, reproducibly), then the bundle itself,
  unchanged (the tested bytes), last: a server never sees the ensemble before its steps.
  Every key is checked before anything is published: a step whose version the store has
  (or had) with other bytes refuses the whole push. ``rollback`` of an ensemble moves the
  ensemble's versions only: its steps may serve other ensembles, or traffic of their own.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelyard.deploy.artifact import (
    ArtifactError,
    artifact_name,
    sha256_file,
    split_artifact_name,
    verify_artifact,
)
from modelyard.deploy.bundle import BundlePart, split_bundle
from modelyard.errors import AlreadyExists, ModelyardError, NotFound, VersionNotFound
from modelyard.store import (
    RESERVED_FOLDER,
    ObjectExists,
    Progress,
    StoreError,
    StoreObject,
    WritableStore,
    catalog,
    open_writable_store,
    parse_artifact_name,
)

__all__ = [
    "RETIRED",
    "ChecksumMismatch",
    "NothingToRollBack",
    "PublishResult",
    "RollbackResult",
    "StoredVersion",
    "VersionExists",
    "list_store",
    "promote",
    "push",
    "rollback",
]

RETIRED = f"{RESERVED_FOLDER}/retired"
SIDECAR = ".sha256"

# (description, total bytes) -> a function told the bytes moved since its last call
StartTransfer = Callable[[str, int], Progress]
Log = Callable[[str], None]


class VersionExists(AlreadyExists):
    """Different bytes under a version the store already has (or had): versions are immutable."""


class ChecksumMismatch(ModelyardError):
    """Bytes whose sha256 is not the one expected (tested, or recorded in the store)."""


class NothingToRollBack(ModelyardError):
    """A rollback with no older live version to go back to."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    key: str
    store: str
    sha256: str
    size: int
    status: Literal["published", "unchanged"]
    # an ensemble's composing models, each its own artifact, published before it (leaves first)
    steps: tuple[PublishResult, ...] = ()


@dataclass(frozen=True, slots=True)
class RollbackResult:
    model: str
    store: str
    version: int  # now the newest live version
    retired: list[int]
    restored: bool  # the version came back from .modelyard/retired/


@dataclass(frozen=True, slots=True)
class StoredVersion:
    model: str
    version: int
    state: Literal["serving", "live", "retired", "folder"]
    size: int
    sha256: str  # "" when unknown (no record: a folder, or an artifact copied by hand)
    modified: float | None
    key: str


def _no_log(_message: str) -> None:
    pass


def _open(store: str | WritableStore) -> WritableStore:
    return open_writable_store(store) if isinstance(store, str) else store


def push(
    artifact: Path,
    store: str | WritableStore,
    *,
    expected_sha256: str | None = None,
    transfer: StartTransfer | None = None,
    log: Log = _no_log,
) -> PublishResult:
    """Publish an artifact file (``<model>_<version>.tar.gz``) to a store; an ensemble's
    bundle with each of its composing models as its own artifact, all or nothing."""
    model, version = split_artifact_name(artifact)
    manifest = verify_artifact(artifact)
    digest = sha256_file(artifact)
    if expected_sha256 and expected_sha256.lower() != digest:
        raise ChecksumMismatch(
            f"'{artifact}' has the sha256 {digest}, not the expected {expected_sha256}: it is "
            "not the artifact that was tested"
        )
    st = _open(store)
    with tempfile.TemporaryDirectory(prefix="modelyard-push-") as tmp:
        steps = split_bundle(artifact, manifest, Path(tmp))
        return _publish_all(
            st, _Item(artifact, artifact_name(model, version), digest), steps, transfer, log
        )


def promote(
    model: str,
    version: int,
    source: str | WritableStore,
    dest: str | WritableStore,
    *,
    expected_sha256: str | None = None,
    transfer: StartTransfer | None = None,
    log: Log = _no_log,
) -> PublishResult:
    """Copy a version from one store to another, checking its bytes on the way."""
    src, dst = _open(source), _open(dest)
    if src.describe() == dst.describe():
        raise ModelyardError(f"promote: --from and --to are the same store ({src.describe()})")
    key = artifact_name(model, version)
    obj = src.stat(key)
    if obj is None:
        if src.stat(f"{RETIRED}/{key}") is not None:
            raise VersionNotFound(
                model, f"version {version} of '{model}' was retired in '{src.describe()}'"
            )
        raise VersionNotFound(model, f"'{key}' is not in the store '{src.describe()}'")
    recorded = _recorded_sha256(src, key)
    with tempfile.TemporaryDirectory(prefix="modelyard-promote-") as tmp:
        local = Path(tmp) / key
        progress = transfer(f"download {key}", obj.size) if transfer else None
        src.download(key, local, progress)
        digest = sha256_file(local)
        for what, want in (
            (f"its record in '{src.describe()}'", recorded),
            ("the expected sha256", (expected_sha256 or "").lower() or None),
        ):
            if want is not None and want != digest:
                raise ChecksumMismatch(
                    f"'{key}' from '{src.describe()}' has the sha256 {digest}, not {want} "
                    f"({what}): not promoted"
                )
        try:
            manifest = verify_artifact(local)
        except ArtifactError as err:
            raise ChecksumMismatch(f"'{key}' from '{src.describe()}': {err}") from None
        steps = split_bundle(local, manifest, Path(tmp) / "steps")
        return _publish_all(dst, _Item(local, key, digest), steps, transfer, log)


@dataclass(frozen=True, slots=True)
class _Item:
    path: Path
    key: str
    digest: str
    step_of: str = ""  # where a bundle's composing model comes from, for messages


def _publish_all(
    store: WritableStore,
    main: _Item,
    steps: list[BundlePart],
    transfer: StartTransfer | None,
    log: Log,
) -> PublishResult:
    """Publish a bundle's composing models (leaves first), then the artifact itself.

    Every key is checked first, so a refusal (a version held by other bytes, or retired)
    publishes nothing. Were another push to take one of the keys meanwhile, the ones before
    it stay (each a valid artifact of its own) and the ensemble, last, is not published.
    """
    items = [
        _Item(p.path, p.key, p.sha256, f"in {main.key}, run by ensemble '{p.used_by}'")
        for p in steps
    ]
    items.append(main)
    stored = {item.key: _stored_state(store, item) for item in items}  # raises: nothing sent
    results = [_publish(store, item, transfer, log, already=stored[item.key]) for item in items]
    return PublishResult(
        main.key,
        results[-1].store,
        results[-1].sha256,
        results[-1].size,
        results[-1].status,
        tuple(results[:-1]),
    )


def _stored_state(store: WritableStore, item: _Item) -> bool:
    """True: these bytes are in the store already; False: the key is free. Raises
    VersionExists for other bytes under the key, or a retired version."""
    where = store.describe()
    context = f" ({item.step_of}; nothing was published)" if item.step_of else ""
    if _same_as_stored(store, item.key, item.digest, context):
        return True
    if store.stat(f"{RETIRED}/{item.key}") is not None:
        model, _, version = item.key.removesuffix(".tar.gz").rpartition("_")
        raise VersionExists(
            f"'{item.key}' was retired from '{where}' (a rollback){context}: a version is "
            f"never reused; bring it back with `modelyard rollback {model} --store {where} "
            f"--to {version}`, or push a new version"
        )
    return False


def _publish(
    store: WritableStore,
    item: _Item,
    transfer: StartTransfer | None,
    log: Log,
    *,
    already: bool,
) -> PublishResult:
    path, key, digest = item.path, item.key, item.digest
    size = path.stat().st_size
    where = store.describe()
    unchanged = PublishResult(key, where, digest, size, "unchanged")
    if already:
        return unchanged
    progress = transfer(f"upload {key}", size) if transfer else None
    try:
        store.publish(key, path, sha256=digest, progress=progress)
    except ObjectExists:  # someone published it meanwhile
        if _same_as_stored(store, key, digest):
            return unchanged
        raise
    store.write_bytes(key + SIDECAR, _sidecar(digest, key))
    stored = store.stat(key)
    if stored is None or stored.size != size:
        raise StoreError(f"'{key}' in '{where}' is not what was uploaded; check the store")
    log(f"published {key} to {where}")
    return PublishResult(key, where, digest, size, "published")


def _sidecar(digest: str, key: str) -> bytes:
    return f"{digest}  {key.rsplit('/', 1)[-1]}\n".encode()


def _same_as_stored(store: WritableStore, key: str, digest: str, context: str = "") -> bool:
    """False when nothing is stored at ``key``; raises VersionExists for other bytes."""
    if store.stat(key) is None:
        return False
    stored = _recorded_sha256(store, key) or _hash_stored(store, key)
    if stored == digest:
        return True
    raise VersionExists(
        f"'{key}'{context} already exists in '{store.describe()}' with other bytes (sha256 "
        f"{stored}, this one {digest}): versions are immutable; give the model a new version"
    )


def _recorded_sha256(store: WritableStore, key: str) -> str | None:
    if store.stat(key + SIDECAR) is None:
        return None
    text = store.read_bytes(key + SIDECAR).decode(errors="replace").split()
    return text[0].lower() if text and len(text[0]) == 64 else None


def _hash_stored(store: WritableStore, key: str) -> str:
    """No record (an artifact copied by hand, or a push cut short): hash it, and record it."""
    with tempfile.TemporaryDirectory(prefix="modelyard-hash-") as tmp:
        local = Path(tmp) / "artifact"
        store.download(key, local)
        digest = sha256_file(local)
    store.write_bytes(key + SIDECAR, _sidecar(digest, key))
    return digest


def _artifact_versions(keys: list[str], model: str, prefix: str = "") -> dict[int, str]:
    out: dict[int, str] = {}
    for key in keys:
        if not key.startswith(prefix):
            continue
        parsed = parse_artifact_name(key.removeprefix(prefix))
        if parsed is not None and parsed[0] == model:
            out[parsed[1]] = key
    return out


def rollback(
    model: str,
    store: str | WritableStore,
    *,
    to: int | None = None,
    log: Log = _no_log,
) -> RollbackResult:
    """Make ``to`` (default: the newest live version below the newest) the newest live one.

    Only ``model``'s versions move: an ensemble's composing models stay as they are.
    """
    st = _open(store)
    where = st.describe()
    objects = st.list()
    keys = [o.key for o in objects]
    live = _artifact_versions(keys, model)
    retired = _artifact_versions(keys, model, RETIRED + "/")
    folder = catalog(objects).get(model)
    folder_versions = (
        sorted(v for v, s in folder.versions.items() if s.kind == "folder") if folder else []
    )
    if not live and not retired and not folder_versions:
        raise NotFound(f"model '{model}' is not in the store '{where}'")
    newest = max(live) if live else None
    if to is None:
        older = [v for v in live if newest is not None and v < newest]
        if not older:
            held = f"only version {newest} is live" if newest is not None else "no version is live"
            raise NothingToRollBack(
                f"'{model}' in '{where}': {held}, so there is nothing older to roll back to; "
                "name a version with --to"
                + (f" (retired: {', '.join(map(str, sorted(retired)))})" if retired else "")
            )
        to = max(older)
    if to not in live and to not in retired:
        raise VersionNotFound(model, f"'{model}' has no version {to} in '{where}'")
    blocking = [v for v in folder_versions if v > to]
    if blocking:
        raise ModelyardError(
            f"'{model}' in '{where}' has version {blocking[0]} as a folder, not an artifact: "
            "rollback moves artifacts only; move that folder aside by hand"
        )
    restored = False
    if to not in live:
        _move(st, retired[to], artifact_name(model, to))
        restored = True
        log(f"restored {artifact_name(model, to)} from {RETIRED}/")
    newer = sorted(v for v in live if v > to)  # oldest first: servers jump straight to `to`
    for version in newer:
        key = live[version]
        _move(st, key, f"{RETIRED}/{key}")
        record = {
            "model": model,
            "version": version,
            "retired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rolled_back_to": to,
        }
        st.write_bytes(
            f"{RETIRED}/{key}.json", (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        )
        log(f"retired {key} to {RETIRED}/")
    return RollbackResult(model, where, to, newer, restored)


def _move(store: WritableStore, key: str, dest: str) -> None:
    """Move an artifact and its checksum record (the record first: never an unrecorded
    live artifact)."""
    if store.stat(key + SIDECAR) is not None:
        store.move(key + SIDECAR, dest + SIDECAR)
    store.move(key, dest)


def list_store(store: str | WritableStore, *, retired: bool = False) -> list[StoredVersion]:
    """Every version in a store, by model then version: artifacts with their recorded
    sha256, folder-layout versions, and (``retired``) retired versions."""
    st = _open(store)
    objects = st.list()
    by_key = {o.key: o for o in objects}
    rows: list[StoredVersion] = []
    for name, model in catalog(objects).items():
        newest = model.latest
        for version, source in model.versions.items():
            if source.artifact is not None:
                obj = source.artifact
                state: Literal["serving", "live"] = "serving" if version == newest else "live"
                sha = _sidecar_of(st, by_key, obj.key)
                rows.append(
                    StoredVersion(name, version, state, obj.size, sha, obj.modified, obj.key)
                )
            else:
                size = sum(f.size for f in source.files)
                modified = max((f.modified or 0 for f in source.files), default=0) or None
                rows.append(
                    StoredVersion(name, version, "folder", size, "", modified, f"{name}/{version}/")
                )
    if retired:
        for key, obj in by_key.items():
            if not key.startswith(RETIRED + "/"):
                continue
            parsed = parse_artifact_name(key.removeprefix(RETIRED + "/"))
            if parsed is None:
                continue
            modified = obj.modified
            record = by_key.get(key + ".json")
            if record is not None:
                modified = record.modified
            sha = _sidecar_of(st, by_key, key)
            rows.append(
                StoredVersion(parsed[0], parsed[1], "retired", obj.size, sha, modified, key)
            )
    rows.sort(key=lambda r: (r.model.encode(), r.version, r.state == "retired"))
    return rows


def _sidecar_of(store: WritableStore, by_key: dict[str, StoreObject], key: str) -> str:
    if key + SIDECAR not in by_key:
        return ""
    return _recorded_sha256(store, key) or ""
