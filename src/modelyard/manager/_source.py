"""The model store as the manager sees it: a catalog of models, and local folders on demand.

Listing the store is cheap and happens on every rescan; bytes are fetched only when a model
is loaded (or its config is asked for), into the content-keyed disk cache, which returns a
local folder in Triton layout that the repository layer reads. A local store's folder-only
models are used in place.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from modelyard.repository import ModelEntry, scan_model
from modelyard.store import ModelCache, StoreModel, catalog, open_store


def default_cache_dir(url: str) -> Path:
    """``$XDG_CACHE_HOME/modelyard/models/<store>``: one cache per store, since a cache
    root belongs to one process at a time (servers of different stores never share one)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(base) / "modelyard" / "models" / key


class ModelSource:
    """One store plus its cache; every method blocks (the manager calls them on threads)."""

    def __init__(self, url: str, cache_dir: Path, cache_max_bytes: int) -> None:
        self.url = url
        self.store = open_store(url)
        self.cache = ModelCache(cache_dir, cache_max_bytes)

    def list(self) -> dict[str, StoreModel]:
        return catalog(self.store.list())

    def fetch(self, model: StoreModel) -> tuple[ModelEntry, Path, float | None]:
        """A local, pinned Triton folder of ``model``: its entry, the pinned path, and the
        seconds spent downloading (None when everything came from the cache)."""
        start = time.monotonic()
        path, downloaded = self.cache.fetch(self.store, model)
        try:
            entry = scan_model(path)
        except BaseException:
            self.cache.release(path)
            raise
        return entry, path, (time.monotonic() - start) if downloaded else None

    def release(self, path: Path) -> None:
        self.cache.release(path)
