"""The artifact file: reproducible writing, verification against the manifest, test files."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from modelyard.deploy.artifact import (
    ArtifactError,
    Manifest,
    Member,
    extract_tests,
    read_manifest,
    split_artifact_name,
    verify_artifact,
    write_artifact,
)


def _write(dest: Path, files: dict[str, bytes]) -> Manifest:
    import hashlib

    manifest = Manifest(
        model="m",
        version=1,
        files={k: (hashlib.sha256(v).hexdigest(), len(v)) for k, v in files.items()},
    )
    write_artifact([Member(k, data=v) for k, v in files.items()], manifest, dest)
    return manifest


FILES = {
    "m/config.pbtxt": b'backend: "python"',
    "m/1/model.py": b"x = 1\n",
    ".modelyard/tests/m/cases.yaml": b"cases: []\n",
}


def test_same_members_same_bytes_whatever_the_order_or_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "a" / "m_1.tar.gz", FILES)
    _write(tmp_path / "b" / "m_1.tar.gz", dict(reversed(FILES.items())))
    one = (tmp_path / "a" / "m_1.tar.gz").read_bytes()
    assert one == (tmp_path / "b" / "m_1.tar.gz").read_bytes()
    assert one[4:8] == b"\0\0\0\0"  # gzip header time
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    _write(tmp_path / "c" / "m_1.tar.gz", FILES)
    with tarfile.open(tmp_path / "c" / "m_1.tar.gz") as tar:
        assert {i.mtime for i in tar} == {1700000000}
        assert "m/1" in tar.getnames()  # parent folders are members


def test_verify_catches_changed_missing_and_extra_members(tmp_path: Path) -> None:
    path = tmp_path / "m_1.tar.gz"
    manifest = _write(path, FILES)
    assert verify_artifact(path) == manifest
    assert read_manifest(path).files == manifest.files

    def rewrite(files: dict[str, bytes]) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        path.write_bytes(gzip.compress(buf.getvalue()))

    original = {".modelyard/manifest.json": manifest.to_json(), **FILES}
    rewrite({**original, "m/1/model.py": b"x = 2\n"})
    with pytest.raises(ArtifactError, match=r"'m/1/model\.py' does not match its manifest"):
        verify_artifact(path)
    rewrite({k: v for k, v in original.items() if k != "m/config.pbtxt"})
    with pytest.raises(ArtifactError, match=r"lists 'm/config\.pbtxt', which it does not hold"):
        verify_artifact(path)
    rewrite({**original, "m/1/extra.py": b""})
    with pytest.raises(ArtifactError, match=r"'m/1/extra\.py' is not in its manifest"):
        verify_artifact(path)
    rewrite(FILES)
    with pytest.raises(ArtifactError, match="was not written by `modelyard package`"):
        verify_artifact(path)
    path.write_bytes(b"not gzip")
    with pytest.raises(ArtifactError, match="not a readable"):
        verify_artifact(path)


def test_names(tmp_path: Path) -> None:
    assert split_artifact_name(tmp_path / "screen_detection_pipeline_3.tar.gz") == (
        "screen_detection_pipeline",
        3,
    )
    with pytest.raises(ArtifactError, match="not an artifact name"):
        split_artifact_name("model.tar.gz")


def test_extract_tests_writes_only_the_tests(tmp_path: Path) -> None:
    path = tmp_path / "m_1.tar.gz"
    _write(path, {**FILES, ".modelyard/tests/m/data/x.npy": b"npy"})
    assert extract_tests(path, tmp_path / "out") == ["m"]
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*"))
    assert written == ["m", "m/cases.yaml", "m/data", "m/data/x.npy"]


def test_hostile_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m_1.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(".modelyard/tests/../../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    path.write_bytes(buf.getvalue())
    with pytest.raises(ArtifactError, match="leads outside the archive"):
        extract_tests(path, tmp_path / "out")
    assert not (tmp_path / "evil").exists()
