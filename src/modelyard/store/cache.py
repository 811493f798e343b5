"""A size-bounded on-disk cache that turns a store's model into a local Triton folder.

``ModelCache.materialize(store, model)`` returns a folder ``<dir>/<model>/`` with
``config.pbtxt`` and ``<version>/…`` that ``modelyard.repository.scan_model`` loads as if
it were a local repository's. Under ``root``:

* ``entries/<id>/data/`` is one downloaded unit: an unpacked artifact, one version folder
  of a model kept in folder layout, or that folder's shared top-level files. ``<id>`` hashes
  the store, the keys and their ETags, so an entry is reused for as long as its objects are
  unchanged, across restarts too; a changed object gets a new entry. ``meta.json`` beside
  ``data/`` holds its size; its modification time is when it was last used.
* ``views/<id>/<model>/`` assembles a model from entries with hard links (no bytes copied,
  and every path resolves inside the folder, as Triton's label-file check wants): the
  governing source's top-level files (the newest version's, see ``catalog.py``) and each
  version folder.
* ``tmp/`` is where everything is built; a finished entry or view is renamed into place,
  so a crash never leaves a half entry (``tmp/`` is emptied at start).

A model of a :class:`LocalStore` kept only in folder layout is served from the store's own
folder (nothing copied). In a local store that mixes a folder and artifacts, the folder's
version folders are symlinked and its top-level files copied.

Entries in use are pinned: ``materialize`` pins what it returns until ``release(path)``
(or use ``with cache.materialized(...) as path``); beyond ``max_bytes`` the least recently
used unpinned entries are removed. Pinned entries are never removed, even over the budget.
One process owns a cache root; threads may call ``materialize`` concurrently, and each
entry is downloaded once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelyard.errors import ConfigError, VersionNotFound
from modelyard.store._archive import extract_artifact
from modelyard.store.base import Store, StoreError, StoreObject, is_safe_key
from modelyard.store.catalog import StoreModel, VersionSource
from modelyard.store.local import LocalStore

__all__ = ["CacheStats", "ModelCache", "TooLargeForCache"]

logger = logging.getLogger(__name__)

_FORMAT = 1  # part of every entry id: bump when the on-disk layout of entries changes
_META = "meta.json"
_DATA = "data"


class TooLargeForCache(ConfigError):
    """A model whose files cannot fit the disk cache at all: retrying cannot help (400)."""


@dataclass(slots=True)
class CacheStats:
    """Counters since this cache object was made (for tests and metrics)."""

    downloads: int = 0  # objects fetched from a store
    bytes_downloaded: int = 0
    hits: int = 0  # entries that were already on disk
    evictions: int = 0
    bytes_evicted: int = 0


@dataclass(slots=True)
class _Entry:
    size: int
    last_used: float  # wall clock: it outlives the process, in meta.json's mtime


@dataclass(frozen=True, slots=True)
class _Part:
    """One entry a model needs: the objects it comes from and how they become files."""

    id: str
    kind: Literal["artifact", "files"]
    objects: tuple[StoreObject, ...]
    model: str
    version: int | None


@dataclass(frozen=True, slots=True)
class _Link:
    """One top-level item of a view: where it comes from and how it gets there."""

    name: str
    source: Path
    how: Literal["hardlink", "symlink", "copy"]


class ModelCache:
    """Materializes store models as local Triton folders under ``root``, within ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int, *, max_extract_bytes: int | None = None) -> None:
        """``max_extract_bytes`` bounds what one artifact may unpack to (``max_bytes`` by default)."""
        self.root = root
        self.max_bytes = max_bytes
        self.max_extract_bytes = max_bytes if max_extract_bytes is None else max_extract_bytes
        self.stats = CacheStats()
        self._entries_dir = root / "entries"
        self._views_dir = root / "views"
        self._tmp_dir = root / "tmp"
        self._lock = threading.Lock()
        self._build_locks: dict[str, threading.Lock] = {}
        self._entries: dict[str, _Entry] = {}
        self._views: dict[str, frozenset[str]] = {}  # view id -> the entries it links
        self._pins: Counter[str] = Counter()
        self._leases: defaultdict[Path, list[tuple[str, ...]]] = defaultdict(list)
        self._open()

    # ---- public ----------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes of all entries on disk (views add none: they are hard links)."""
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def materialize(
        self, store: Store, model: StoreModel, versions: Iterable[int] | None = None
    ) -> Path:
        """A local Triton folder holding ``versions`` (all by default) and the governing config.

        ``versions=()`` gives the config and top-level files only. The folder stays pinned
        until :meth:`release`; an unknown version raises ``VersionNotFound``.
        """
        return self.fetch(store, model, versions)[0]

    def fetch(
        self, store: Store, model: StoreModel, versions: Iterable[int] | None = None
    ) -> tuple[Path, bool]:
        """:meth:`materialize`, also telling whether this call downloaded anything itself.

        (The cache-wide ``stats`` cannot tell: other threads download at the same time.)
        """
        wanted = sorted(model.versions) if versions is None else sorted(set(versions))
        for v in wanted:
            if v not in model.versions:
                raise VersionNotFound(model.name, v)
        local = store if isinstance(store, LocalStore) else None
        if local is not None and all(s.kind == "folder" for s in model.versions.values()):
            path = local.root / model.name  # the store's own folder holds every version
            with self._lock:
                self._leases[path].append(())
            return path, False

        parts = self._plan_parts(store, model, wanted, local)
        ids = tuple(parts)
        with self._lock:
            self._pins.update(ids)
        downloaded = False
        try:
            for part in parts.values():
                downloaded |= self._ensure(store, part)
            path = self._view(model, wanted, parts, local)
        except BaseException:
            self._unpin(ids)
            raise
        with self._lock:
            self._leases[path].append(ids)
        return path, downloaded

    def release(self, path: Path) -> None:
        """Unpin what one :meth:`materialize` call that returned ``path`` pinned."""
        with self._lock:
            leases = self._leases.get(path)
            if not leases:
                raise ValueError(f"'{path}' is not a folder this cache materialized")
            ids = leases.pop()
            if not leases:
                del self._leases[path]
        self._unpin(ids)

    @contextmanager
    def materialized(
        self, store: Store, model: StoreModel, versions: Iterable[int] | None = None
    ) -> Iterator[Path]:
        """:meth:`materialize`, released when the block ends."""
        path = self.materialize(store, model, versions)
        try:
            yield path
        finally:
            self.release(path)

    # ---- planning --------------------------------------------------------------------

    def _plan_parts(
        self, store: Store, model: StoreModel, wanted: list[int], local: LocalStore | None
    ) -> dict[str, _Part]:
        sources: list[VersionSource] = [model.versions[v] for v in wanted]
        governing = model.governing
        if governing is not None and governing.kind == "artifact" and governing not in sources:
            sources.append(governing)
        parts: dict[str, _Part] = {}
        for source in sources:
            if source.artifact is not None:
                part = self._part(store, "artifact", (source.artifact,), model.name, source.version)
            elif local is None:
                part = self._part(store, "files", source.files, model.name, source.version)
            else:
                continue  # a local version folder is linked in place
            parts[part.id] = part
        if local is None and model.shared and (governing is None or governing.kind == "folder"):
            part = self._part(store, "files", model.shared, model.name, None)
            parts[part.id] = part
        return parts

    @staticmethod
    def _part(
        store: Store,
        kind: Literal["artifact", "files"],
        objects: tuple[StoreObject, ...],
        model: str,
        version: int | None,
    ) -> _Part:
        identity = [
            _FORMAT,
            kind,
            store.describe(),
            model,
            version,
            [[o.key, o.size, o.etag] for o in objects],
        ]
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        return _Part(digest, kind, objects, model, version)

    # ---- entries ---------------------------------------------------------------------

    def _data(self, entry_id: str) -> Path:
        return self._entries_dir / entry_id / _DATA

    def _ensure(self, store: Store, part: _Part) -> bool:
        """Make sure the entry is on disk; True when this call built (downloaded) it."""
        with self._lock:
            if self._hit(part.id):
                return False
        self._check_fits(store, part)
        with self._lock:
            build_lock = self._build_locks.setdefault(part.id, threading.Lock())
        with build_lock:
            with self._lock:
                if self._hit(part.id):
                    return False
            size = self._build(store, part)
            with self._lock:
                self._entries[part.id] = _Entry(size, time.time())
                self._build_locks.pop(part.id, None)
                self._evict()
        return True

    def _check_fits(self, store: Store, part: _Part) -> None:
        """Refuse, before downloading a byte, what the listing already shows cannot fit: the
        objects alone are larger than the cache (an artifact also needs room to unpack)."""
        listed = sum(o.size for o in part.objects)
        limit = self.max_extract_bytes if part.kind == "artifact" else self.max_bytes
        if listed > limit:
            what = f"'{part.objects[0].key}' is" if len(part.objects) == 1 else "its files are"
            version = "" if part.version is None else f" version {part.version}"
            raise TooLargeForCache(
                f"model '{part.model}'{version} in model store '{store.describe()}': {what} "
                f"{listed} bytes, more than the model cache's {limit} bytes "
                "(--model-cache-size); nothing was downloaded"
            )

    def _hit(self, entry_id: str) -> bool:
        entry = self._entries.get(entry_id)
        if entry is None:
            return False
        self.stats.hits += 1
        entry.last_used = time.time()
        with suppress(OSError):  # the recency is only a hint
            os.utime(self._entries_dir / entry_id / _META)
        return True

    def _build(self, store: Store, part: _Part) -> int:
        tmp = Path(tempfile.mkdtemp(prefix="entry-", dir=self._tmp_dir))
        try:
            entry = tmp / "entry"
            data = entry / _DATA
            if part.kind == "artifact":
                (obj,) = part.objects
                assert part.version is not None
                archive = tmp / "archive.tar.gz"
                self._download(store, obj, archive)
                data.parent.mkdir()
                size = extract_artifact(
                    archive,
                    data,
                    model=part.model,
                    version=part.version,
                    max_bytes=self.max_extract_bytes,
                    name=f"{store.describe().rstrip('/')}/{obj.key}",
                )
            else:
                size = 0
                for obj in part.objects:
                    rel = obj.key.removeprefix(part.model + "/")
                    if not is_safe_key(rel) or rel == obj.key:
                        raise StoreError(f"store object '{obj.key}' is not in '{part.model}/'")
                    target = data / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._download(store, obj, target)
                    size += obj.size
            meta = {"size": size, "store": store.describe(), "keys": [o.key for o in part.objects]}
            (entry / _META).write_text(json.dumps(meta))
            _fsync_tree(entry)
            try:
                entry.rename(self._entries_dir / part.id)
            except OSError:
                if not (self._entries_dir / part.id / _META).is_file():
                    raise
            _fsync_dir(self._entries_dir)
            return size
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _download(self, store: Store, obj: StoreObject, dest: Path) -> None:
        store.fetch(obj.key, dest)
        size = dest.stat().st_size
        if size != obj.size:
            raise StoreError(
                f"'{obj.key}' in model store '{store.describe()}' changed while it was "
                f"downloaded ({size} bytes, listed as {obj.size}); try again"
            )
        with self._lock:
            self.stats.downloads += 1
            self.stats.bytes_downloaded += size

    def _unpin(self, ids: Iterable[str]) -> None:
        with self._lock:
            self._pins.subtract(ids)
            self._pins = +self._pins  # drop zero counts
            self._evict()

    def _evict(self) -> None:
        """Remove least recently used unpinned entries until within budget (lock held)."""
        total = sum(e.size for e in self._entries.values())
        if total <= self.max_bytes:
            return
        for entry_id, entry in sorted(self._entries.items(), key=lambda kv: kv[1].last_used):
            if total <= self.max_bytes:
                break
            if self._pins[entry_id]:
                continue
            self._remove(self._entries_dir / entry_id)
            del self._entries[entry_id]
            total -= entry.size
            self.stats.evictions += 1
            self.stats.bytes_evicted += entry.size
            for view_id, linked in list(self._views.items()):
                if entry_id in linked:
                    self._remove(self._views_dir / view_id)
                    del self._views[view_id]
        if total > self.max_bytes:
            logger.warning(
                "model cache '%s' holds %d bytes in use, over its %d-byte budget",
                self.root,
                total,
                self.max_bytes,
            )

    def _remove(self, path: Path) -> None:
        """Rename out of sight first, so no reader ever sees a half-removed folder."""
        doomed = Path(tempfile.mkdtemp(prefix="evicted-", dir=self._tmp_dir))
        with suppress(FileNotFoundError):
            path.rename(doomed / "x")
        shutil.rmtree(doomed, ignore_errors=True)

    # ---- views -----------------------------------------------------------------------

    def _view(
        self,
        model: StoreModel,
        wanted: list[int],
        parts: dict[str, _Part],
        local: LocalStore | None,
    ) -> Path:
        links = self._links(model, wanted, parts, local)
        identity = [_FORMAT, model.name, [[ln.name, ln.how, str(ln.source)] for ln in links]]
        if local is not None:  # copied files change without changing any entry id
            identity.append([[o.key, o.etag] for o in model.shared])
        view_id = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        final = self._views_dir / view_id
        with self._lock:
            self._views[view_id] = frozenset(parts)
        if (final / model.name).is_dir():
            return final / model.name
        tmp = Path(tempfile.mkdtemp(prefix="view-", dir=self._tmp_dir))
        try:
            view = tmp / "view"
            folder = view / model.name
            folder.mkdir(parents=True)
            for link in links:
                _place(link, folder / link.name)
            (view / _META).write_text(json.dumps({"entries": sorted(parts)}))
            try:
                view.rename(final)
            except OSError:
                if not (final / model.name).is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final / model.name

    def _links(
        self,
        model: StoreModel,
        wanted: list[int],
        parts: dict[str, _Part],
        local: LocalStore | None,
    ) -> list[_Link]:
        by_source: dict[tuple[str, int | None], str] = {}
        for part in parts.values():
            by_source[(part.kind, part.version)] = part.id
        links: list[_Link] = []
        governing = model.governing
        if governing is not None and governing.kind == "artifact":
            data = self._data(by_source[("artifact", governing.version)])
            links += [
                _Link(p.name, p, "hardlink")
                for p in sorted(data.iterdir())
                if p.name != str(governing.version)
            ]
        elif local is not None:
            folder = local.root.absolute() / model.name
            names = sorted({o.key.split("/")[1] for o in model.shared})
            links += [_Link(n, folder / n, "copy") for n in names]
        elif ("files", None) in by_source:
            data = self._data(by_source[("files", None)])
            links += [_Link(p.name, p, "hardlink") for p in sorted(data.iterdir())]
        for v in wanted:
            source = model.versions[v]
            if source.kind == "artifact":
                links.append(
                    _Link(str(v), self._data(by_source[("artifact", v)]) / str(v), "hardlink")
                )
            elif local is not None:
                links.append(_Link(str(v), local.root.absolute() / model.name / str(v), "symlink"))
            else:
                links.append(
                    _Link(str(v), self._data(by_source[("files", v)]) / str(v), "hardlink")
                )
        return links

    # ---- start-up --------------------------------------------------------------------

    def _open(self) -> None:
        for folder in (self._entries_dir, self._views_dir, self._tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp_dir.iterdir():  # a crash mid-build or mid-removal
            shutil.rmtree(leftover, ignore_errors=True)
        for folder in self._entries_dir.iterdir():
            meta = folder / _META
            try:
                size = int(json.loads(meta.read_text())["size"])
                self._entries[folder.name] = _Entry(size, meta.stat().st_mtime)
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("model cache: removing unreadable entry '%s'", folder)
                self._remove(folder)
        for folder in self._views_dir.iterdir():
            try:
                linked = frozenset(json.loads((folder / _META).read_text())["entries"])
            except (OSError, ValueError, KeyError, TypeError):
                linked = None
            if linked is None or not linked <= self._entries.keys():
                self._remove(folder)
            else:
                self._views[folder.name] = linked
        with self._lock:
            self._evict()


def _place(link: _Link, dest: Path) -> None:
    if link.how == "symlink":
        dest.symlink_to(link.source, target_is_directory=True)
    elif link.how == "copy":
        if link.source.is_dir():
            shutil.copytree(link.source, dest)
        else:
            shutil.copy2(link.source, dest)
    elif link.source.is_dir():
        shutil.copytree(link.source, dest, copy_function=os.link)
    else:
        os.link(link.source, dest)


def _fsync_tree(root: Path) -> None:
    """Make a finished entry durable before it is renamed into place."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
