"""Writing to local and in-memory stores (the deploy loop): exclusive atomic publishing,
moves, stat; the reserved .modelyard/ folder is never a model."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from modelyard.store import (
    LocalStore,
    MemoryStore,
    ObjectExists,
    StoreError,
    WritableStore,
    catalog,
    open_writable_store,
)
from modelyard.store.base import StoreObject
from tests.unit.store.archives import targz


def _file(path: Path, data: bytes) -> tuple[Path, str]:
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> WritableStore:
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        return open_writable_store(str(root))
    return MemoryStore()


def test_publish_stat_read_and_refuse_to_overwrite(store: WritableStore, tmp_path: Path) -> None:
    source, digest = _file(tmp_path / "a", b"artifact bytes")
    moved: list[int] = []
    store.publish("m_1.tar.gz", source, sha256=digest, progress=moved.append)
    assert sum(moved) == len(b"artifact bytes")
    obj = store.stat("m_1.tar.gz")
    assert obj is not None and obj.size == 14 and obj.modified is not None
    assert store.stat("m_2.tar.gz") is None
    other, other_digest = _file(tmp_path / "b", b"other bytes")
    with pytest.raises(ObjectExists, match=r"'m_1\.tar\.gz' already exists"):
        store.publish("m_1.tar.gz", other, sha256=other_digest)
    dest = tmp_path / "back"
    store.download("m_1.tar.gz", dest)
    assert dest.read_bytes() == b"artifact bytes"
    assert [o.key for o in store.list()] == ["m_1.tar.gz"]  # no temporary file left


def test_small_objects_and_moves(store: WritableStore) -> None:
    store.write_bytes("m_1.tar.gz.sha256", b"one")
    store.write_bytes("m_1.tar.gz.sha256", b"two")  # replaced
    assert store.read_bytes("m_1.tar.gz.sha256") == b"two"
    store.move("m_1.tar.gz.sha256", ".modelyard/retired/m_1.tar.gz.sha256")
    assert store.stat("m_1.tar.gz.sha256") is None
    assert store.read_bytes(".modelyard/retired/m_1.tar.gz.sha256") == b"two"


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/./b"])
def test_unsafe_keys_are_refused(store: WritableStore, tmp_path: Path, key: str) -> None:
    source, digest = _file(tmp_path / "a", b"x")
    with pytest.raises(StoreError, match="unsafe key"):
        store.publish(key, source, sha256=digest)


def test_local_publish_is_exclusive_across_threads(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    sources = [_file(tmp_path / f"src{i}", bytes([i]) * 100_000) for i in range(8)]
    won: list[int] = []
    lost: list[int] = []

    def push(i: int) -> None:
        try:
            store.publish("m_1.tar.gz", sources[i][0], sha256=sources[i][1])
            won.append(i)
        except ObjectExists:
            lost.append(i)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert (tmp_path / "m_1.tar.gz").read_bytes() == sources[won[0]][0].read_bytes()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_reserved_folder_and_temporary_files_are_no_models(tmp_path: Path) -> None:
    archive = targz({"m/config.pbtxt": b'backend: "onnxruntime"', "m/2/model.onnx": b"x"})
    objects = [
        StoreObject("m_1.tar.gz", len(archive), "e1"),
        StoreObject(".modelyard/retired/m_2.tar.gz", len(archive), "e2"),
        StoreObject(".modelyard/retired/m_2.tar.gz.sha256", 10, "e3"),
        StoreObject("m_1.tar.gz.sha256", 10, "e4"),
        StoreObject(".m_3.tar.gz.123-abcd.tmp", 10, "e5"),
    ]
    models = catalog(objects)
    assert list(models) == ["m"]
    assert list(models["m"].versions) == [1]


def test_modified_takes_no_part_in_comparisons() -> None:
    assert StoreObject("k", 1, "e", 1.0) == StoreObject("k", 1, "e", 2.0)


def test_an_artifacts_metadata_folder_is_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from modelyard.store._archive import extract_artifact

    archive = tmp_path / "m_2.tar.gz"
    archive.write_bytes(
        targz(
            {
                ".modelyard/manifest.json": b"{}",
                ".modelyard/tests/cases.yaml": b"cases: []",
                "m/config.pbtxt": b'backend: "onnxruntime"',
                "m/2/model.onnx": b"x",
            }
        )
    )
    extract_artifact(archive, tmp_path / "out", model="m", version=2, max_bytes=1 << 20)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["2", "config.pbtxt"]
    assert "ignoring" not in caplog.text
