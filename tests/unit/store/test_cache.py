"""ModelCache: Triton folders out of any store, content-keyed reuse, LRU within a budget, pins."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from modelyard.errors import VersionNotFound
from modelyard.repository import load_entry_config, scan_model
from modelyard.store import (
    ArchiveLayoutError,
    LocalStore,
    MemoryStore,
    ModelCache,
    StoreModel,
    catalog,
)
from modelyard.store.cache import TooLargeForCache
from tests.factories.onnx_models import add_sub
from tests.unit.store.archives import model_artifact

MiB = 1 << 20

CONFIG = """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ], label_filename: "labels.txt" },
  { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
"""


def folder_objects(name: str = "add_sub", versions: tuple[int, ...] = (1, 2)) -> dict[str, bytes]:
    objects = {
        f"{name}/config.pbtxt": CONFIG.replace("add_sub", name).encode(),
        f"{name}/labels.txt": b"a\nb\n",
    }
    for v in versions:
        objects[f"{name}/{v}/model.onnx"] = add_sub()
    return objects


def model_of(store: MemoryStore | LocalStore, name: str) -> StoreModel:
    return catalog(store.list())[name]


def tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_folder_model_from_a_remote_store_loads_as_a_triton_folder(tmp_path: Path) -> None:
    store = MemoryStore(folder_objects())
    cache = ModelCache(tmp_path / "cache", 100 * MiB)
    path = cache.materialize(store, model_of(store, "add_sub"))
    assert path.name == "add_sub"
    assert tree(path) == ["1/model.onnx", "2/model.onnx", "config.pbtxt", "labels.txt"]
    assert not any(p.is_symlink() for p in path.rglob("*"))
    entry = scan_model(path)
    assert entry.versions == (1, 2)
    assert entry.config_path == path / "config.pbtxt"
    config = load_entry_config(entry)  # the label file resolves inside the model folder
    assert config.name == "add_sub"
    assert cache.stats.downloads == 4
    assert cache.stats.bytes_downloaded == sum(len(b) for b in store.objects.values())


def test_newest_artifact_governs_and_versions_can_be_picked(tmp_path: Path) -> None:
    store = MemoryStore({f"m_{v}.tar.gz": model_artifact("m", v, b"w%d" % v) for v in (1, 2, 3)})
    model = model_of(store, "m")
    cache = ModelCache(tmp_path / "cache", 100 * MiB)

    path = cache.materialize(store, model, versions=[1])
    assert tree(path) == ["1/model.onnx", "config.pbtxt", "labels.txt"]
    assert (path / "labels.txt").read_text() == "labels of version 3\n"  # the newest's
    assert (path / "1/model.onnx").read_bytes() == b"w1"
    assert sorted(store.fetched) == ["m_1.tar.gz", "m_3.tar.gz"]  # 3 for its config only

    config_only = cache.materialize(store, model, versions=())
    assert tree(config_only) == ["config.pbtxt", "labels.txt"]

    everything = cache.materialize(store, model)
    assert scan_model(everything).versions == (1, 2, 3)
    assert store.fetched.count("m_3.tar.gz") == 1


def test_folder_and_artifacts_merge(tmp_path: Path) -> None:
    objects = folder_objects("m", versions=(1, 2))
    objects["m_2.tar.gz"] = model_artifact("m", 2, b"from-artifact")
    store = MemoryStore(objects)
    cache = ModelCache(tmp_path / "cache", 100 * MiB)
    path = cache.materialize(store, model_of(store, "m"))
    assert tree(path) == ["1/model.onnx", "2/model.onnx", "config.pbtxt", "labels.txt"]
    assert (path / "2/model.onnx").read_bytes() == b"from-artifact"  # the artifact wins
    assert (path / "labels.txt").read_text() == "labels of version 2\n"  # and governs


def test_unknown_version(tmp_path: Path) -> None:
    store = MemoryStore(folder_objects())
    cache = ModelCache(tmp_path / "cache", MiB)
    with pytest.raises(VersionNotFound):
        cache.materialize(store, model_of(store, "add_sub"), versions=[7])


def test_a_restart_downloads_nothing(tmp_path: Path) -> None:
    store = MemoryStore(folder_objects() | {"m_4.tar.gz": model_artifact("m", 4)})
    first = ModelCache(tmp_path / "cache", 100 * MiB)
    paths = [first.materialize(store, model_of(store, n)) for n in ("add_sub", "m")]
    assert first.stats.downloads == 5

    again = ModelCache(tmp_path / "cache", 100 * MiB)
    assert [again.materialize(store, model_of(store, n)) for n in ("add_sub", "m")] == paths
    assert again.stats.downloads == 0
    assert again.stats.hits == 4  # shared files, two version folders, one artifact
    assert again.size_bytes == first.size_bytes


def test_a_changed_object_is_downloaded_again(tmp_path: Path) -> None:
    store = MemoryStore(folder_objects())
    cache = ModelCache(tmp_path / "cache", 100 * MiB)
    before = cache.materialize(store, model_of(store, "add_sub"))
    store.objects["add_sub/2/model.onnx"] = add_sub(dims=[4])
    after = cache.materialize(store, model_of(store, "add_sub"))
    assert after != before
    assert cache.stats.downloads == 5  # only the changed version folder's one file
    assert (after / "2/model.onnx").read_bytes() == add_sub(dims=[4])
    assert (before / "2/model.onnx").read_bytes() == add_sub()  # in use: left alone


def artifacts(*names: str, size: int = 1000) -> MemoryStore:
    return MemoryStore({f"{n}_1.tar.gz": model_artifact(n, 1, bytes(size)) for n in names})


def entry_count(cache: ModelCache) -> int:
    return len(list((cache.root / "entries").iterdir()))


def test_least_recently_used_entries_are_evicted_over_the_budget(tmp_path: Path) -> None:
    store = artifacts("a", "b", "c")
    models = catalog(store.list())
    cache = ModelCache(tmp_path / "cache", max_bytes=2500)  # room for two ~1050-byte models
    for name in ("a", "b"):
        with cache.materialized(store, models[name]):
            pass
    with cache.materialized(store, models["a"]):  # a is now more recent than b
        pass
    with cache.materialized(store, models["c"]):
        pass
    assert cache.stats.evictions == 1
    assert cache.size_bytes <= 2500
    assert entry_count(cache) == 2
    store.fetched.clear()
    for name in ("a", "c"):  # kept
        with cache.materialized(store, models[name]):
            pass
    assert store.fetched == []
    with cache.materialized(store, models["b"]) as path:  # evicted: fetched again
        assert scan_model(path).versions == (1,)
    assert store.fetched == ["b_1.tar.gz"]


def test_pinned_entries_are_never_evicted(tmp_path: Path) -> None:
    store = artifacts("a", "b", "c")
    models = catalog(store.list())
    cache = ModelCache(tmp_path / "cache", max_bytes=1500)  # room for one
    a = cache.materialize(store, models["a"])
    b = cache.materialize(store, models["b"])
    assert cache.stats.evictions == 0  # over budget, but both in use
    assert (a / "1/model.onnx").is_file() and (b / "1/model.onnx").is_file()
    cache.release(a)
    assert cache.stats.evictions == 1  # a goes as soon as nothing uses it
    assert not a.exists()
    assert (b / "1/model.onnx").is_file()
    with cache.materialized(store, models["c"]):
        assert (b / "1/model.onnx").is_file()
    cache.release(b)
    with pytest.raises(ValueError, match="not a folder this cache materialized"):
        cache.release(b)


def test_a_smaller_budget_applies_at_start(tmp_path: Path) -> None:
    store = artifacts("a", "b")
    models = catalog(store.list())
    cache = ModelCache(tmp_path / "cache", max_bytes=10 * MiB)
    for name in ("a", "b"):
        with cache.materialized(store, models[name]):
            pass
    smaller = ModelCache(tmp_path / "cache", max_bytes=1500)
    assert smaller.stats.evictions == 1
    assert entry_count(smaller) == 1
    assert len(list((tmp_path / "cache/views").iterdir())) == 1  # its view went with it


def test_half_written_leftovers_are_cleaned_at_start(tmp_path: Path) -> None:
    store = artifacts("a")
    cache = ModelCache(tmp_path / "cache", 10 * MiB)
    with cache.materialized(store, model_of(store, "a")):
        pass
    (tmp_path / "cache/tmp/entry-crashed/entry/data").mkdir(parents=True)
    (tmp_path / "cache/entries/no-meta/data").mkdir(parents=True)
    again = ModelCache(tmp_path / "cache", 10 * MiB)
    assert list((tmp_path / "cache/tmp").iterdir()) == []
    assert not (tmp_path / "cache/entries/no-meta").exists()
    with again.materialized(store, model_of(store, "a")):
        pass
    assert again.stats.downloads == 0


def test_a_bad_artifact_leaves_nothing_behind(tmp_path: Path) -> None:
    store = MemoryStore({"m_2.tar.gz": model_artifact("m", 3)})
    cache = ModelCache(tmp_path / "cache", 10 * MiB)
    with pytest.raises(ArchiveLayoutError, match=r"memory://memory/m_2\.tar\.gz"):
        cache.materialize(store, model_of(store, "m"))
    assert entry_count(cache) == 0
    assert list((tmp_path / "cache/tmp").iterdir()) == []


def test_concurrent_materialize_downloads_each_object_once(tmp_path: Path) -> None:
    store = MemoryStore(folder_objects() | {"m_1.tar.gz": model_artifact("m", 1)})
    models = catalog(store.list())
    cache = ModelCache(tmp_path / "cache", 100 * MiB)
    paths: list[Path] = []
    barrier = threading.Barrier(8)

    def work(name: str) -> None:
        barrier.wait()
        paths.append(cache.materialize(store, models[name]))

    threads = [threading.Thread(target=work, args=("add_sub" if i % 2 else "m",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(store.fetched) == sorted(store.objects)
    assert len(set(paths)) == 2
    for path in set(paths):
        cache.release(path)


def test_local_folder_models_are_served_in_place(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for key, data in folder_objects().items():
        (repo / key).parent.mkdir(parents=True, exist_ok=True)
        (repo / key).write_bytes(data)
    store = LocalStore(repo)
    cache = ModelCache(tmp_path / "cache", MiB)
    with cache.materialized(store, model_of(store, "add_sub")) as path:
        assert path == repo / "add_sub"
    assert cache.stats.downloads == 0


def test_local_store_mixing_folder_and_artifacts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for key, data in folder_objects("m", versions=(1,)).items():
        (repo / key).parent.mkdir(parents=True, exist_ok=True)
        (repo / key).write_bytes(data)
    (repo / "m_2.tar.gz").write_bytes(model_artifact("m", 2, b"two"))
    store = LocalStore(repo)
    cache = ModelCache(tmp_path / "cache", MiB)
    with cache.materialized(store, model_of(store, "m")) as path:
        assert scan_model(path).versions == (1, 2)
        assert (path / "1").is_symlink()  # the local version folder, in place
        assert (path / "1/model.onnx").read_bytes() == add_sub()
        assert (path / "2/model.onnx").read_bytes() == b"two"
        assert (path / "labels.txt").read_text() == "labels of version 2\n"
    assert cache.stats.downloads == 1  # the artifact, copied to be unpacked


def test_local_store_lists_files_and_follows_linked_folders(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "m/1").mkdir(parents=True)
    (repo / "m/1/model.onnx").write_bytes(b"abc")
    (repo / "m/loop").symlink_to(repo / "m")  # a cycle must not hang the walk
    os.symlink(repo / "m", repo / "alias")
    assert sorted(o.key for o in LocalStore(repo).list()) == [
        "alias/1/model.onnx",
        "m/1/model.onnx",
    ]


def test_fetch_tells_whether_this_call_downloaded(tmp_path: Path) -> None:
    """Per call, not from the cache-wide counter that other threads move meanwhile."""
    store = MemoryStore(
        {"a_1.tar.gz": model_artifact("a", 1), "b_1.tar.gz": model_artifact("b", 1)}
    )
    models = catalog(store.list())
    cache = ModelCache(tmp_path / "cache", 1 << 30)
    path_a, downloaded = cache.fetch(store, models["a"])
    assert downloaded
    cache.fetch(store, models["b"])  # another model downloaded in between
    again, downloaded = cache.fetch(store, models["a"])
    assert again == path_a and not downloaded


@pytest.mark.parametrize("layout", ["artifact", "folder"])
def test_what_cannot_fit_the_cache_is_refused_before_it_is_downloaded(
    tmp_path: Path, layout: str
) -> None:
    """The listing says how big a model is: a 734 MB artifact used to be downloaded whole
    before the quota refused it."""
    rng = os.urandom  # incompressible: the artifact is as big as its content
    if layout == "artifact":
        store = MemoryStore({"big_1.tar.gz": model_artifact("big", 1, rng(64 * 1024))})
    else:
        store = MemoryStore(folder_objects("big") | {"big/1/weights.bin": rng(64 * 1024)})
    cache = ModelCache(tmp_path / "cache", max_bytes=32 * 1024)
    with pytest.raises(TooLargeForCache, match=r"more than the model cache's 32768 bytes"):
        cache.materialize(store, model_of(store, "big"))
    assert store.fetched == []
    assert cache.stats.downloads == 0
    assert entry_count(cache) == 0
