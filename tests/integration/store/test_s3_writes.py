"""Writing to an S3 store (the deploy loop): exclusive, checked publishing; moves; stat."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from modelyard.store import (
    ObjectExists,
    StoreError,
    WritableStore,
    catalog,
    open_writable_store,
)
from modelyard.store import s3 as s3_module
from tests.integration.s3_server import MotoServer

MiB = 1 << 20


def _store(moto_server: MotoServer, bucket: str, prefix: str = "staging") -> WritableStore:
    return open_writable_store(f"s3://{moto_server.host_port}/{bucket}/{prefix}")


def _file(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [10, 11 * MiB + 7])
def test_publish_is_exclusive_and_records_the_checksum(
    moto_server: MotoServer,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    monkeypatch.setattr(s3_module, "PART_BYTES", 5 * MiB)  # S3's smallest: 3 parts
    store = _store(moto_server, bucket)
    source, digest = _file(tmp_path / "a", bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    moved: list[int] = []
    store.publish("m_1.tar.gz", source, sha256=digest, progress=moved.append)
    assert sum(moved) == source.stat().st_size
    head = s3.head_object(Bucket=bucket, Key="staging/m_1.tar.gz")
    assert head["Metadata"]["sha256"] == digest
    obj = store.stat("m_1.tar.gz")
    assert obj is not None and obj.size == source.stat().st_size and obj.modified
    other, other_digest = _file(tmp_path / "b", b"different bytes")
    with pytest.raises(ObjectExists, match=r"m_1\.tar\.gz' already exists"):
        store.publish("m_1.tar.gz", other, sha256=other_digest)
    download = tmp_path / "back"
    store.download("m_1.tar.gz", download)
    assert download.read_bytes() == source.read_bytes()


def test_bytes_that_do_not_match_their_checksum_are_refused(
    moto_server: MotoServer, bucket: str, tmp_path: Path
) -> None:
    store = _store(moto_server, bucket)
    source, _ = _file(tmp_path / "a", b"bytes")
    with pytest.raises(StoreError, match=r"has the sha256 .* it changed"):
        store.publish("m_1.tar.gz", source, sha256="0" * 64)
    assert store.stat("m_1.tar.gz") is None


def test_move_small_objects_and_the_reserved_folder(
    moto_server: MotoServer, bucket: str, tmp_path: Path
) -> None:
    store = _store(moto_server, bucket)
    source, digest = _file(tmp_path / "a", b"model bytes")
    store.publish("m_2.tar.gz", source, sha256=digest)
    store.write_bytes("m_2.tar.gz.sha256", f"{digest}  m_2.tar.gz\n".encode())
    assert store.read_bytes("m_2.tar.gz.sha256").startswith(digest.encode())
    store.move("m_2.tar.gz", ".modelyard/retired/m_2.tar.gz")
    assert store.stat("m_2.tar.gz") is None
    assert store.stat(".modelyard/retired/m_2.tar.gz") is not None
    assert catalog(store.list()) == {}  # retired versions are no model
