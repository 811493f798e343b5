"""Triton's defaults: AutoCompleteBackendFields, NormalizeModelConfig, NormalizeInstanceGroup."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository import ModelConfigError, normalize_config
from tests.unit.repository.conftest import MakeModel

Group = mc.ModelInstanceGroup


def normalized(
    text: str, *, model_dir: Path | None = None, gpus: tuple[int, ...] = ()
) -> mc.ModelConfig:
    config = mc.ModelConfig()
    text_format.Parse(text, config)
    normalize_config(config, model_dir=model_dir, gpus=gpus)
    return config


def test_version_policy_defaults_to_latest_one() -> None:
    config = normalized('name: "m" backend: "python"')
    assert config.version_policy.WhichOneof("policy_choice") == "latest"
    assert config.version_policy.latest.num_versions == 1


def test_explicit_version_policy_is_kept() -> None:
    config = normalized('name: "m" backend: "python" version_policy { all { } }')
    assert config.version_policy.WhichOneof("policy_choice") == "all"


def test_default_instance_group_is_named_after_the_model() -> None:
    config = normalized('name: "m" backend: "python"')
    [group] = config.instance_group
    assert (group.name, group.kind, group.count, list(group.gpus)) == ("m", Group.KIND_CPU, 1, [])


@pytest.mark.parametrize(("backend", "count"), [("onnxruntime", 2), ("python", 1), ("pytorch", 1)])
def test_default_cpu_instance_count_per_backend(backend: str, count: int) -> None:
    config = normalized(f'name: "m" backend: "{backend}"')
    assert config.instance_group[0].count == count


def test_unnamed_groups_are_numbered_by_position_and_count_defaults() -> None:
    config = normalized(
        'name: "m" backend: "python" '
        'instance_group [ { count: 2 kind: KIND_CPU }, { name: "named" }, { kind: KIND_CPU } ]'
    )
    assert [(g.name, g.count) for g in config.instance_group] == [
        ("m_0", 2),
        ("named", 1),
        ("m_2", 1),
    ]


def test_kind_auto_becomes_gpu_with_every_gpu_when_there_are_gpus() -> None:
    config = normalized('name: "m" backend: "onnxruntime"', gpus=(1, 0))
    [group] = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (Group.KIND_GPU, 1, [0, 1])


def test_kind_auto_listing_a_missing_gpu_becomes_cpu() -> None:
    config = normalized('name: "m" backend: "python" instance_group [ { gpus: [ 5 ] } ]', gpus=(0,))
    assert config.instance_group[0].kind == Group.KIND_CPU


def test_preferred_batch_size_defaults_to_max_batch_size() -> None:
    config = normalized('name: "m" backend: "python" max_batch_size: 8 dynamic_batching { }')
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    config = normalized('name: "m" backend: "python" dynamic_batching { }')
    assert list(config.dynamic_batching.preferred_batch_size) == []
    config = normalized(
        'name: "m" backend: "python" max_batch_size: 8 '
        "dynamic_batching { preferred_batch_size: [ 2 ] }"
    )
    assert list(config.dynamic_batching.preferred_batch_size) == [2]


def test_sequence_batching_defaults() -> None:
    config = normalized(
        'name: "m" backend: "python" max_batch_size: 4 sequence_batching { oldest { } }'
    )
    assert config.sequence_batching.max_sequence_idle_microseconds == 1_000_000
    assert list(config.sequence_batching.oldest.preferred_batch_size) == [4]


def test_pinned_memory_enabled_except_for_ensembles() -> None:
    config = normalized('name: "m" backend: "python"')
    assert config.optimization.input_pinned_memory.enable
    assert config.optimization.output_pinned_memory.enable
    config = normalized('name: "m" backend: "python" optimization { input_pinned_memory { } }')
    assert not config.optimization.input_pinned_memory.enable
    ensemble = normalized('name: "e" platform: "ensemble" ensemble_scheduling { }')
    assert not ensemble.HasField("optimization")
    assert not ensemble.instance_group


@pytest.mark.parametrize(
    ("text", "backend", "platform", "filename"),
    [
        ('platform: "onnxruntime_onnx"', "onnxruntime", "onnxruntime_onnx", "model.onnx"),
        ('backend: "onnxruntime"', "onnxruntime", "onnxruntime_onnx", "model.onnx"),
        ('platform: "tensorrt_plan"', "tensorrt", "tensorrt_plan", "model.plan"),
        ('backend: "tensorrt"', "tensorrt", "tensorrt_plan", "model.plan"),
        ('platform: "pytorch_libtorch"', "pytorch", "pytorch_libtorch", "model.pt"),
        ('backend: "pytorch"', "pytorch", "pytorch_libtorch", "model.pt"),
        (
            'platform: "tensorflow_savedmodel"',
            "tensorflow",
            "tensorflow_savedmodel",
            "model.savedmodel",
        ),
        ('platform: "tensorflow_graphdef"', "tensorflow", "tensorflow_graphdef", "model.graphdef"),
        ('default_model_filename: "model.onnx"', "onnxruntime", "onnxruntime_onnx", "model.onnx"),
        ('default_model_filename: "model.py"', "python", "", "model.py"),
        ('default_model_filename: "model.xml"', "openvino", "", "model.xml"),
        ('backend: "python"', "python", "", "model.py"),
        ('backend: "python" default_model_filename: "m.py"', "python", "", "m.py"),
        ('backend: "custom"', "custom", "", ""),
        ('platform: "ensemble"', "", "ensemble", ""),
    ],
)
def test_backend_fields_are_completed_like_triton(
    text: str, backend: str, platform: str, filename: str
) -> None:
    config = normalized(f'name: "m" {text}')
    assert (config.backend, config.platform, config.default_model_filename) == (
        backend,
        platform,
        filename,
    )


@pytest.mark.parametrize(
    ("filename", "backend", "platform"),
    [
        ("model.onnx", "onnxruntime", "onnxruntime_onnx"),
        ("model.plan", "tensorrt", "tensorrt_plan"),
        ("model.pt", "pytorch", "pytorch_libtorch"),
        ("model.py", "python", ""),
        ("model.xml", "openvino", ""),
        ("model.graphdef", "tensorflow", "tensorflow_graphdef"),
    ],
)
def test_backend_is_guessed_from_the_first_version_folder(
    make_model: MakeModel, filename: str, backend: str, platform: str
) -> None:
    model_dir = make_model("m", None, versions=("1", "2"), filename=filename)
    config = mc.ModelConfig()
    normalize_config(config, model_dir=model_dir)
    assert (config.name, config.backend, config.platform) == ("m", backend, platform)
    assert config.default_model_filename == filename


def test_savedmodel_must_be_a_folder(make_model: MakeModel) -> None:
    model_dir = make_model("m", None, filename=None)
    (model_dir / "1" / "model.savedmodel").mkdir()
    config = mc.ModelConfig()
    normalize_config(config, model_dir=model_dir)
    assert config.platform == "tensorflow_savedmodel"


def test_custom_backend_from_a_dotted_folder_name(make_model: MakeModel) -> None:
    model_dir = make_model("m.identity", None, filename=None)
    config = mc.ModelConfig()
    normalize_config(config, model_dir=model_dir)
    assert (config.backend, config.default_model_filename) == ("identity", "model.identity")


def test_no_backend_to_be_found(make_model: MakeModel) -> None:
    model_dir = make_model("plain", None, filename=None)
    with pytest.raises(ModelConfigError) as info:
        normalize_config(mc.ModelConfig(), model_dir=model_dir)
    assert info.value.reason == (
        "Invalid model name: Could not determine backend for model 'plain' with no backend in "
        "model configuration. Expected model name of the form 'model.<backend_name>'."
    )
    assert info.value.path == model_dir


def test_name_comes_from_the_folder_only_when_missing(make_model: MakeModel) -> None:
    model_dir = make_model("folder", 'name: "other" backend: "python"')
    config = normalized('name: "other" backend: "python"', model_dir=model_dir)
    assert config.name == "other"


def test_normalize_is_idempotent() -> None:
    once = normalized(
        'name: "m" backend: "python" max_batch_size: 4 dynamic_batching { } '
        "instance_group [ { kind: KIND_CPU } ]"
    )
    twice = mc.ModelConfig()
    twice.CopyFrom(once)
    normalize_config(twice)
    assert twice == once
