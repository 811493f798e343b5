"""The store seam: a flat listing of objects under a root, and fetching one to a file.

A store knows nothing about Triton: keys are '/'-separated paths relative to the store's
root (``add_sub/config.pbtxt``, ``mlp_3.tar.gz``). ``catalog.py`` turns a listing into
models; ``cache.py`` turns a model into a local folder.

``open_store(url)`` picks the implementation from the URL, with Triton's forms:

* ``/models``, ``./models``, ``file:///models``: :class:`~modelyard.store.local.LocalStore`;
* ``s3://bucket/prefix``: S3 at the endpoint AWS configuration names (``AWS_ENDPOINT_URL``,
  a profile's ``endpoint_url``, or AWS itself);
* ``s3://host:port/bucket/prefix`` (plain HTTP) and ``s3://https://host:port/bucket/prefix``:
  any S3-compatible endpoint (MinIO, Ceph, moto).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from modelyard.errors import ConfigError, Unavailable, Unsupported

__all__ = ["Store", "StoreError", "StoreObject", "open_store"]


@dataclass(frozen=True, slots=True)
class StoreObject:
    """One object: its key relative to the store root ('/'-separated), size and ETag.

    The ETag changes whenever the content does: S3's own ETag (quotes stripped), or for a
    local file its modification time and size. The cache keys what it downloads by it.
    """

    key: str
    size: int
    etag: str


class StoreError(Unavailable):
    """A store could not be listed or read (missing bucket, no credentials, network)."""


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
