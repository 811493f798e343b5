"""A folder on this machine as a store (the default).

Symlinked folders are followed, as Triton follows them; a link back to one of its own
ancestors (a cycle) is not. A file's ETag is its modification time and size: cheap to
list on every poll, and different whenever the file is rewritten.
"""

from __future__ import annotations

import builtins
import os
import shutil
import stat
from pathlib import Path

from modelyard.store.base import StoreError, StoreObject, is_safe_key

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
                out.append(
                    StoreObject(
                        key=prefix + child.name,
                        size=cst.st_size,
                        etag=f"{cst.st_mtime_ns:x}-{cst.st_size:x}",
                    )
                )

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
