"""onnxruntime backend: Triton's auto-complete rules, execution, GPU refusal."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from google.protobuf import text_format
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.errors import ConfigError, InvalidArgument
from modelyard.runtimes.base import RuntimeOptions, factory_for
from modelyard.runtimes.onnx import OnnxFactory
from tests.factories.onnx_models import add_sub, identity, mlp

OPTS = RuntimeOptions()


def _file(tmp_path: Path, model: bytes) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    return path


def _complete(tmp_path: Path, model: bytes, text: str = "") -> mc.ModelConfig:
    config = text_format.Parse(text, mc.ModelConfig())
    config.name = config.name or "m"
    OnnxFactory().autocomplete(config, _file(tmp_path, model), OPTS)
    return config


def test_batchable_model_gets_max_batch_size_4_and_dynamic_batching(tmp_path: Path) -> None:
    config = _complete(tmp_path, mlp())
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in config.input] == [
        ("INPUT", "TYPE_FP32", [64])
    ]
    assert [list(o.dims) for o in config.output] == [[10]]


def test_default_max_batch_size_comes_from_options(tmp_path: Path) -> None:
    config = mc.ModelConfig(name="m")
    OnnxFactory().autocomplete(
        config, _file(tmp_path, mlp()), RuntimeOptions(default_max_batch_size=16)
    )
    assert config.max_batch_size == 16


def test_fixed_first_dim_is_not_batchable(tmp_path: Path) -> None:
    config = _complete(tmp_path, add_sub(dims=[16]))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert [list(i.dims) for i in config.input] == [[16], [16]]


def test_partial_config_keeps_what_it_says(tmp_path: Path) -> None:
    config = _complete(
        tmp_path,
        add_sub(dims=["b", 16]),
        'max_batch_size: 2\noutput [{name: "OUTPUT1" data_type: TYPE_FP32 dims: [16]}]',
    )
    assert config.max_batch_size == 2
    assert [i.name for i in config.input] == ["INPUT0", "INPUT1"]
    assert [list(i.dims) for i in config.input] == [[16], [16]]
    assert [o.name for o in config.output] == ["OUTPUT1"]  # a subset of outputs stays a subset


def test_config_naming_an_input_the_model_lacks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration expects input 'NOPE'"):
        _complete(tmp_path, add_sub(), 'input [{name: "NOPE" data_type: TYPE_FP32 dims: [16]}]')


def test_config_datatype_disagreeing_with_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expects datatype TYPE_INT32 for input 'INPUT0'"):
        _complete(tmp_path, add_sub(), 'input [{name: "INPUT0" data_type: TYPE_INT32 dims: [16]}]')


def test_corrupt_model_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="failed to load"):
        _complete(tmp_path, b"not an onnx file")


def test_gpu_instance_group_without_gpu_is_refused(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a CUDA provider")
    with pytest.raises(ConfigError, match="asks for KIND_GPU"):
        _complete(tmp_path, mlp(), "instance_group [{kind: KIND_GPU}]")


def test_thread_parameters_must_be_integers(tmp_path: Path) -> None:
    text = 'parameters { key: "intra_op_thread_count" value: { string_value: "many" } }'
    with pytest.raises(ConfigError, match="intra_op_thread_count"):
        _complete(tmp_path, mlp(), text)


def test_infer_strings_and_bf16(tmp_path: Path) -> None:
    factory = OnnxFactory()
    config = _complete(tmp_path, identity(TensorProto.STRING, ["b", 2]))
    runtime = factory.load(config, tmp_path / "model.onnx", OPTS)
    data = np.array([[b"a\x00b", "é".encode()]], dtype=object)
    out = runtime.infer({"INPUT0": data}, ["OUTPUT0"])["OUTPUT0"]
    assert list(out.ravel()) == list(data.ravel())
    with pytest.raises(InvalidArgument, match="UTF-8"):
        runtime.infer({"INPUT0": np.array([[b"\xff", b"x"]], dtype=object)}, ["OUTPUT0"])

    config = _complete(tmp_path, identity(TensorProto.BFLOAT16, ["b", 3]))
    runtime = factory.load(config, tmp_path / "model.onnx", OPTS)
    x = np.array([[1.5, -2, 3.25]], dtype=ml_dtypes.bfloat16)
    out = runtime.infer({"INPUT0": x}, [])["OUTPUT0"]
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, x)


def test_factory_for_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="unable to find backend library for backend 'tensorrt'"):
        factory_for(mc.ModelConfig(name="m", platform="tensorrt_plan"))
    assert isinstance(factory_for(mc.ModelConfig(name="m", backend="onnxruntime")), OnnxFactory)


def test_a_config_without_outputs_gets_every_output_of_the_model(tmp_path: Path) -> None:
    """Autocomplete lists all of the model's outputs when the config names none (it used to
    stop after the first: the repeated field it filled was read as "the config lists some")."""
    config = _complete(tmp_path, add_sub())
    assert [o.name for o in config.output] == ["OUTPUT0", "OUTPUT1"]
    assert [i.name for i in config.input] == ["INPUT0", "INPUT1"]
    # a config that lists a subset keeps its subset
    subset = _complete(tmp_path, add_sub(), 'output [{ name: "OUTPUT1" }]')
    assert [o.name for o in subset.output] == ["OUTPUT1"]
