"""The environment cache on disk: layout, per-key locks, ready records, archive hashes.

Layout under ``EnvironmentOptions.cache_dir``::

    envs/<origin>-<key[:20]>/        an unpacked archive or a built virtualenv
    envs/<origin>-<key[:20]>.json    its ready record, written last and atomically
    hashes/<sha256(path)[:32]>.json  an archive's sha256, valid for one (size, mtime, inode, ctime)
    locks/<origin>-<key[:20]>.lock   flock(2) taken while an environment is made
    uv/                              uv's download and wheel cache
    tmp/                             unpacking and building in progress

A ready record is what makes an environment usable: readers never look inside a folder that has
none, writers hold the key's lock, and a folder left without a record (a crash mid-unpack) is
removed and made again. The record also carries the interpreter check's result, so loading a
cached environment reads one small file and starts nothing. A record can hold an ``error``
instead: the environment was made and checked and cannot run a worker (no numpy, wrong Python),
which no retry changes, since the key is a content hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ArchiveHashes", "EnvCache", "Record"]

_FORMAT = 1
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Record:
    """What a ready environment is: its interpreter, version, and variables for the worker."""

    origin: str
    key: str
    python: str
    python_version: tuple[int, int]
    set_vars: dict[str, str]
    prepend_vars: dict[str, list[str]]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "origin": self.origin,
            "key": self.key,
            "python": self.python,
            "python_version": list(self.python_version),
            "set": self.set_vars,
            "prepend": self.prepend_vars,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record | None:
        if data.get("format") != _FORMAT:
            return None
        major, minor = data["python_version"]
        return cls(
            origin=str(data["origin"]),
            key=str(data["key"]),
            python=str(data["python"]),
            python_version=(int(major), int(minor)),
            set_vars={str(k): str(v) for k, v in data["set"].items()},
            prepend_vars={str(k): [str(p) for p in v] for k, v in data["prepend"].items()},
            error=data.get("error"),
        )


class EnvCache:
    """One cache folder; cheap to construct (creates folders only when something is made)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def name(self, origin: str, key: str) -> str:
        # short, so a conda prefix rewritten into binaries fits conda's placeholders
        return f"{origin}-{key[:20]}"

    def env_dir(self, origin: str, key: str) -> Path:
        return self.root / "envs" / self.name(origin, key)

    def record_path(self, origin: str, key: str) -> Path:
        return self.root / "envs" / f"{self.name(origin, key)}.json"

    def read(self, origin: str, key: str) -> Record | None:
        try:
            data = json.loads(self.record_path(origin, key).read_bytes())
            return Record.from_json(data)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, record: Record) -> None:
        path = self.record_path(record.origin, record.key)
        _write_atomic(path, json.dumps(record.to_json(), indent=1).encode())

    def tmp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(self, origin: str, key: str) -> Iterator[None]:
        """Hold the key's lock: one thread and one process at a time make an environment."""
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        name = self.name(origin, key)
        # each open() is its own flock owner, so this serialises threads as well as processes
        with open(folder / f"{name}.lock", "a+b") as handle:
            _flock(handle.fileno())
            yield


class ArchiveHashes:
    """sha256 of archives, remembered on disk per (path, size, mtime, inode, ctime), so neither
    a second load nor a restart re-reads a multi-gigabyte archive."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def sha256(self, path: Path) -> str:
        st = path.stat()
        ident = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        memo_file = self.root / "hashes" / f"{_text_hash(str(path))[:32]}.json"
        digest = self._from_disk(memo_file, ident)
        if digest is None:
            digest = file_sha256(path)
            _write_atomic(memo_file, json.dumps({"id": list(ident), "sha256": digest}).encode())
        return digest

    @staticmethod
    def _from_disk(memo_file: Path, ident: tuple[str, int, int, int, int]) -> str | None:
        try:
            data = json.loads(memo_file.read_bytes())
        except (OSError, ValueError):
            return None
        if isinstance(data, dict) and data.get("id") == list(ident):
            digest = data.get("sha256")
            return digest if isinstance(digest, str) else None
        return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _flock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking between loads
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
