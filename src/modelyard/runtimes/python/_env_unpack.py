"""Unpacking an environment archive (conda-pack, venv-pack) into the cache, safely, once.

The archive goes through :func:`modelyard.store._archive.safe_extract` with links admitted only
inside the target (conda environments hold ``bin/python -> python3.11`` and the like), into a
temporary folder that is renamed into place when it is complete. Then:

* **conda-pack**: ``conda-unpack`` is not run. Its ``_prefix_records`` (a list of
  ``(path, placeholder, mode)`` that conda-pack writes into ``bin/conda-unpack``) are read
  without executing the script (``ast.literal_eval``), and the same rewrite is done here:
  ``text`` files get every placeholder replaced by the environment's final folder; ``binary``
  files get it replaced and NUL-padded to the same length, as conda does, which needs the final
  folder's path to be no longer than the placeholder. Paths outside the environment, through
  links, or not regular files are refused or skipped.
* **venv-pack**: a venv's ``bin/python`` links point to its ``home`` on the machine that made
  it (``/usr/bin/python3``), outside the archive. Those links (and only those) are skipped
  while unpacking and re-created to the interpreter that ``pyvenv.cfg`` names, once that has
  been checked to exist here.
"""

from __future__ import annotations

import ast
import mmap
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

from modelyard.errors import EnvironmentUnusable
from modelyard.runtimes.python._env_probe import check_venv_home, read_pyvenv_cfg, venv_version
from modelyard.store._archive import UnsafeArchiveMember, safe_extract

__all__ = ["unpack"]

_INTERPRETER_LINK = re.compile(r"bin/python(\d+(\.\d+)?)?")


