"""modelyard package: layout, what is left out, versions, refusals, ensembles, reproducibility."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from modelyard.deploy import PackageError, PackageOptions, package, read_manifest, verify_artifact
from modelyard.store import ModelCache, catalog, open_store
from tests.unit.deploy.models import ensemble, python_model


def _names(artifact: Path) -> list[str]:
    with tarfile.open(artifact) as tar:
        return tar.getnames()


def _options(tmp_path: Path, **kw: object) -> PackageOptions:
    return PackageOptions(output=tmp_path / "dist", **kw)  # type: ignore[arg-type]


def test_layout_manifest_and_what_is_left_out(tmp_path: Path) -> None:
    model = python_model(tmp_path / "repo", "add_sub", versions=(1, 2))
    (model / "labels.txt").write_text("a\nb\n")
    (model / "2" / "__pycache__").mkdir()
    (model / "2" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (model / "2" / "helper.pyc").write_bytes(b"\0")
    (model / "2" / "weights.bin").write_bytes(b"w" * 10)
    (model / "2" / "weights.bin.dvc").write_text("outs:\n- path: weights.bin\n")
    (model / "2" / ".gitignore").write_text("/weights.bin\n")
    (model / "2" / "scratch.tmp").write_text("x")
    (model / ".modelyardignore").write_text("# local files\n*.tmp\n")
    (model / "tests").mkdir()
    (model / "tests" / "cases.yaml").write_text("cases: []\n")
    result = package(model, _options(tmp_path))
    assert result.artifact == tmp_path / "dist" / "add_sub_2.tar.gz"
    assert _names(result.artifact) == [
        ".modelyard",
        ".modelyard/manifest.json",
        ".modelyard/tests",
        ".modelyard/tests/add_sub",
        ".modelyard/tests/add_sub/cases.yaml",
        "add_sub",
        "add_sub/2",
        "add_sub/2/model.py",
        "add_sub/2/weights.bin",
        "add_sub/config.pbtxt",
        "add_sub/labels.txt",
    ]
    manifest = verify_artifact(result.artifact)
    assert (manifest.model, manifest.version) == ("add_sub", 2)
    assert manifest.files["add_sub/labels.txt"][1] == 4
    assert manifest.models[0]["backend"] == "python"
    sidecar = (tmp_path / "dist" / "add_sub_2.tar.gz.sha256").read_text()
    assert sidecar == f"{result.sha256}  add_sub_2.tar.gz\n"
    with tarfile.open(result.artifact) as tar:
        for info in tar.getmembers():
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            assert info.mtime == 315532800
            assert info.mode in (0o644, 0o755)


def test_the_server_loads_what_package_writes(tmp_path: Path) -> None:
    model = python_model(tmp_path / "repo", "m", versions=(3,))
    result = package(model, _options(tmp_path))
    store = open_store(str(tmp_path / "dist"))
    cache = ModelCache(tmp_path / "cache", 1 << 30)
    with cache.materialized(store, catalog(store.list())["m"]) as folder:
        assert sorted(p.name for p in folder.iterdir()) == ["3", "config.pbtxt"]
    assert result.version == 3


def test_version_names_the_artifact_and_renumbers_the_newest_folder(tmp_path: Path) -> None:
    model = python_model(tmp_path / "repo", "m", versions=(1, 4))
    result = package(model, _options(tmp_path, version=7))
    assert result.artifact is not None and result.artifact.name == "m_7.tar.gz"
    assert "m/7/model.py" in _names(result.artifact)
    assert any("version folder 4/ is shipped as version 7" in n for n in result.notes)
    result = package(model, _options(tmp_path, version=1))  # an existing folder: that one
    assert result.artifact is not None and "m/1/model.py" in _names(result.artifact)


def test_builds_in_two_folders_are_byte_identical(tmp_path: Path) -> None:
    first = python_model(tmp_path / "a", "m")
    (first / "1" / "data.bin").write_bytes(bytes(range(256)) * 100)
    second = tmp_path / "b" / "deeper" / "m"
    shutil.copytree(first, second)
    (second / "1" / "model.py").chmod(0o600)  # modes other than the executable bit: ignored
    one = package(first, PackageOptions(output=tmp_path / "o1"))
    two = package(second, PackageOptions(output=tmp_path / "o2"))
    assert one.sha256 == two.sha256
    assert one.artifact is not None and two.artifact is not None
    assert one.artifact.read_bytes() == two.artifact.read_bytes()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: (m / "config.pbtxt").write_text('name: "m"\nbackend: "python"\nbogus: 1\n'),
            r"its config does not load: .*/repo/m/config\.pbtxt:3",
        ),
        (
            lambda m: (m / "config.pbtxt").write_text(
                (m / "config.pbtxt").read_text() + "version_policy: { specific: { versions: 9 } }\n"
            ),
            r"m/config\.pbtxt: at least one version must be available under the version policy",
        ),
        (lambda m: (m / "1" / "model.py").unlink(), "has no 'model.py'"),
        (lambda m: shutil.rmtree(m / "1"), "has no version folder"),
        (
            lambda m: (m / "1" / "model.onnx.dvc").write_text("outs:\n- path: model.onnx\n"),
            "tracked by DVC .* run `dvc pull`",
        ),
    ],
)
def test_refusals_say_why(tmp_path: Path, edit: object, message: str) -> None:
    model = python_model(tmp_path / "repo", "m")
    edit(model)  # type: ignore[operator]
    with pytest.raises(PackageError, match=message):
        package(model, _options(tmp_path))
    assert not (tmp_path / "dist" / "m_1.tar.gz").exists()


def test_check_only_writes_nothing(tmp_path: Path) -> None:
    model = python_model(tmp_path / "repo", "m")
    result = package(model, _options(tmp_path, check_only=True))
    assert result.artifact is None and result.files == 2
    assert not (tmp_path / "dist").exists()


def test_an_ensemble_ships_with_its_composing_models(tmp_path: Path) -> None:
    folder = ensemble(tmp_path / "repo")
    result = package(folder, _options(tmp_path))
    assert result.models == ["pipeline", "pre", "net"]
    assert result.artifact is not None
    names = _names(result.artifact)
    assert "pipeline/1" in names and "pipeline/config.pbtxt" in names
    assert "pre/1/model.py" in names  # model_version -1: its policy's version (latest)
    assert "net/2/model.py" in names  # pinned
    assert "net/1/model.py" not in names and "net/3/model.py" not in names
    roles = {(m["name"], m["role"]) for m in read_manifest(result.artifact).models}
    assert roles == {("pipeline", "model"), ("pre", "composing"), ("net", "composing")}


def test_an_ensemble_step_that_is_missing_is_refused(tmp_path: Path) -> None:
    folder = ensemble(tmp_path / "repo")
    shutil.rmtree(tmp_path / "repo" / "pre")
    with pytest.raises(PackageError, match="step model 'pre' is not in the repository folder"):
        package(folder, _options(tmp_path))
