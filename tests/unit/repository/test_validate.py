"""Semantic rejections, checked word for word against what a real Triton 2.51 said.

``fixtures/triton_rejections.json`` holds, per broken model, the config.pbtxt we gave Triton
and the reason it gave (see its ``notes``). The messages not recorded there (Triton's
CPU-only Python-backend build cannot reach them) are copied from Triton's source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository import (
    ModelConfigError,
    load_config,
    load_entry_config,
    normalize_config,
    scan_model,
    validate_config,
)
from tests.unit.repository.conftest import MakeModel, load_fixture

REJECTIONS: dict[str, Any] = load_fixture("triton_rejections.json")["cases"]
KNOWN = {"python", "onnxruntime"}

SEMANTIC = sorted(
    name
    for name, case in REJECTIONS.items()
    if case["stage"] != "loaded" and not str(case["message"]).startswith("failed to read text")
)
PARSE = sorted(
    name for name, case in REJECTIONS.items() if str(case["message"]).startswith("failed to read")
)


def build(make_model: MakeModel, name: str) -> Path:
    """The model folder as Triton saw it: config, version folders and their files."""
    case = REJECTIONS[name]
    model_dir = make_model(name, case["config_pbtxt"], versions=case["version_dirs"], filename=None)
    for relative in case["files"]:
        (model_dir / relative).write_text("")
    return model_dir


@pytest.mark.parametrize("name", SEMANTIC)
def test_rejection_matches_triton(make_model: MakeModel, name: str) -> None:
    model_dir = build(make_model, name)
    entry = scan_model(model_dir)
    with pytest.raises(ModelConfigError) as info:
        load_entry_config(entry, known_backends=KNOWN, gpus=())
    assert info.value.reason == REJECTIONS[name]["message"]
    where = entry.config_path or model_dir
    assert str(info.value) == f"{where}: {REJECTIONS[name]['message']}"


@pytest.mark.parametrize("name", PARSE)
def test_parse_rejection_names_the_line_triton_logged(make_model: MakeModel, name: str) -> None:
    """Triton answers only "failed to read text proto from <path>"; we add the line it logs."""
    model_dir = build(make_model, name)
    with pytest.raises(ModelConfigError) as info:
        load_entry_config(scan_model(model_dir), known_backends=KNOWN)
    triton_line = int(REJECTIONS[name]["protobuf_log"].split(":", 1)[0])
    assert info.value.line == triton_line
    assert info.value.path == model_dir / "config.pbtxt"
    assert str(info.value).startswith(f"{model_dir / 'config.pbtxt'}:{triton_line}:")


def test_every_recorded_case_is_covered() -> None:
    loaded = {n for n, c in REJECTIONS.items() if c["stage"] == "loaded"}
    assert set(SEMANTIC) | set(PARSE) | loaded == set(REJECTIONS)
    assert loaded == {"bad_dup_input", "bad_dup_output"}


def test_duplicate_tensor_names_are_refused_although_triton_loads_them(
    make_model: MakeModel,
) -> None:
    """A deliberate difference: Triton keeps the first of two same-named tensors."""
    for name, kind in (("bad_dup_input", "input"), ("bad_dup_output", "output")):
        with pytest.raises(ModelConfigError) as info:
            load_entry_config(scan_model(build(make_model, name)), known_backends=KNOWN)
        assert info.value.reason == (
            f"model {kind} '{kind.upper()}0' is specified more than once for {name}"
        )


IO = """
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def reason_for(
    text: str,
    *,
    normalize: bool = True,
    gpus: tuple[int, ...] = (),
    known_backends: set[str] | None = None,
    tmp_path: Path | None = None,
) -> str | None:
    """The reason validate_config gives for a config text (None when it passes)."""
    config = mc.ModelConfig()
    text_format.Parse(text, config)
    if normalize:
        normalize_config(config, gpus=gpus)
    config_path = tmp_path / "m" / "config.pbtxt" if tmp_path is not None else None
    try:
        validate_config(
            config,
            folder_name=config.name,
            config_path=config_path,
            known_backends=known_backends,
            gpus=gpus,
        )
    except ModelConfigError as err:
        return err.reason
    return None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('backend: "python"', "model configuration must specify 'name'"),
        (
            'name: "m" platform: "ensemble" backend: "python"',
            "Ensemble model 'm' must have platform type 'ensemble' and empty backend type",
        ),
        (
            'name: "m" platform: "ensemble"',
            "ensemble scheduling must be set for ensemble m whose platform is ensemble",
        ),
        (
            'name: "m" backend: "python" ensemble_scheduling { }',
            "ensemble scheduling cannot be set for model 'm' whose platform is not ensemble",
        ),
        (
            'name: "m" platform: "onnxruntime_onnx" backend: "tensorrt"',
            "unexpected 'platform' and 'backend' pair, got:onnxruntime_onnx, tensorrt",
        ),
        (
            'name: "m" backend: "python" max_batch_size: 2 '
            "dynamic_batching { priority_levels: 2 default_priority_level: 3 }",
            "default priority level must be in range [1, 2] for m",
        ),
        (
            'name: "m" backend: "python" max_batch_size: 2 dynamic_batching { priority_levels: 2 '
            "default_priority_level: 1 priority_queue_policy { key: 5 value { } } }",
            "priority queue policy must have priority level in range [1, 2] for m",
        ),
        (
            'name: "m" backend: "python" max_batch_size: 2 dynamic_batching { '
            "preserve_ordering: true priority_levels: 2 default_priority_level: 1 }",
            "Only one priority level is allowed when 'preserve_ordering' is true for m",
        ),
        (
            'name: "m" backend: "python" max_batch_size: 2 dynamic_batching { '
            "preserve_ordering: true default_queue_policy { timeout_action: DELAY "
            "default_timeout_microseconds: 5 } }",
            "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is "
            "true for m",
        ),
        (
            'name: "m" backend: "python" max_batch_size: 2 '
            "sequence_batching { oldest { preferred_batch_size: [ 0 ] } }",
            "sequence batching preferred batch size must be positive for m",
        ),
        (
            'name: "m" backend: "python" sequence_batching { direct { '
            "minimum_slot_utilization: 1.5 } }",
            "sequence batching minimum slot utilization must be in range (0.0, 1.0] for m",
        ),
        (
            'name: "m" backend: "python" sequence_batching { } response_cache { enable: true }',
            "Response Cache does not currently support model m with sequence batching "
            "scheduler. Please disable the response cache.",
        ),
        (
            'name: "m" backend: "python" response_cache { enable: true } '
            "model_transaction_policy { decoupled: true }",
            "Response Cache does not currently support model m with 'decoupled' transaction "
            "policy. Please disable the response cache.",
        ),
        (
            'name: "m" backend: "python" instance_group [ { kind: KIND_MODEL gpus: [ 0 ] } ]',
            "instance group m_0 of model m has kind KIND_MODEL but specifies one or more GPUs",
        ),
        (
            'name: "m" backend: "python" instance_group [ { kind: KIND_CPU profile: [ "0" ] } ]',
            "instance group m_0 of model m and platform specifies profile field which is only "
            "supported for TensorRT models",
        ),
        (
            'name: "m" backend: "python" input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] '
            "is_non_linear_format_io: true } ]",
            "Non-linear IO format is only supported for the TensorRT platform for m",
        ),
        (
            'name: "m" platform: "tensorrt_plan" output [ { name: "y" data_type: TYPE_FP32 '
            "dims: [ 1 ] is_non_linear_format_io: true } ]",
            "Non-linear IO format output requires 3 dims for m",
        ),
        (
            'name: "m" backend: "python" max_batch_size: 2 input [ { name: "x" data_type: '
            "TYPE_FP32 dims: [ 2, 3 ] reshape { } } ]",
            "model input 'x' has different size for dims and reshape for m",
        ),
        (
            'name: "m" backend: "python"' + IO + "batch_input [ { kind: BATCH_ITEM_SHAPE "
            'target_name: "t" data_type: TYPE_FP32 } ]',
            "batch input kind 'BATCH_ITEM_SHAPE' expects 1 source input, got 0 for m",
        ),
        (
            'name: "m" backend: "python"' + IO + "batch_input [ { kind: BATCH_ITEM_SHAPE "
            'target_name: "t" data_type: TYPE_INT64 source_input: "INPUT0" } ]',
            "batch input data type must be TYPE_INT32 or TYPE_FP32 for m",
        ),
        (
            'name: "m" backend: "python"' + IO + "batch_input [ { kind: BATCH_ELEMENT_COUNT "
            'target_name: "t" data_type: TYPE_INT32 source_input: "nope" } ]',
            "unknown source input name 'nope' for m",
        ),
        (
            'name: "m" backend: "python"' + IO + "batch_output [ { kind: "
            'BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "INPUT0" target_name: "nope" } ]',
            "unknown target output name 'nope' for m",
        ),
        (
            'name: "m" backend: "python"' + IO + "batch_output [ { kind: "
            'BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "INPUT0" target_name: [ "OUTPUT0", '
            '"OUTPUT0" ] } ]',
            "target output name 'OUTPUT0' can only be specified once for m",
        ),
        (
            'name: "m" backend: "python"' + IO + "batch_output [ { kind: "
            'BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "OUTPUT0" } ]',
            "batch output kind 'BATCH_SCATTER_WITH_INPUT_SHAPE' expects 1 source input, got 0 "
            "for m",
        ),
    ],
)
def test_triton_source_messages(text: str, reason: str) -> None:
    assert reason_for(text) == reason


