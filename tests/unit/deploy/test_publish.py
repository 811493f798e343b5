"""push, promote, rollback and ls on local and in-memory stores (S3: tests/integration)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelyard.deploy import (
    ArtifactError,
    ChecksumMismatch,
    NothingToRollBack,
    PackageOptions,
    VersionExists,
    list_store,
    package,
    promote,
    push,
    rollback,
)
from modelyard.errors import VersionNotFound
from modelyard.store import LocalStore, MemoryStore, WritableStore, catalog
from tests.unit.deploy.models import python_model


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[int, Path]:
    """Versions 1, 2 and 3 of model 'm', and a different build of version 2."""
    model = python_model(tmp_path / "repo", "m", versions=(1, 2, 3))
    out = {
        v: package(model, PackageOptions(output=tmp_path / "dist", version=v)).artifact
        for v in (1, 2, 3)
    }
    (model / "2" / "model.py").write_text("# changed\n" + (model / "2" / "model.py").read_text())
    out[-2] = package(model, PackageOptions(output=tmp_path / "other", version=2)).artifact
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> WritableStore:
    if request.param == "memory":
        return MemoryStore(name="prod")
    (tmp_path / "store").mkdir()
    return LocalStore(tmp_path / "store")


def _served(store: WritableStore) -> int | None:
    return catalog(store.list())["m"].latest


def test_push_is_idempotent_and_versions_are_immutable(
    store: WritableStore, artifacts: dict[int, Path]
) -> None:
    first = push(artifacts[2], store)
    assert first.status == "published" and first.key == "m_2.tar.gz"
    assert store.read_bytes("m_2.tar.gz.sha256").decode() == f"{first.sha256}  m_2.tar.gz\n"
    assert push(artifacts[2], store).status == "unchanged"
    with pytest.raises(VersionExists, match="versions are immutable"):
        push(artifacts[-2], store)
    assert store.read_bytes("m_2.tar.gz") == artifacts[2].read_bytes()


def test_push_checks_the_expected_sha256_and_the_manifest(
    store: WritableStore, artifacts: dict[int, Path], tmp_path: Path
) -> None:
    with pytest.raises(ChecksumMismatch, match="not the artifact that was tested"):
        push(artifacts[1], store, expected_sha256="0" * 64)
    renamed = tmp_path / "m_9.tar.gz"
    shutil.copyfile(artifacts[1], renamed)
    with pytest.raises(ArtifactError, match="must keep the name it was built with"):
        push(renamed, store)
    assert store.list() == []


def test_an_artifact_without_its_record_is_hashed_once(
    store: WritableStore, artifacts: dict[int, Path]
) -> None:
    push(artifacts[1], store)
    store.move("m_1.tar.gz.sha256", "elsewhere")  # a push cut short before its record
    assert push(artifacts[1], store).status == "unchanged"
    assert store.stat("m_1.tar.gz.sha256") is not None


def test_promote_checks_bytes_against_the_record_and_the_tested_sha256(
    store: WritableStore, artifacts: dict[int, Path]
) -> None:
    staging = MemoryStore(name="staging")
    tested = push(artifacts[1], staging).sha256
    result = promote("m", 1, staging, store, expected_sha256=tested)
    assert (
        result.status == "published" and store.read_bytes("m_1.tar.gz") == artifacts[1].read_bytes()
    )
    assert promote("m", 1, staging, store).status == "unchanged"
    push(artifacts[2], staging)
    with pytest.raises(ChecksumMismatch, match="the expected sha256"):
        promote("m", 2, staging, store, expected_sha256=tested)
    staging.objects["m_2.tar.gz"] = artifacts[3].read_bytes()  # changed behind the record
    with pytest.raises(ChecksumMismatch, match="its record"):
        promote("m", 2, staging, store)
    with pytest.raises(VersionNotFound, match="is not in the store"):
        promote("m", 7, staging, store)
    assert store.stat("m_2.tar.gz") is None


def test_rollback_retires_newer_versions_and_can_bring_them_back(
    store: WritableStore, artifacts: dict[int, Path]
) -> None:
    for v in (1, 2, 3):
        push(artifacts[v], store)
    result = rollback("m", store)
    assert (result.version, result.retired, result.restored) == (2, [3], False)
    assert _served(store) == 2
    assert store.stat(".modelyard/retired/m_3.tar.gz") is not None
    assert store.stat(".modelyard/retired/m_3.tar.gz.sha256") is not None
    assert b'"rolled_back_to": 2' in store.read_bytes(".modelyard/retired/m_3.tar.gz.json")
    with pytest.raises(VersionExists, match="retired"):
        push(artifacts[3], store)
    result = rollback("m", store, to=1)
    assert (result.version, result.retired) == (1, [2])
    with pytest.raises(NothingToRollBack, match=r"only version 1 is live, .* \(retired: 2, 3\)"):
        rollback("m", store)
    result = rollback("m", store, to=3)  # a retired version comes back, on top
    assert (result.version, result.retired, result.restored) == (3, [], True)
    assert _served(store) == 3
    with pytest.raises(VersionNotFound):
        rollback("m", store, to=9)


def test_ls_shows_states_sizes_and_hashes(store: WritableStore, artifacts: dict[int, Path]) -> None:
    published = {v: push(artifacts[v], store).sha256 for v in (1, 2, 3)}
    rollback("m", store)
    rows = list_store(store)
    assert [(r.version, r.state) for r in rows] == [(1, "live"), (2, "serving")]
    assert rows[0].sha256 == published[1] and rows[0].size == artifacts[1].stat().st_size
    rows = list_store(store, retired=True)
    assert [(r.version, r.state) for r in rows] == [(1, "live"), (2, "serving"), (3, "retired")]
    assert rows[2].sha256 == published[3]


def test_ls_shows_folder_models_too(tmp_path: Path) -> None:
    python_model(tmp_path / "store", "folder_model", versions=(1, 2))
    rows = list_store(str(tmp_path / "store"))
    assert [(r.model, r.version, r.state, r.sha256) for r in rows] == [
        ("folder_model", 1, "folder", ""),
        ("folder_model", 2, "folder", ""),
    ]
    assert rows[0].modified is not None
