"""The artifact file: ``<model>_<version>.tar.gz``, written reproducibly, read back, verified.

Layout (docs/deploy.md), every member below one of these top-level folders::

    .modelyard/manifest.json         what is inside: every other file with its sha256 and size
    .modelyard/tests/<model>/...     the model's test cases (not served: the server skips them)
    <model>/config.pbtxt             the model folder, exactly as a server loads it from a store
    <model>/<version>/...
    <step>/config.pbtxt ...          an ensemble's composing models, beside it (a bundle:
                                     bundle.py splits it into one artifact per model)

The bytes depend only on the members' names and contents: members sorted by name, folders
included, times fixed (``SOURCE_DATE_EPOCH``, else 1980-01-01), owners root with no names,
modes 0644 or 0755 (executables) and 0755 for folders, PAX headers, and a gzip header with
no file name and time 0. Two builds from the same files give the same sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelyard.errors import ConfigError
from modelyard.store import RESERVED_FOLDER, parse_artifact_name

__all__ = [
    "MANIFEST",
    "TESTS_FOLDER",
    "ArtifactError",
    "Manifest",
    "Member",
    "artifact_name",
    "extract_tests",
    "read_manifest",
    "sha256_file",
    "split_artifact_name",
    "unpack_artifact",
    "verify_artifact",
    "write_artifact",
]

MANIFEST = f"{RESERVED_FOLDER}/manifest.json"
TESTS_FOLDER = f"{RESERVED_FOLDER}/tests"
FORMAT = 1
DEFAULT_EPOCH = 315532800  # 1980-01-01, as the environment archives (zip's earliest time)
_CHUNK = 1 << 20


class ArtifactError(ConfigError):
    """An artifact that is not what ``modelyard package`` writes, or whose bytes changed."""


@dataclass(frozen=True, slots=True)
class Member:
    """One file (``source`` on disk, or ``data``) or folder (neither) of an artifact."""

    name: str  # '/'-separated, relative, no trailing '/'
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False

    @property
    def is_dir(self) -> bool:
        return self.source is None and self.data is None


@dataclass(frozen=True, slots=True)
class Manifest:
    """``.modelyard/manifest.json``: what an artifact holds and how it was built."""

    model: str
    version: int
    files: dict[str, tuple[str, int]]  # member name -> (sha256, size)
    models: list[dict[str, Any]] = field(default_factory=list)  # one per model folder inside
    built_with: str = ""

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "artifact": artifact_name(self.model, self.version),
            "model": self.model,
            "version": self.version,
            "models": self.models,
            "files": {k: {"sha256": v[0], "size": v[1]} for k, v in sorted(self.files.items())},
            "built_with": self.built_with,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                raise ArtifactError(
                    f"{where}: manifest format {doc.get('format')!r} is not one this modelyard "
                    f"reads ({FORMAT}); upgrade modelyard"
                )
            files = {k: (str(v["sha256"]), int(v["size"])) for k, v in doc["files"].items()}
            return cls(
                model=str(doc["model"]),
                version=int(doc["version"]),
                files=files,
                models=list(doc.get("models", [])),
                built_with=str(doc.get("built_with", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ArtifactError(f"{where}: unreadable manifest ({err!r})") from None


def artifact_name(model: str, version: int) -> str:
    return f"{model}_{version}.tar.gz"


def split_artifact_name(path: Path | str) -> tuple[str, int]:
    """``("add_sub", 3)`` for ``…/add_sub_3.tar.gz``; an ArtifactError for other names."""
    name = Path(path).name
    parsed = parse_artifact_name(name)
    if parsed is None:
        raise ArtifactError(
            f"'{name}' is not an artifact name: expected <model>_<version>.tar.gz with a "
            "numeric version"
        )
    return parsed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _epoch() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(raw) if raw.isdigit() else DEFAULT_EPOCH


def write_artifact(
    members: Iterable[Member], manifest: Manifest, dest: Path, *, epoch: int | None = None
) -> None:
    """Write the artifact to ``dest`` atomically (a temporary file renamed into place).

    ``epoch`` is the members' time (default: ``SOURCE_DATE_EPOCH``, else 1980-01-01).
    """
    everything = {m.name: m for m in members}
    everything[MANIFEST] = Member(MANIFEST, data=manifest.to_json())
    for name in list(everything):  # every parent folder is a member too
        parts = name.split("/")
        for end in range(1, len(parts)):
            everything.setdefault("/".join(parts[:end]), Member("/".join(parts[:end])))
    if epoch is None:
        epoch = _epoch()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in sorted(everything):
                _add(tar, everything[name], epoch)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, member: Member, epoch: int) -> None:
    info = tarfile.TarInfo(member.name)
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if member.is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.mode = 0o755 if member.executable else 0o644
    if member.data is not None:
        info.size = len(member.data)
        tar.addfile(info, io.BytesIO(member.data))
        return
    assert member.source is not None
    with open(member.source, "rb") as f:
        info.size = os.fstat(f.fileno()).st_size
        tar.addfile(info, f)


def _members(tar: tarfile.TarFile, where: str) -> Iterator[tuple[tarfile.TarInfo, list[str]]]:
    for info in tar:
        parts = [p for p in info.name.split("/") if p not in ("", ".")]
        if info.name.startswith("/") or ".." in parts:
            raise ArtifactError(f"{where}: member '{info.name}' leads outside the archive")
        if not (info.isreg() or info.isdir()):
            raise ArtifactError(f"{where}: member '{info.name}' is not a regular file or folder")
        yield info, parts


def _open(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArtifactError(f"'{path}' is not a readable .tar.gz: {err}") from None


def read_manifest(path: Path) -> Manifest:
    """The manifest of an artifact, read without unpacking anything else."""
    with _open(path) as tar:
        try:
            for info, parts in _members(tar, str(path)):
                if "/".join(parts) == MANIFEST and info.isreg():
                    f = tar.extractfile(info)
                    assert f is not None
                    return Manifest.from_json(f.read(), str(path))
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ArtifactError(f"'{path}' is not a readable .tar.gz: {err}") from None
    raise ArtifactError(f"'{path}' has no {MANIFEST}: it was not written by `modelyard package`")


def verify_artifact(path: Path) -> Manifest:
    """Check every member against the manifest (and the name against the model/version).

    Raises ArtifactError naming the first member that is missing, extra or changed.
    """
    manifest = read_manifest(path)
    model, version = split_artifact_name(path)
    if (model, version) != (manifest.model, manifest.version):
        raise ArtifactError(
            f"'{path.name}' holds {artifact_name(manifest.model, manifest.version)} according "
            "to its manifest: an artifact must keep the name it was built with"
        )
    seen: set[str] = set()
    with _open(path) as tar:
        try:
            for info, parts in _members(tar, str(path)):
                name = "/".join(parts)
                if info.isdir() or name == MANIFEST:
                    continue
                expected = manifest.files.get(name)
                if expected is None:
                    raise ArtifactError(f"'{path}': member '{name}' is not in its manifest")
                f = tar.extractfile(info)
                assert f is not None
                digest, size = _hash_stream(f)
                if (digest, size) != expected:
                    raise ArtifactError(
                        f"'{path}': member '{name}' does not match its manifest (sha256 "
                        f"{digest[:12]}…, {size} bytes; manifest: {expected[0][:12]}…, "
                        f"{expected[1]} bytes)"
                    )
                seen.add(name)
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as err:
            raise ArtifactError(f"'{path}' is not a readable .tar.gz: {err}") from None
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise ArtifactError(f"'{path}': its manifest lists '{missing[0]}', which it does not hold")
    return manifest


def _hash_stream(f: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def unpack_artifact(path: Path, dest: Path) -> tuple[dict[str, Member], int]:
    """Unpack every member but the manifest into ``dest``; the members as ``write_artifact``
    takes them (files' ``source`` in ``dest``), and the artifact's time (its manifest's).

    For an artifact ``verify_artifact`` passed: members are checked again only as far as
    staying inside ``dest`` and being files or folders.
    """
    members: dict[str, Member] = {}
    epoch: int | None = None
    with _open(path) as tar:
        try:
            for info, parts in _members(tar, str(path)):
                if not parts:
                    continue
                name = "/".join(parts)
                if name == MANIFEST:
                    epoch = int(info.mtime)
                    continue
                target = dest.joinpath(*parts)
                if info.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    members[name] = Member(name)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(info)
                assert source is not None
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
                members[name] = Member(name, source=target, executable=bool(info.mode & 0o100))
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ArtifactError(f"'{path}' is not a readable .tar.gz: {err}") from None
    if epoch is None:
        raise ArtifactError(
            f"'{path}' has no {MANIFEST}: it was not written by `modelyard package`"
        )
    return members, epoch


def extract_tests(path: Path, dest: Path) -> list[str]:
    """Unpack ``.modelyard/tests/<model>/…`` into ``dest/<model>/…``; returns the models.

    Only regular files and folders below that folder are written; nothing else is read.
    """
    prefix = TESTS_FOLDER.split("/")
    models: set[str] = set()
    with _open(path) as tar:
        try:
            for info, parts in _members(tar, str(path)):
                if parts[: len(prefix)] != prefix or len(parts) <= len(prefix) + 1:
                    continue
                rel = parts[len(prefix) :]
                target = dest.joinpath(*rel)
                if info.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                models.add(rel[0])
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(info)
                assert source is not None
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ArtifactError(f"'{path}' is not a readable .tar.gz: {err}") from None
    return sorted(models)
