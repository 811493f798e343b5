"""An in-memory store: the trivial implementation of the seam, for tests and examples."""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Mapping
from pathlib import Path

from modelyard.store.base import StoreError, StoreObject

__all__ = ["MemoryStore"]


class MemoryStore:
    """Objects held as bytes by key; ``fetched`` records every key fetched, in order."""

    def __init__(self, objects: Mapping[str, bytes] | None = None, name: str = "memory") -> None:
        self.name = name
        self.objects: dict[str, bytes] = dict(objects or {})
        self.fetched: builtins.list[str] = []

    def describe(self) -> str:
        return f"memory://{self.name}"

    def list(self) -> builtins.list[StoreObject]:
        return [
            StoreObject(key, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest())
            for key, data in self.objects.items()
        ]

    def fetch(self, key: str, dest: Path) -> None:
        if key not in self.objects:
            raise StoreError(f"model store '{self.describe()}' has no object '{key}'")
        self.fetched.append(key)
        dest.write_bytes(self.objects[key])
