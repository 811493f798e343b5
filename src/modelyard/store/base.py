"""The store seam: a flat listing of objects under a root, and fetching one to a file.

A store knows nothing about Triton: keys are '/'-separated paths relative to the store's
root (``add_sub/config.pbtxt``, ``mlp_3.tar.gz``). ``catalog.py`` turns a listing into
models; ``cache.py`` turns a model into a local folder.

Servers only read. The deploy loop (``modelyard push``, ``promote``, ``rollback``) also
writes, through :class:`WritableStore`: every store modelyard opens is one. Publishing is
atomic and exclusive (a reader never sees half an object, and an existing key is never
overwritten); the top-level folder ``.modelyard/`` (:data:`RESERVED_FOLDER`) is the deploy
loop's bookkeeping (retired versions), which no server serves.

``open_store(url)`` picks the implementation from the URL, with Triton's forms:

* ``/models``, ``./models``, ``file:///models``: :class:`~modelyard.store.local.LocalStore`;
* ``s3://bucket/prefix``: S3 at the endpoint AWS configuration names (``AWS_ENDPOINT_URL``,
  a profile's ``endpoint_url``, or AWS itself);
* ``s3://host:port/bucket/prefix`` (plain HTTP) and ``s3://https://host:port/bucket/prefix``:
  any S3-compatible endpoint (MinIO, Ceph, moto).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from modelyard.errors import AlreadyExists, ConfigError, Unavailable, Unsupported

__all__ = [
    "RESERVED_FOLDER",
    "ObjectExists",
    "Progress",
    "Store",
    "StoreError",
    "StoreObject",
    "WritableStore",
    "open_store",
    "open_writable_store",
]

# the deploy loop's bookkeeping at the top of a store; never a model (catalog.py skips it)
RESERVED_FOLDER = ".modelyard"

Progress = Callable[[int], None]  # called with the bytes moved since the last call


@dataclass(frozen=True, slots=True)
class StoreObject:
    """One object: its key relative to the store root ('/'-separated), size and ETag.

    The ETag changes whenever the content does: S3's own ETag (quotes stripped), or for a
    local file its modification time and size. The cache keys what it downloads by it.
    ``modified`` (seconds since the epoch; None where the store cannot tell) is for people
    (``modelyard ls``); it takes no part in comparisons.
    """

    key: str
    size: int
    etag: str
    modified: float | None = field(default=None, compare=False)


class StoreError(Unavailable):
    """A store could not be listed or read (missing bucket, no credentials, network)."""


class ObjectExists(AlreadyExists):
    """Publishing a key that already exists: stored objects are never overwritten."""


@runtime_checkable
class Store(Protocol):
    """Where model bytes live."""

    def describe(self) -> str:
        """The store's URL, for messages and logs (never holds credentials)."""
        ...

    def list(self) -> builtins.list[StoreObject]:
        """Every object under the root, recursively, in no particular order."""
        ...

    def fetch(self, key: str, dest: Path) -> None:
        """Download one object to the file ``dest`` (its parent folder exists)."""
        ...


@runtime_checkable
class WritableStore(Store, Protocol):
    """A store the deploy loop writes to. Keys are checked like any other (no ``..``)."""

    def stat(self, key: str) -> StoreObject | None:
        """The object at ``key``, or None when there is none."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """A small object's bytes (a checksum file, a record)."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace a small object, atomically."""
        ...

    def publish(
        self, key: str, source: Path, *, sha256: str, progress: Progress | None = None
    ) -> None:
        """Store the file ``source`` as ``key``, atomically and only if ``key`` is absent.

        Readers see the whole object or none of it; when ``key`` exists (or appears
        meanwhile), nothing is written and :class:`ObjectExists` is raised. ``sha256`` is the
        file's hex digest: stores that can (S3) check the bytes they received against it.
        """
        ...

    def move(self, key: str, dest: str) -> None:
        """Move an object to another key of the same store (replacing ``dest``)."""
        ...

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        """:meth:`fetch`, reporting bytes as they arrive."""
        ...


def open_writable_store(url: str) -> WritableStore:
    """:func:`open_store` for the deploy loop: a store it can publish to."""
    store = open_store(url)
    if not isinstance(store, WritableStore):  # pragma: no cover - every store writes today
        raise Unsupported(f"model store '{url}' cannot be written to")
    return store


def open_store(url: str) -> Store:
    """The store a repository URL names; see the module docstring for the forms."""
    if url.startswith("s3://"):
        from modelyard.store.s3 import S3Store  # boto3 loads only for an S3 store

        return S3Store.from_url(url)
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"model store '{url}': a file:// URL names no host")
        from modelyard.store.local import LocalStore

        return LocalStore(Path(unquote(parts.path)))
    scheme, sep, _ = url.partition("://")
    if sep and scheme.isidentifier():
        raise Unsupported(
            f"model store '{url}': the '{scheme}://' scheme is not supported; "
            "use a local folder or s3://"
        )
    from modelyard.store.local import LocalStore

    return LocalStore(Path(url))


def is_safe_key(key: str) -> bool:
    """Whether a key is a plain relative path: no empty, '.' or '..' parts, no '\\' or NUL.

    S3 keys are arbitrary strings (``a/../../etc/x`` is a valid key); only safe ones may
    become paths on this machine.
    """
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))