@pytest.mark.parametrize(
    ("dims", "shape", "ok"),
    [
        ("[ 2, 4, -1, 6 ]", "[ 8, -1, 1, 6 ]", True),
        ("[ -1, 4 ]", "[ -1, 2, 2 ]", True),
        ("[ 1 ]", "[ ]", True),  # empty reshape of a batching model: a scalar from [1]
        ("[ 4 ]", "[ 2, 2 ]", True),
        ("[ 4 ]", "[ 5 ]", False),
    ],
)
def test_reshape_rules(dims: str, shape: str, ok: bool) -> None:
    text = (
        'name: "m" backend: "python" max_batch_size: 2 input [ { name: "x" data_type: TYPE_FP32 '
        f"dims: {dims} reshape {{ shape: {shape} }} }} ]"
    )
    assert (reason_for(text) is None) == ok


def test_version_policy_must_be_normalized_first() -> None:
    assert reason_for('name: "m" backend: "python"', normalize=False) == (
        "must specify 'version policy' for m"
    )


def test_instance_groups_must_be_normalized_first() -> None:
    text = 'name: "m" backend: "python" version_policy { latest { num_versions: 1 } }'
    assert reason_for(text, normalize=False) == "must specify one or more 'instance group's for m"
    text += ' instance_group [ { name: "g" count: 1 } ]'
    assert reason_for(text, normalize=False) == (
        "instance group g of model m has unexpected kind KIND_AUTO"
    )


