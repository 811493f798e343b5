"""An in-memory store: the trivial implementation of the seam, for tests and examples."""

from __future__ import annotations

import builtins
import hashlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from modelyard.store.base import ObjectExists, Progress, StoreError, StoreObject, is_safe_key

__all__ = ["MemoryStore"]


class MemoryStore:
    """Objects held as bytes by key; ``fetched`` records every key fetched, in order."""

    def __init__(self, objects: Mapping[str, bytes] | None = None, name: str = "memory") -> None:
        self.name = name
        self.objects: dict[str, bytes] = dict(objects or {})
        self.fetched: builtins.list[str] = []
        self.modified: dict[str, float] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"memory://{self.name}"

    def list(self) -> builtins.list[StoreObject]:
        with self._lock:
            return [self._object(key, data) for key, data in self.objects.items()]

    def _object(self, key: str, data: bytes) -> StoreObject:
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return StoreObject(key, len(data), etag, self.modified.get(key))

    def fetch(self, key: str, dest: Path) -> None:
        if key not in self.objects:
            raise StoreError(f"model store '{self.describe()}' has no object '{key}'")
        self.fetched.append(key)
        dest.write_bytes(self.objects[key])

    # ---- writing (the deploy loop) -------------------------------------------------------

    def _check(self, key: str) -> None:
        if not is_safe_key(key):
            raise StoreError(f"model store '{self.describe()}': unsafe key '{key}'")

    def stat(self, key: str) -> StoreObject | None:
        with self._lock:
            data = self.objects.get(key)
            return None if data is None else self._object(key, data)

    def read_bytes(self, key: str) -> bytes:
        with self._lock:
            if key not in self.objects:
                raise StoreError(f"model store '{self.describe()}' has no object '{key}'")
            return self.objects[key]

    def write_bytes(self, key: str, data: bytes) -> None:
        self._check(key)
        with self._lock:
            self.objects[key] = bytes(data)
            self.modified[key] = time.time()

    def publish(
        self, key: str, source: Path, *, sha256: str, progress: Progress | None = None
    ) -> None:
        self._check(key)
        data = source.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"'{source}' does not have the sha256 {sha256}")
        with self._lock:
            if key in self.objects:
                raise ObjectExists(f"'{key}' already exists in model store '{self.describe()}'")
            self.objects[key] = data
            self.modified[key] = time.time()
        if progress is not None:
            progress(len(data))

    def move(self, key: str, dest: str) -> None:
        self._check(dest)
        with self._lock:
            if key not in self.objects:
                raise StoreError(f"model store '{self.describe()}' has no object '{key}'")
            self.objects[dest] = self.objects.pop(key)
            self.modified[dest] = self.modified.pop(key, time.time())

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        self.fetch(key, dest)
        if progress is not None:
            progress(len(self.objects[key]))