def unpack(
    archive: Path,
    final: Path,
    tmp_parent: Path,
    *,
    max_bytes: int,
    max_members: int,
    what: str,
    rebind_home: Path | None = None,
) -> Path:
    """Unpack ``archive`` so that ``final`` holds it; return the environment's root in it.

    ``final`` must not exist. ``rebind_home`` (embedded environments) is the server's own
    interpreter, used when a venv's ``home`` does not exist here and the venv was made for the
    server's Python minor version.
    """
    for stale in tmp_parent.glob(f"unpack-{final.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a crashed unpack of this key (caller locks it)
    tmp = tmp_parent / f"unpack-{final.name}-{uuid.uuid4().hex[:8]}"
    skipped: list[tuple[str, str]] = []

    def external_link(name: str, target: str) -> bool:
        if _INTERPRETER_LINK.fullmatch(name):
            skipped.append((name, target))
            return True
        return False

    safe_extract(
        archive,
        tmp,
        max_bytes,
        name=str(archive),
        max_members=max_members,
        links=True,
        external_link=external_link,
        keep_mtime=True,
    )
    try:
        relative = _root_in(tmp, what)
        root = tmp / relative
        final_root = final / relative
        if (root / "pyvenv.cfg").is_file():
            _relink_venv(root, skipped, what, rebind_home)
        elif skipped:
            name, target = skipped[0]
            raise UnsafeArchiveMember(
                f"{what}: member '{name}' is a symbolic link leading outside the archive's "
                f"folder (to '{target}')"
            )
        else:
            _rewrite_prefixes(root, final_root, what)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final_root


def _root_in(tmp: Path, what: str) -> Path:
    """Where the environment starts: the archive's top, or its one folder (``--arcroot``)."""
    if _looks_like_env(tmp):
        return Path()
    entries = list(tmp.iterdir())
    if len(entries) == 1 and not entries[0].is_symlink() and _looks_like_env(entries[0]):
        return Path(entries[0].name)
    raise EnvironmentUnusable(
        f"{what} holds neither a conda environment (bin/python, lib/pythonX.Y, conda-meta/) nor "
        "a virtualenv (pyvenv.cfg) at its top"
    )


def _looks_like_env(folder: Path) -> bool:
    return (folder / "pyvenv.cfg").is_file() or (folder / "bin").is_dir()


def _relink_venv(
    root: Path, skipped: list[tuple[str, str]], what: str, rebind_home: Path | None
) -> None:
    """Point ``bin/python*`` at the interpreter ``pyvenv.cfg`` names (checked to exist here)."""
    cfg_path = root / "pyvenv.cfg"
    cfg = read_pyvenv_cfg(cfg_path)
    version = venv_version(cfg)
    try:
        interpreter = check_venv_home(cfg, what)
    except EnvironmentUnusable:
        if rebind_home is None or version != sys.version_info[:2]:
            raise
        interpreter = rebind_home
        _set_home(cfg_path, rebind_home.parent)
    names = {name for name, _ in skipped}
    if version is not None:
        names |= {"bin/python", "bin/python3", f"bin/python{version[0]}.{version[1]}"}
    (root / "bin").mkdir(exist_ok=True)
    for name in sorted(names):
        link = root / name
        if link.exists():
            continue  # a copied interpreter (venv --copies), or a link that works
        if link.is_symlink():
            link.unlink()  # dangling: it pointed at a skipped link
        link.symlink_to(interpreter)


def _set_home(cfg_path: Path, home: Path) -> None:
    lines = cfg_path.read_text().splitlines()
    out = [
        f"home = {home}" if line.split("=")[0].strip().lower() == "home" else line for line in lines
    ]
    cfg_path.write_text("\n".join(out) + "\n")


def _rewrite_prefixes(root: Path, final_root: Path, what: str) -> None:
    """Do what conda-pack's ``conda-unpack`` does, from its records, without running it."""
    script = root / "bin" / "conda-unpack"
    if not script.is_file() or script.is_symlink():
        return  # not a conda-pack archive, or packed with --dest-prefix: nothing to rewrite
    records = _prefix_records(script, what)
    new_prefix = str(final_root)
    real_root = root.resolve()
    for path, placeholder, mode in records:
        target = _record_path(root, real_root, path, what)
        if target is None or not _holds(target, placeholder.encode()):
            continue
        data = target.read_bytes()
        if mode == "text":
            new = data.replace(placeholder.encode(), new_prefix.encode())
        else:
            new = _binary_replace(data, placeholder.encode(), new_prefix.encode(), path, what)
        if new != data:
            target.write_bytes(new)  # same inode: mode and hard links stay


def _holds(path: Path, needle: bytes) -> bool:
    """Whether ``path`` contains ``needle``, without reading a big library into memory."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(needle) != -1


def _prefix_records(script: Path, what: str) -> list[tuple[str, str, str]]:
    try:
        tree = ast.parse(script.read_bytes())
    except (SyntaxError, ValueError) as err:
        raise EnvironmentUnusable(
            f"{what}: bin/conda-unpack is not readable Python: {err}"
        ) from err
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "_prefix_records"
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as err:
                raise EnvironmentUnusable(
                    f"{what}: bin/conda-unpack's _prefix_records is not a plain list: {err}"
                ) from err
            return _checked_records(value, what)
    return []


def _checked_records(value: object, what: str) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if not isinstance(value, list | tuple):
        raise EnvironmentUnusable(f"{what}: bin/conda-unpack's _prefix_records is not a list")
    for record in value:
        if (
            not isinstance(record, list | tuple)
            or len(record) != 3
            or not all(isinstance(field, str) for field in record)
            or not record[1]
            or record[2] not in ("text", "binary")
        ):
            raise EnvironmentUnusable(
                f"{what}: bin/conda-unpack has a prefix record conda-pack does not write: "
                f"{record!r:.200}"
            )
        out.append((record[0], record[1], record[2]))
    return out


def _record_path(root: Path, real_root: Path, path: str, what: str) -> Path | None:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts or not parts:
        raise UnsafeArchiveMember(
            f"{what}: bin/conda-unpack names '{path}', outside the environment"
        )
    target = root.joinpath(*parts)
    if target.is_symlink() or not target.is_file():
        return None  # a link's target has its own record; a missing file has nothing to fix
    if not target.resolve().is_relative_to(real_root):
        raise UnsafeArchiveMember(
            f"{what}: bin/conda-unpack names '{path}', which leads outside the environment"
        )
    return target


def _binary_replace(data: bytes, placeholder: bytes, new: bytes, path: str, what: str) -> bytes:
    """conda's binary rewrite: each NUL-terminated string keeps its length (NUL padding)."""
    if placeholder not in data:
        return data
    if len(new) > len(placeholder):
        raise EnvironmentUnusable(
            f"{what}: '{path}' holds its prefix in binary form, {len(placeholder)} bytes long, and "
            f"the environment's folder '{new.decode(errors='replace')}' is longer; use a "
            "shorter cache folder for Python environments"
        )

    def replace(match: re.Match[bytes]) -> bytes:
        found = match.group()
        count = found.count(placeholder)
        return found.replace(placeholder, new) + b"\0" * ((len(placeholder) - len(new)) * count)

    pattern = re.compile(re.escape(placeholder) + b"([^\0]*?)\0")
    return pattern.sub(replace, data)
