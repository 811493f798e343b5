"""safe_extract refuses hostile archives before writing outside the target; layouts are checked."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.store import _archive
from modelyard.store._archive import (
    ArchiveLayoutError,
    ArchiveTooLarge,
    CorruptArchive,
    UnsafeArchiveMember,
    extract_artifact,
    safe_extract,
)
from tests.unit.store.archives import model_artifact, targz, targz_with

MiB = 1 << 20


def write(tmp_path: Path, data: bytes, name: str = "m_1.tar.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_extracts_files_and_folders(tmp_path: Path) -> None:
    tar = write(tmp_path, targz({"./m/config.pbtxt": b"{}", "m/1/model.onnx": b"abc"}, dirs=("m",)))
    size = safe_extract(tar, tmp_path / "out", MiB)
    assert size == 5
    assert (tmp_path / "out/m/1/model.onnx").read_bytes() == b"abc"
    assert (tmp_path / "out/m/config.pbtxt").read_bytes() == b"{}"


def _info(name: str, kind: bytes, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_info("../x", tarfile.REGTYPE), "leads outside"),
        (_info("m/../../x", tarfile.REGTYPE), "leads outside"),
        (_info("/etc/x", tarfile.REGTYPE), "absolute path"),
        (_info("m/passwd", tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
        (_info("m/inside", tarfile.SYMTYPE, linkname="config.pbtxt"), "symbolic link"),
        (_info("m/hard", tarfile.LNKTYPE, linkname="../../outside"), "hard link"),
        (_info("m/dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
        (_info("m/blk", tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
        (_info("m/fifo", tarfile.FIFOTYPE), "FIFO"),
    ],
)
def test_refuses_hostile_members(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    tar = write(tmp_path, targz_with(member), "evil_1.tar.gz")
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveMember, match=message) as err:
        safe_extract(tar, dest, MiB, name="s3://bucket/evil_1.tar.gz")
    assert "s3://bucket/evil_1.tar.gz" in str(err.value)
    assert member.name in str(err.value)
    assert isinstance(err.value, ConfigError)
    assert not dest.exists()  # nothing half-written is left
    assert not (tmp_path / "x").exists()


def test_refuses_content_over_the_limit_before_writing_it(tmp_path: Path) -> None:
    # 64 MiB of zeros compresses to ~64 KiB: the limit applies to what it unpacks to
    tar = write(tmp_path, targz({"m/1/model.onnx": bytes(64 * MiB)}))
    assert tar.stat().st_size < MiB
    with pytest.raises(ArchiveTooLarge, match=r"m_1\.tar\.gz.*more than 1048576 bytes"):
        safe_extract(tar, tmp_path / "out", MiB)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("over", ["members", "bytes"])
def test_an_archive_over_a_limit_is_refused_before_any_member_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, over: str
) -> None:
    """Limits are checked on the headers first: a 150k-member archive used to write 100k
    files (20 s) before it was refused."""
    files = {f"m/1/f{i}": b"x" * 100 for i in range(20)}
    tar = write(tmp_path, targz(files))
    written: list[str] = []
    real = _archive._write_member

    def spy(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        written.append(member.name)
        real(tar, member, target)

    monkeypatch.setattr(_archive, "_write_member", spy)
    limits = {"max_members": 10} if over == "members" else {"max_bytes": 1500}
    with pytest.raises(ArchiveTooLarge, match="more than"):
        safe_extract(tar, tmp_path / "out", **({"max_bytes": MiB} | limits))  # type: ignore[arg-type]
    assert written == []
    assert not (tmp_path / "out").exists()
    safe_extract(tar, tmp_path / "ok", MiB)  # within the limits: every member written once
    assert sorted(written) == sorted(files)


@pytest.mark.parametrize(
    "data",
    [
        b"not a tarball at all",
        gzip.compress(b"not a tar inside a gzip" * 100),
        targz({"m/1/model.onnx": bytes(range(256)) * 400})[:-200],  # truncated gzip
        b"\x1f\x8b\x08\x00" + b"\x00" * 60,  # gzip magic, garbage after
    ],
    ids=["not-gzip", "gzip-not-tar", "truncated", "corrupt-gzip"],
)
def test_corrupt_archives_are_clear_errors(tmp_path: Path, data: bytes) -> None:
    tar = write(tmp_path, data)
    with pytest.raises(CorruptArchive, match=r"archive 'm_1\.tar\.gz' is not a readable \.tar\.gz"):
        safe_extract(tar, tmp_path / "out", MiB)
    assert not (tmp_path / "out").exists()


def test_truncated_member_data_is_corrupt(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("m/1/model.onnx")
        info.size = 10_000
        tar.addfile(info, io.BytesIO(bytes(10_000)))
    tar_path = write(tmp_path, gzip.compress(raw.getvalue()[:4096]))
    with pytest.raises(CorruptArchive):
        safe_extract(tar_path, tmp_path / "out", MiB)


def test_executable_bit_kept_and_setuid_dropped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("m/1/run.sh")
        info.size = 2
        info.mode = 0o4755
        tar.addfile(info, io.BytesIO(b"#!"))
    tar_path = write(tmp_path, buf.getvalue())
    safe_extract(tar_path, tmp_path / "out", MiB)
    assert (tmp_path / "out/m/1/run.sh").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize("nested", [True, False], ids=["model-folder", "sagemaker-flat"])
def test_extract_artifact_layouts(tmp_path: Path, nested: bool) -> None:
    tar = write(tmp_path, model_artifact("m", 3, b"w3", nested=nested), "m_3.tar.gz")
    dest = tmp_path / "entry"
    extract_artifact(tar, dest, model="m", version=3, max_bytes=MiB)
    assert sorted(p.name for p in dest.iterdir()) == ["3", "config.pbtxt", "labels.txt"]
    assert (dest / "3/model.onnx").read_bytes() == b"w3"
    assert not (tmp_path / "entry.raw").exists()


def test_extract_artifact_flat_with_dot_prefix(tmp_path: Path) -> None:
    tar = write(tmp_path, targz({"./config.pbtxt": b"{}", "./2/model.onnx": b"x"}, dirs=(".",)))
    extract_artifact(tar, tmp_path / "e", model="m", version=2, max_bytes=MiB)
    assert (tmp_path / "e/2/model.onnx").read_bytes() == b"x"


def test_model_named_like_a_number(tmp_path: Path) -> None:
    tar = write(tmp_path, model_artifact("7", 2), "7_2.tar.gz")
    extract_artifact(tar, tmp_path / "e", model="7", version=2, max_bytes=MiB)
    assert (tmp_path / "e/2/model.onnx").is_file()


def test_version_folder_must_match_the_name(tmp_path: Path) -> None:
    tar = write(tmp_path, model_artifact("m", 3), "m_2.tar.gz")
    with pytest.raises(ArchiveLayoutError, match=r"m_2\.tar\.gz.*'3/'.*says version 2"):
        extract_artifact(tar, tmp_path / "e", model="m", version=2, max_bytes=MiB)
    assert not (tmp_path / "e").exists()
    assert not (tmp_path / "e.raw").exists()


def test_two_version_folders_are_refused(tmp_path: Path) -> None:
    tar = write(tmp_path, targz({"m/1/a": b"", "m/2/a": b"", "m/config.pbtxt": b""}))
    with pytest.raises(ArchiveLayoutError, match=r"holds '1/', '2/'"):
        extract_artifact(tar, tmp_path / "e", model="m", version=1, max_bytes=MiB)


def test_wrong_top_folder_is_refused(tmp_path: Path) -> None:
    tar = write(tmp_path, model_artifact("other", 1))
    with pytest.raises(ArchiveLayoutError, match=r"holds \['other'\]; expected 'm/'"):
        extract_artifact(tar, tmp_path / "e", model="m", version=1, max_bytes=MiB)


def test_empty_archive_is_refused(tmp_path: Path) -> None:
    tar = write(tmp_path, targz({}, dirs=("m",)))
    with pytest.raises(ArchiveLayoutError):
        extract_artifact(tar, tmp_path / "e", model="m", version=1, max_bytes=MiB)
