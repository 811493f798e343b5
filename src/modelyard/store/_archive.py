"""Safe extraction of model artifacts (``<model>_<version>.tar.gz``).

:func:`safe_extract` writes regular files and folders only, and refuses, naming the archive
and the member:

* absolute names, and names with a ``..`` part (nothing may land outside ``dest``);
* symbolic and hard links, whatever they point at (a model folder needs none, and a link is
  the classic way out of the target); device files and FIFOs;
* more than ``max_bytes`` of content, or more than ``max_members`` members, counted from the
  headers before anything is written, so a small gzip cannot fill the disk or the inode table;
* a corrupt or truncated gzip or tar stream.

File modes are not taken from the archive (no setuid bits), except that an executable file
stays executable.

Environment archives (conda-pack, venv-pack) hold links, so ``links=True`` admits them, under
rules that keep every link, and everything written through one, inside ``dest``:

* a symbolic link's target is relative, its ``..`` parts all lead (``../lib/x``, not
  ``a/../../x``, which a link named ``a`` could turn into a way out) and do not climb above
  ``dest``; a link that leads out is refused unless ``external_link(name, target)`` says to
  skip it (a venv's ``bin/python -> /usr/bin/python3``, which the caller re-creates);
* a hard link names a regular file written earlier from the same archive;
* no member is written through a link, nor over one. :func:`extract_artifact` then checks the artifact's layout: either
``<model>/config.pbtxt`` + ``<model>/<version>/…`` (what ``modelyard package`` writes), or
the model folder's content at the top, ``config.pbtxt`` + ``<version>/…`` (as SageMaker
users often pack it, with ``tar -C model_dir .``). Its one version folder must be the
version the file name says. A top-level ``.modelyard/`` folder beside ``<model>/`` (the
manifest and test cases ``modelyard package`` adds) is not served, and neither are other
model folders beside ``<model>/``: an ensemble's artifact carries its composing models (a
bundle, docs/deploy.md), which a store serves from their own artifacts (``modelyard push``
publishes each), so one model version always has one source.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from modelyard.errors import ConfigError
from modelyard.store.base import RESERVED_FOLDER as ARTIFACT_METADATA_FOLDER
from modelyard.store.catalog import parse_version

__all__ = [
    "ArchiveError",
    "ArchiveLayoutError",
    "ArchiveTooLarge",
    "CorruptArchive",
    "UnsafeArchiveMember",
    "extract_artifact",
    "safe_extract",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
DEFAULT_MAX_MEMBERS = 100_000


class ArchiveError(ConfigError):
    """An artifact modelyard will not unpack; the message names the archive."""


class UnsafeArchiveMember(ArchiveError):
    """A member that could write outside the target, or is not a file or folder."""


class ArchiveTooLarge(ArchiveError):
    """More content (or members) than the configured limit."""


class CorruptArchive(ArchiveError):
    """Not a readable gzip/tar stream."""


class ArchiveLayoutError(ArchiveError):
    """Readable, but not one Triton model folder holding the version its name says."""


def _member_path(archive: str, name: str) -> tuple[str, ...]:
    """A member's path parts below the target, refusing anything that could leave it."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveMember(f"archive '{archive}': member '{name}' has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveMember(
            f"archive '{archive}': member '{name}' leads outside the archive's folder ('..')"
        )
    if "\x00" in name:
        raise UnsafeArchiveMember(f"archive '{archive}': member '{name!r}' has a NUL character")
    return parts