def test_gpu_groups_against_the_gpus_present() -> None:
    base = 'name: "m" backend: "python" instance_group [ { kind: KIND_GPU gpus: [ 3 ] } ]'
    assert reason_for(base, gpus=(0, 1)) == (
        "instance group m_0 of model m specifies invalid or unsupported gpu id 3. GPUs with at "
        "least the minimum required CUDA compute compatibility of 6.000000 are: 0, 1"
    )
    assert reason_for(base.replace("gpus: [ 3 ]", "gpus: [ 1 ]"), gpus=(0, 1)) is None
    text = (
        'name: "m" backend: "python" version_policy { latest { num_versions: 1 } } '
        'instance_group [ { name: "g" kind: KIND_GPU count: 1 } ]'
    )
    assert reason_for(text, normalize=False, gpus=(0,)) == (
        "instance group g of model m has kind KIND_GPU but specifies no GPUs"
    )


def test_known_backends() -> None:
    text = 'name: "m" backend: "onnxruntime"'
    assert reason_for(text, known_backends={"python"}) == (
        "unable to find backend library for backend 'onnxruntime', try specifying runtime on "
        "the model configuration."
    )
    assert reason_for(text, known_backends={"onnxruntime"}) is None
    assert reason_for(text, known_backends=None) is None


def test_ensembles_need_no_backend_and_no_instance_groups() -> None:
    text = (
        'name: "e" platform: "ensemble" input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ] ensemble_scheduling { step [ '
        '{ model_name: "a" input_map { key: "i" value: "x" } output_map { key: "o" value: "y" } '
        "} ] }"
    )
    assert reason_for(text, known_backends={"python"}) is None


def test_label_file_must_stay_inside_the_model_directory(tmp_path: Path) -> None:
    text = (
        'name: "m" backend: "python" output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] '
        'label_filename: "../secrets.txt" } ]'
    )
    reason = reason_for(text, tmp_path=tmp_path)
    assert reason == (
        f"label file path '{tmp_path / 'm' / '../secrets.txt'}' for output 'y' in model 'm' is "
        "outside model directory"
    )


def test_message_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wrong" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text('name: "m" backend: "python" max_batch_size: -1')
    config = load_config(path)
    normalize_config(config, model_dir=path.parent)
    with pytest.raises(ModelConfigError) as info:
        validate_config(config, folder_name="wrong", config_path=path)
    assert str(info.value) == f"{path}: 'max_batch_size' must be non-negative value for m"
