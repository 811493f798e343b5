"""Finding models and versions the way Triton does; version policies; model file names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository import (
    ModelConfigError,
    ModelEntry,
    default_model_filename,
    list_versions,
    load_entry_config,
    model_file_path,
    normalize_config,
    scan_repository,
    select_versions,
    versions_to_load,
)
from tests.unit.repository.conftest import MakeModel

PY = 'backend: "python"'


def config(text: str) -> mc.ModelConfig:
    message = mc.ModelConfig()
    text_format.Parse(text, message)
    return message


def test_every_subdirectory_is_a_model_files_are_not(repo: Path, make_model: MakeModel) -> None:
    make_model("b", f'name: "b" {PY}')
    make_model("a", None)
    make_model(".hidden", f'name: ".hidden" {PY}')  # Triton loads hidden folders too
    (repo / "README.md").write_text("not a model")
    entries = scan_repository(repo)
    assert list(entries) == [".hidden", "a", "b"]
    assert entries["b"] == ModelEntry("b", repo / "b", repo / "b" / "config.pbtxt", (1,))
    assert entries["a"].config_path is None  # no config: the caller decides (autofill)


def test_symlinked_model_folders_count(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (target / "1").mkdir(parents=True)
    (repo / "linked").symlink_to(target, target_is_directory=True)
    assert scan_repository(repo)["linked"].versions == (1,)


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="is not a directory"):
        scan_repository(tmp_path / "nope")


def test_version_folder_rules(make_model: MakeModel, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = make_model(
        "m", None, versions=("1", "0", "10", "2", "01", "0x", "abc", "3x", "-1", "warmup", "9" * 20)
    )
    (model_dir / "5").write_text("a file named like a version is not a version")
    (model_dir / "initial_state").mkdir()
    with caplog.at_level(logging.WARNING, logger="modelyard.repository.layout"):
        assert list_versions(model_dir) == (0, 1, 2, 10)
    messages = {r.getMessage() for r in caplog.records}
    assert "ignore version directory '01' which contains leading zeros in its directory name" in (
        messages
    )
    assert "ignore version directory 'abc' which fails to convert to integral number" in messages
    assert "ignore version directory '0x' which contains leading zeros in its directory name" in (
        messages
    )
    assert not any("warmup" in m or "initial_state" in m for m in messages)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [10]),  # no policy: Triton's default, latest 1
        ("version_policy { latest { num_versions: 1 } }", [10]),
        ("version_policy { latest { num_versions: 2 } }", [9, 10]),
        ("version_policy { latest { num_versions: 9 } }", [1, 2, 9, 10]),
        ("version_policy { latest { } }", []),
        ("version_policy { all { } }", [1, 2, 9, 10]),
        ("version_policy { specific { versions: [ 9, 1 ] } }", [1, 9]),
        ("version_policy { specific { versions: [ 1, 4 ] } }", [1]),
        ("version_policy { specific { } }", []),
    ],
)
def test_version_policies(policy: str, expected: list[int]) -> None:
    assert select_versions(config(f'name: "m" {policy}'), [10, 1, 9, 2]) == expected


def test_no_versions_is_triton_load_error(make_model: MakeModel) -> None:
    model_dir = make_model("m", f'name: "m" {PY}', versions=())
    entry = scan_repository(model_dir.parent)["m"]
    with pytest.raises(ModelConfigError) as info:
        versions_to_load(entry, config(f'name: "m" {PY}'))
    assert info.value.reason == (
        "at least one version must be available under the version policy of model 'm'"
    )


def test_versions_to_load(make_model: MakeModel) -> None:
    make_model("m", None, versions=("1", "3"))
    entry = scan_repository(make_model("x", None).parent)["m"]
    assert versions_to_load(entry, config("version_policy { all { } }")) == [1, 3]


@pytest.mark.parametrize(
    ("text", "filename"),
    [
        ('platform: "onnxruntime_onnx"', "model.onnx"),
        ('backend: "onnxruntime"', "model.onnx"),
        ('backend: "python"', "model.py"),
        ('platform: "tensorrt_plan"', "model.plan"),
        ('platform: "pytorch_libtorch"', "model.pt"),
        ('backend: "pytorch"', "model.pt"),
        ('platform: "tensorflow_savedmodel"', "model.savedmodel"),
        ('platform: "tensorflow_graphdef"', "model.graphdef"),
        ('backend: "openvino"', "model.xml"),
        ('backend: "identity"', "model.identity"),
        ('backend: "python" default_model_filename: "entry.py"', "entry.py"),
    ],
)
def test_default_file_names(text: str, filename: str) -> None:
    message = config(f'name: "m" {text}')
    assert default_model_filename(message) == filename  # before normalization
    normalize_config(message)
    assert default_model_filename(message) == filename  # and after
    assert model_file_path(Path("/r/m"), 3, message) == Path("/r/m/3") / filename


def test_no_file_name_without_backend() -> None:
    with pytest.raises(ModelConfigError, match="no backend or platform"):
        default_model_filename(config('name: "m"'))


def test_an_ensembles_model_file_is_its_version_folder() -> None:
    assert model_file_path(Path("/r/e"), 1, config('name: "e" platform: "ensemble"')) == Path(
        "/r/e/1"
    )


@pytest.mark.parametrize("filename", ["../../etc/passwd", "/etc/passwd"])
def test_model_file_must_stay_in_its_version_folder(filename: str) -> None:
    message = config(f'name: "m" backend: "python" default_model_filename: "{filename}"')
    with pytest.raises(ModelConfigError, match="leads outside its version directory"):
        model_file_path(Path("/r/m"), 1, message)


def test_load_entry_config_without_config_file_autofills(make_model: MakeModel) -> None:
    model_dir = make_model("auto", None, filename="model.onnx")
    entry = scan_repository(model_dir.parent)["auto"]
    loaded = load_entry_config(entry, known_backends={"onnxruntime"})
    assert (loaded.name, loaded.backend, loaded.platform) == (
        "auto",
        "onnxruntime",
        "onnxruntime_onnx",
    )
    assert [(g.name, g.count) for g in loaded.instance_group] == [("auto", 2)]
    assert model_file_path(entry.path, 1, loaded) == model_dir / "1" / "model.onnx"


def test_load_entry_config_without_config_names_the_folder_in_errors(
    make_model: MakeModel,
) -> None:
    model_dir = make_model("auto", None, versions=(), filename=None)
    (model_dir / "x").mkdir()
    (model_dir / "x" / "model.py").write_text("")
    with pytest.raises(ModelConfigError) as info:
        load_entry_config(scan_repository(model_dir.parent)["auto"])
    assert str(info.value) == (
        f"{model_dir}: at least one version must be available under the version policy of "
        "model 'auto'"
    )