def _kind_fault(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return f"is a symbolic link (to '{member.linkname}')"
    if member.islnk():
        return f"is a hard link (to '{member.linkname}')"
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or folder"
    return None


def safe_extract(
    tar_path: Path,
    dest: Path,
    max_bytes: int,
    *,
    name: str | None = None,
    max_members: int = DEFAULT_MAX_MEMBERS,
    links: bool = False,
    external_link: Callable[[str, str], bool] | None = None,
    keep_mtime: bool = False,
) -> int:
    """Unpack ``tar_path`` (gzip or plain tar) into ``dest``; return the bytes written.

    ``dest`` must not exist: it is created, and removed again if anything is refused, so it
    is never left half-written. ``name`` is how messages name the archive (its store key or
    URL); the file's own name by default. ``links`` admits symbolic and hard links that stay
    inside ``dest`` (module docstring); ``external_link(member, target)`` returning True skips
    a symbolic link that would lead out instead of refusing the archive. ``keep_mtime`` keeps
    files' modification times (so shipped ``.pyc`` files stay valid).
    """
    archive = name or tar_path.name
    dest.mkdir(parents=True)
    state = _Links(archive, dest, external_link) if links else None
    try:
        return _extract(tar_path, dest, max_bytes, archive, max_members, state, keep_mtime)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


class _Links:
    """The links (and files) written so far, to keep links and writes inside ``dest``."""

    def __init__(
        self, archive: str, dest: Path, external_link: Callable[[str, str], bool] | None
    ) -> None:
        self.archive = archive
        self.dest = dest
        self.external_link = external_link
        self.symlinks: set[tuple[str, ...]] = set()
        self.files: set[tuple[str, ...]] = set()

    def check_path(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        """Refuse a member written through, or over, a link made from this archive."""
        for end in range(1, len(parts) + 1):
            if parts[:end] in self.symlinks:
                link = "/".join(parts[:end])
                how = "replaces" if end == len(parts) else "goes through"
                raise UnsafeArchiveMember(
                    f"archive '{self.archive}': member '{member.name}' {how} the symbolic "
                    f"link '{link}'"
                )

    def symlink(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        target = _link_target(self.archive, member, parts)
        if target is None:
            if self.external_link is not None and self.external_link(
                "/".join(parts), member.linkname
            ):
                return
            raise UnsafeArchiveMember(
                f"archive '{self.archive}': member '{member.name}' is a symbolic link leading "
                f"outside the archive's folder (to '{member.linkname}')"
            )
        path = self.dest.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
        self.symlinks.add(parts)

    def hardlink(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        source = _member_path(self.archive, member.linkname)
        if source not in self.files:
            raise UnsafeArchiveMember(
                f"archive '{self.archive}': member '{member.name}' is a hard link to "
                f"'{member.linkname}', which is not a file earlier in the archive"
            )
        path = self.dest.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.dest.joinpath(*source), path)
        except OSError:  # a file system without hard links: a copy does the same job
            shutil.copy2(self.dest.joinpath(*source), path)
        self.files.add(parts)


def _link_target(archive: str, member: tarfile.TarInfo, parts: tuple[str, ...]) -> str | None:
    """A symbolic link's target, normalised; None when it leads outside the archive's folder."""
    link = member.linkname
    if not link or "\x00" in link:
        raise UnsafeArchiveMember(
            f"archive '{archive}': member '{member.name}' is a symbolic link with an empty or "
            "invalid target"
        )
    if link.startswith("/"):
        return None
    steps = [p for p in link.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(steps) and steps[ups] == "..":
        ups += 1
    if ".." in steps[ups:]:
        raise UnsafeArchiveMember(
            f"archive '{archive}': member '{member.name}' is a symbolic link to '{link}', "
            "which has '..' after a name (only leading '..' parts are allowed)"
        )
    if ups > len(parts) - 1:
        return None
    return "/".join(steps) or "."


def _extract(
    tar_path: Path,
    dest: Path,
    max_bytes: int,
    archive: str,
    max_members: int,
    links: _Links | None,
    keep_mtime: bool,
) -> int:
    total = 0
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            _survey(tar, archive, max_bytes, max_members)
            for member in tar:  # the headers _survey cached
                parts = _member_path(archive, member.name)
                if links is not None:
                    links.check_path(member, parts)
                    if parts and member.issym():
                        links.symlink(member, parts)
                        continue
                    if parts and member.islnk():
                        links.hardlink(member, parts)
                        continue
                fault = _kind_fault(member)
                if fault:
                    raise UnsafeArchiveMember(
                        f"archive '{archive}': member '{member.name}' {fault}"
                    )
                if not parts:
                    continue  # "./" itself
                target = dest.joinpath(*parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.size
                _write_member(tar, member, target)
                if keep_mtime:
                    os.utime(target, (member.mtime, member.mtime))
                if links is not None:
                    links.files.add(parts)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CorruptArchive(f"archive '{archive}' is not a readable .tar.gz: {err}") from err
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as err:
        raise ArchiveLayoutError(
            f"archive '{archive}' has members that are both a file and a folder: {err}"
        ) from err
    return total


def _survey(tar: tarfile.TarFile, archive: str, max_bytes: int, max_members: int) -> None:
    """Read every header before writing anything: an archive over a limit is refused having
    written nothing (150k empty members took 20 s to refuse when counted while writing, and
    left 100k files to delete). The headers stay cached in ``tar`` for the writing pass;
    reading them decompresses the stream once more, a cost only archives that pass pay."""
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > max_members:
            raise ArchiveTooLarge(f"archive '{archive}' has more than {max_members} members")
        if member.isfile():
            total += member.size
            if total > max_bytes:
                raise ArchiveTooLarge(
                    f"archive '{archive}' unpacks to more than {max_bytes} bytes "
                    f"(at member '{member.name}', {member.size} bytes)"
                )


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:  # only for non-regular members, refused above
        raise tarfile.ExtractError(f"cannot read member '{member.name}'")
    written = 0
    with source, open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            out.write(chunk)
    if written != member.size:
        raise tarfile.ReadError(f"member '{member.name}' is truncated")
    if member.mode & 0o100:
        os.chmod(target, 0o755)


def extract_artifact(
    tar_path: Path,
    dest: Path,
    *,
    model: str,
    version: int,
    max_bytes: int,
    name: str | None = None,
) -> int:
    """Unpack an artifact so that ``dest`` is its model folder; return the bytes written.

    ``dest`` must not exist. Accepts ``<model>/config.pbtxt`` + ``<model>/<version>/…`` or
    the same without the ``<model>/`` folder; the only version folder must be ``version``.
    """
    archive = name or tar_path.name
    raw = dest.with_name(dest.name + ".raw")
    size = safe_extract(tar_path, raw, max_bytes, name=archive)
    try:
        folder = _model_folder(raw, model, archive)
        _check_version(folder, version, archive)
        folder.rename(dest)
    finally:
        shutil.rmtree(raw, ignore_errors=True)
    return size


def _model_folder(raw: Path, model: str, archive: str) -> Path:
    top = {p.name: p for p in raw.iterdir()}
    nested = top.get(model)
    at_top = "config.pbtxt" in top or any(
        parse_version(n) is not None and p.is_dir() for n, p in top.items() if n != model
    )
    if nested is not None and nested.is_dir() and not at_top:
        # .modelyard/ holds the artifact's manifest and test cases (docs/deploy.md)
        others = sorted(n for n in top if n not in (model, ARTIFACT_METADATA_FOLDER))
        if others:  # an ensemble's composing models: served from their own artifacts
            logger.debug(
                "archive '%s': serving '%s/'; %s beside it are served from their own artifacts",
                archive,
                model,
                others,
            )
        return nested
    if not top:
        raise ArchiveLayoutError(f"archive '{archive}' is empty")
    if not at_top:
        raise ArchiveLayoutError(
            f"archive '{archive}' holds {sorted(top)}; expected '{model}/' with config.pbtxt and "
            "a version folder, or config.pbtxt and a version folder at its top"
        )
    return raw


def _check_version(folder: Path, version: int, archive: str) -> None:
    found = sorted(
        int(p.name) for p in folder.iterdir() if p.is_dir() and parse_version(p.name) is not None
    )
    if found != [version]:
        holds = ", ".join(f"'{v}/'" for v in found) or "no version folder"
        raise ArchiveLayoutError(
            f"archive '{archive}' holds {holds}, but its name says version {version}: "
            f"an artifact holds exactly its own version folder '{version}/'"
        )
