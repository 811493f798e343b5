"""Ensembles' artifacts are bundles: split into one artifact per composing model, each the
bytes `modelyard package <step> --version N` writes; pushed and promoted all or nothing,
steps first; rollback leaves the steps alone; nested ensembles split into bundles of their own.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

from modelyard.deploy import (
    ArtifactError,
    Manifest,
    PackageOptions,
    VersionExists,
    composing_models,
    package,
    promote,
    push,
    read_manifest,
    rollback,
    split_bundle,
    verify_artifact,
)
from modelyard.deploy.artifact import unpack_artifact, write_artifact
from modelyard.store import LocalStore, MemoryStore, WritableStore, catalog
from tests.unit.deploy.models import chain, ensemble, python_model


def _names(artifact: Path) -> list[str]:
    with tarfile.open(artifact) as tar:
        return tar.getnames()


def _opts(out: Path, version: int | None = None) -> PackageOptions:
    return PackageOptions(output=out, version=version)


def test_each_step_is_split_as_package_writes_it_alone(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    folder = ensemble(repo)  # pre (-1: version 1), net pinned to 2 of 1, 2, 3
    (repo / "pre" / "labels.txt").write_text("a\n")
    (repo / "pre" / "tests").mkdir()
    (repo / "pre" / "tests" / "cases.yaml").write_text("cases: []\n")
    bundle = package(folder, _opts(tmp_path / "dist")).artifact
    assert bundle is not None
    manifest = verify_artifact(bundle)
    assert composing_models(manifest) == [("pre", 1), ("net", 2)]
    assert manifest.models[0]["steps"] == [
        {"name": "pre", "version": 1},
        {"name": "net", "version": 2},
    ]
    parts = split_bundle(bundle, manifest, tmp_path / "parts")
    assert [(p.key, p.used_by) for p in parts] == [
        ("pre_1.tar.gz", "pipeline"),
        ("net_2.tar.gz", "pipeline"),
    ]
    assert _names(parts[0].path) == [
        ".modelyard",
        ".modelyard/manifest.json",
        ".modelyard/tests",
        ".modelyard/tests/pre",
        ".modelyard/tests/pre/cases.yaml",
        "pre",
        "pre/1",
        "pre/1/model.py",
        "pre/config.pbtxt",
        "pre/labels.txt",
    ]
    for part in parts:
        alone = package(repo / part.model, _opts(tmp_path / "alone", part.version))
        assert alone.artifact is not None
        assert part.path.read_bytes() == alone.artifact.read_bytes()  # the same bytes
        part_manifest = verify_artifact(part.path)
        assert [m["role"] for m in part_manifest.models] == ["model"]
    assert split_bundle(parts[0].path, verify_artifact(parts[0].path), tmp_path / "x") == []


def test_a_step_with_several_versions_is_one_artifact_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_pack(requirements: Path, lock: Path, archive: Path, options: object) -> None:
        lock.write_text("tiny==1.0\n")
        archive.write_bytes(b"an environment")

    # the module, not the function `modelyard.deploy.package` its package exports
    monkeypatch.setattr(sys.modules["modelyard.deploy.package"], "pack_environment", fake_pack)
    repo = tmp_path / "repo"
    post = python_model(repo, "post", versions=(1, 2, 3))
    (post / "config.pbtxt").write_text(
        (post / "config.pbtxt").read_text() + "version_policy: { latest: { num_versions: 2 } }\n"
    )
    (post / "requirements.txt").write_text("tiny\n")
    python_model(repo, "pre")
    folder = chain(repo, "e", [("pre", 1), ("post", -1)])
    bundle = package(folder, _opts(tmp_path / "dist")).artifact
    assert bundle is not None
    manifest = read_manifest(bundle)
    environments = {(m["name"], m["version"]): m["environment"] for m in manifest.models}
    assert environments[("post", 2)] == environments[("post", 3)] == "post/environment.tar.gz"
    parts = split_bundle(bundle, manifest, tmp_path / "parts")
    assert [p.key for p in parts] == ["pre_1.tar.gz", "post_2.tar.gz", "post_3.tar.gz"]
    names = _names(parts[1].path)
    assert "post/2/model.py" in names and "post/3" not in names
    assert "post/environment.tar.gz" in names and "post/requirements.lock" in names
    alone = package(post, _opts(tmp_path / "alone", 2)).artifact
    assert alone is not None and alone.read_bytes() == parts[1].path.read_bytes()


def test_a_nested_ensemble_is_split_into_a_bundle_of_its_own(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("a", "b", "c"):
        python_model(repo, name)
    chain(repo, "inner", [("a", 1), ("b", 1)])
    outer = chain(repo, "outer", [("inner", 1), ("c", 1)])
    bundle = package(outer, _opts(tmp_path / "dist")).artifact
    assert bundle is not None
    parts = split_bundle(bundle, verify_artifact(bundle), tmp_path / "parts")
    # leaves first: every model before the ensembles that run it
    assert [(p.key, p.used_by) for p in parts] == [
        ("a_1.tar.gz", "inner"),
        ("b_1.tar.gz", "inner"),
        ("inner_1.tar.gz", "outer"),
        ("c_1.tar.gz", "outer"),
    ]
    inner = parts[2].path
    alone = package(repo / "inner", _opts(tmp_path / "alone")).artifact
    assert alone is not None and inner.read_bytes() == alone.read_bytes()
    assert composing_models(read_manifest(inner)) == [("a", 1), ("b", 1)]
    again = split_bundle(inner, verify_artifact(inner), tmp_path / "again")
    assert [p.sha256 for p in again] == [parts[0].sha256, parts[1].sha256]


def test_a_bundle_without_its_steps_listed_is_refused(tmp_path: Path) -> None:
    bundle = package(ensemble(tmp_path / "repo"), _opts(tmp_path / "dist")).artifact
    assert bundle is not None
    manifest = verify_artifact(bundle)
    members, epoch = unpack_artifact(bundle, tmp_path / "unpacked")
    old = Manifest(
        manifest.model,
        manifest.version,
        manifest.files,
        [{k: v for k, v in m.items() if k != "steps"} for m in manifest.models],
        manifest.built_with,
    )
    write_artifact(members.values(), old, bundle, epoch=epoch)
    with pytest.raises(
        ArtifactError, match=r"packaged by an earlier modelyard\): package it again"
    ):
        split_bundle(bundle, verify_artifact(bundle), tmp_path / "parts")


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> WritableStore:
    if request.param == "memory":
        return MemoryStore(name="prod")
    (tmp_path / "store").mkdir()
    return LocalStore(tmp_path / "store")


def _keys(store: WritableStore) -> list[str]:
    return sorted(o.key for o in store.list())


def test_push_publishes_the_steps_first_then_the_bundle_and_again_is_a_no_op(
    tmp_path: Path, store: WritableStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    bundle = package(ensemble(repo), _opts(tmp_path / "dist")).artifact
    assert bundle is not None
    order: list[str] = []
    publish = store.publish
    monkeypatch.setattr(
        store, "publish", lambda key, *a, **kw: (order.append(key), publish(key, *a, **kw))[1]
    )
    result = push(bundle, store)
    assert order == ["pre_1.tar.gz", "net_2.tar.gz", "pipeline_1.tar.gz"]
    assert result.key == "pipeline_1.tar.gz" and result.status == "published"
    assert [(s.key, s.status) for s in result.steps] == [
        ("pre_1.tar.gz", "published"),
        ("net_2.tar.gz", "published"),
    ]
    assert store.read_bytes("pipeline_1.tar.gz") == bundle.read_bytes()  # the tested bytes
    models = catalog(store.list())
    assert {name: m.latest for name, m in models.items()} == {"net": 2, "pipeline": 1, "pre": 1}
    recorded = store.read_bytes("pre_1.tar.gz.sha256").decode().split()[0]
    assert recorded == result.steps[0].sha256
    again = push(bundle, store)
    assert again.status == "unchanged"
    assert {s.status for s in again.steps} == {"unchanged"}
    alone = package(repo / "pre", _opts(tmp_path / "alone")).artifact  # pushed on its own
    assert alone is not None and push(alone, store).status == "unchanged"


def test_a_conflicting_or_retired_step_refuses_the_whole_push(
    tmp_path: Path, store: WritableStore
) -> None:
    repo = tmp_path / "repo"
    folder = ensemble(repo)
    first = package(folder, _opts(tmp_path / "v1")).artifact
    assert first is not None
    push(first, store)
    before = _keys(store)
    # version 2 of the ensemble, with pre's version 1 changed: pre 1 is immutable
    (repo / "pre" / "1" / "model.py").write_text(
        "# changed\n" + (repo / "pre" / "1" / "model.py").read_text()
    )
    second = package(folder, _opts(tmp_path / "v2", 2)).artifact
    assert second is not None
    with pytest.raises(
        VersionExists,
        match=r"'pre_1.tar.gz' \(in pipeline_2.tar.gz, run by "
        r"ensemble 'pipeline'; nothing was published\) already exists",
    ):
        push(second, store)
    assert _keys(store) == before
    # a retired step version is never reused either
    other = MemoryStore(name="other")
    other.write_bytes(".modelyard/retired/net_2.tar.gz", b"x")
    with pytest.raises(
        VersionExists, match=r"'net_2\.tar\.gz' was retired .*nothing was published"
    ):
        push(first, other)
    assert other.list() and _keys(other) == [".modelyard/retired/net_2.tar.gz"]


def test_promote_publishes_the_steps_too_and_rollback_leaves_them(
    tmp_path: Path, store: WritableStore
) -> None:
    repo = tmp_path / "repo"
    folder = ensemble(repo)
    staging = MemoryStore(name="staging")
    tested = {}
    for version in (1, 2):
        bundle = package(folder, _opts(tmp_path / "dist", version)).artifact
        assert bundle is not None
        tested[version] = push(bundle, staging).sha256
    result = promote("pipeline", 1, staging, store, expected_sha256=tested[1])
    assert [s.key for s in result.steps] == ["pre_1.tar.gz", "net_2.tar.gz"]
    assert result.status == "published"
    result = promote("pipeline", 2, staging, store, expected_sha256=tested[2])
    assert result.status == "published" and {s.status for s in result.steps} == {"unchanged"}
    for key in ("pre_1.tar.gz", "net_2.tar.gz", "pipeline_2.tar.gz"):
        assert store.read_bytes(key) == staging.read_bytes(key)
    rolled = rollback("pipeline", store)
    assert (rolled.version, rolled.retired) == (1, [2])
    live = [
        f"{k}{s}" for k in ("net_2", "pipeline_1", "pre_1") for s in (".tar.gz", ".tar.gz.sha256")
    ]
    retired = [f".modelyard/retired/pipeline_2.tar.gz{s}" for s in ("", ".json", ".sha256")]
    assert _keys(store) == sorted(live + retired)  # the steps stay live
