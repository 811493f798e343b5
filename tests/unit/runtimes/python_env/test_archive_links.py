"""safe_extract(links=True): links that stay inside are made; every way out is refused."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from modelyard.store._archive import UnsafeArchiveMember, safe_extract
from tests.factories.envs import member, tar_with

MiB = 1 << 20


def _write(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    path = tmp_path / "env.tar.gz"
    path.write_bytes(tar_with(members))
    return path


def test_links_inside_the_archive_are_made(tmp_path: Path) -> None:
    tar = _write(
        tmp_path,
        [
            (member("bin/python3.11"), b"#!interp"),
            (member("bin/python", tarfile.SYMTYPE, linkname="python3.11"), None),
            (member("lib/libx.so.1"), b"lib"),
            (member("lib/libx.so", tarfile.SYMTYPE, linkname="./libx.so.1"), None),
            (member("share/l/linux", tarfile.SYMTYPE, linkname="../../lib/libx.so.1"), None),
            (member("lib64", tarfile.SYMTYPE, linkname="lib"), None),
            (member("bin/python-hard", tarfile.LNKTYPE, linkname="bin/python3.11"), None),
        ],
    )
    dest = tmp_path / "out"
    safe_extract(tar, dest, MiB, links=True)
    assert os.readlink(dest / "bin/python") == "python3.11"
    assert (dest / "bin/python").read_bytes() == b"#!interp"
    assert os.readlink(dest / "lib/libx.so") == "libx.so.1"
    assert (dest / "share/l/linux").read_bytes() == b"lib"
    assert (dest / "lib64/libx.so.1").read_bytes() == b"lib"
    assert (dest / "bin/python-hard").stat().st_ino == (dest / "bin/python3.11").stat().st_ino


def test_links_stay_refused_by_default(tmp_path: Path) -> None:
    tar = _write(tmp_path, [(member("bin/python", tarfile.SYMTYPE, linkname="python3"), None)])
    with pytest.raises(UnsafeArchiveMember, match="symbolic link"):
        safe_extract(tar, tmp_path / "out", MiB)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(member("bin/x", tarfile.SYMTYPE, linkname="../../outside"), None)], "leading outside"),
        ([(member("x", tarfile.SYMTYPE, linkname=".."), None)], "leading outside"),
        ([(member("lib/p", tarfile.SYMTYPE, linkname="/etc/passwd"), None)], "leading outside"),
        (
            [(member("lib/z", tarfile.SYMTYPE, linkname="p/../../etc"), None)],
            "'..' after a name",
        ),
        (
            # a link to the archive's top is fine; writing through it is not
            [
                (member("lib/up", tarfile.SYMTYPE, linkname=".."), None),
                (member("lib/up/bin/evil"), b"x"),
            ],
            "goes through the symbolic link 'lib/up'",
        ),
        (
            [
                (member("bin/tool", tarfile.SYMTYPE, linkname="real"), None),
                (member("bin/tool"), b"overwrite what the link points at"),
            ],
            "replaces the symbolic link 'bin/tool'",
        ),
        ([(member("bin/h", tarfile.LNKTYPE, linkname="../../outside"), None)], "leads outside"),
        ([(member("bin/h", tarfile.LNKTYPE, linkname="/etc/passwd"), None)], "absolute path"),
        (
            [(member("bin/h", tarfile.LNKTYPE, linkname="bin/not-there"), None)],
            "not a file earlier in the archive",
        ),
        ([(member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None)], "device"),
    ],
)
def test_every_way_out_is_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    base = tmp_path / "deep" / "er"
    base.mkdir(parents=True)
    tar = _write(base, [(member("bin/python3.11"), b"x"), *members])
    dest = base / "out"
    with pytest.raises(UnsafeArchiveMember, match=message):
        safe_extract(tar, dest, MiB, links=True)
    assert not dest.exists()
    assert sorted(p.name for p in base.iterdir()) == ["env.tar.gz"]
    assert not (tmp_path / "outside").exists()


def test_external_link_callback_skips_what_it_accepts(tmp_path: Path) -> None:
    tar = _write(
        tmp_path,
        [
            (member("bin/python", tarfile.SYMTYPE, linkname="/usr/bin/python3"), None),
            (member("lib/site.py"), b"x"),
        ],
    )
    seen: list[tuple[str, str]] = []

    def skip(name: str, target: str) -> bool:
        seen.append((name, target))
        return True

    safe_extract(tar, tmp_path / "out", MiB, links=True, external_link=skip)
    assert seen == [("bin/python", "/usr/bin/python3")]
    assert not (tmp_path / "out/bin/python").is_symlink()
    assert (tmp_path / "out/lib/site.py").read_bytes() == b"x"


def test_keep_mtime(tmp_path: Path) -> None:
    tar = _write(tmp_path, [(member("lib/os.py", mtime=1_600_000_000), b"x")])
    safe_extract(tar, tmp_path / "out", MiB, links=True, keep_mtime=True)
    assert (tmp_path / "out/lib/os.py").stat().st_mtime == 1_600_000_000
