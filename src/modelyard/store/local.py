"""A folder on this machine as a store (the default).

Symlinked folders are followed, as Triton follows them; a link back to one of its own
ancestors (a cycle) is not. A file's ETag is its modification time and size: cheap to
list on every poll, and different whenever the file is rewritten.

Writes (the deploy loop) go to a hidden temporary file beside the target (a name no
catalog takes for a model or artifact), flushed to disk, then linked into place:
``os.link`` fails when the target exists, so publishing is atomic *and* exclusive, also
between processes and machines sharing the folder over a file system with hard links.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path

from modelyard.store.base import ObjectExists, Progress, StoreError, StoreObject, is_safe_key

_CHUNK = 1 << 20

__all__ = ["LocalStore"]


class LocalStore:
    """Objects are the files under ``root``; keys are their '/'-separated relative paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def describe(self) -> str:
        return str(self.root)

    def list(self) -> builtins.list[StoreObject]:
        if not self.root.is_dir():
            raise StoreError(f"model store '{self.root}' is not a directory")
        objects: builtins.list[StoreObject] = []
        self._walk(str(self.root), "", frozenset(), objects)
        return objects

    def _walk(
        self,
        folder: str,
        prefix: str,
        ancestors: frozenset[tuple[int, int]],
        out: builtins.list[StoreObject],
    ) -> None:
        """Depth first, following links; a folder that is its own ancestor is a cycle."""
        st = os.stat(folder)
        here = ancestors | {(st.st_dev, st.st_ino)}
        if len(here) == len(ancestors):
            return
        try:
            children = list(os.scandir(folder))
        except OSError:  # unreadable, or removed while we list
            return
        for child in children:
            try:
                cst = child.stat()  # follows links; a dangling one raises
            except OSError:
                continue
            if stat.S_ISDIR(cst.st_mode):
                self._walk(child.path, f"{prefix}{child.name}/", here, out)
            elif stat.S_ISREG(cst.st_mode):
                out.append(_object(prefix + child.name, cst))

    def path(self, key: str) -> Path:
        """The file or folder a key names, refusing keys that lead outside the root."""
        if not is_safe_key(key):
            raise StoreError(f"model store '{self.root}': unsafe key '{key}'")
        return self.root / key

    def fetch(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self.path(key), dest)
        except OSError as err:
            raise StoreError(f"cannot read '{key}' from model store '{self.root}': {err}") from err

    # ---- writing (the deploy loop) -------------------------------------------------------

    def stat(self, key: str) -> StoreObject | None:
        try:
            st = os.stat(self.path(key))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"cannot read '{key}' from model store '{self.root}': {err}") from err
        return _object(key, st) if stat.S_ISREG(st.st_mode) else None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except OSError as err:
            raise StoreError(f"cannot read '{key}' from model store '{self.root}': {err}") from err

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = self._temporary(target)
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except OSError as err:
            raise StoreError(f"cannot write '{key}' to model store '{self.root}': {err}") from err
        finally:
            _unlink(tmp)
        _fsync_dir(target.parent)

    def publish(
        self, key: str, source: Path, *, sha256: str, progress: Progress | None = None
    ) -> None:
        target = self.path(key)
        tmp = self._temporary(target)
        try:
            _copy(source, tmp, progress, sync=True)
            try:
                os.link(tmp, target)  # fails if the target exists: never overwrites
            except FileExistsError:
                raise ObjectExists(f"'{key}' already exists in model store '{self.root}'") from None
            except OSError:  # a file system without hard links: rename, after a last look
                if target.exists():
                    raise ObjectExists(
                        f"'{key}' already exists in model store '{self.root}'"
                    ) from None
                os.rename(tmp, target)
        except OSError as err:
            raise StoreError(f"cannot write '{key}' to model store '{self.root}': {err}") from err
        finally:
            _unlink(tmp)
        _fsync_dir(target.parent)

    def move(self, key: str, dest: str) -> None:
        source, target = self.path(key), self.path(dest)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except OSError as err:
            raise StoreError(
                f"cannot move '{key}' to '{dest}' in model store '{self.root}': {err}"
            ) from err
        _fsync_dir(target.parent)
        _fsync_dir(source.parent)

    def download(self, key: str, dest: Path, progress: Progress | None = None) -> None:
        try:
            _copy(self.path(key), dest, progress, sync=False)
        except OSError as err:
            raise StoreError(f"cannot read '{key}' from model store '{self.root}': {err}") from err

    def _temporary(self, target: Path) -> Path:
        """A hidden name beside ``target`` that no catalog reads as a model or an artifact."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot write to model store '{self.root}': {err}") from err
        return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _object(key: str, st: os.stat_result) -> StoreObject:
    return StoreObject(
        key=key,
        size=st.st_size,
        etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
        modified=st.st_mtime,
    )


def _copy(source: Path, dest: Path, progress: Progress | None, *, sync: bool) -> None:
    with open(source, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            if progress is not None:
                progress(len(chunk))
        if sync:
            out.flush()
            os.fsync(out.fileno())


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
