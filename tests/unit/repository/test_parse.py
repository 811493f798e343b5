"""config.pbtxt parsing: Triton's full schema, and errors that name file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.datatypes import config_to_wire
from modelyard.errors import ConfigError
from modelyard.repository import ModelConfigError, load_config
from modelyard.repository._pbtxt import parse_text

EVERYTHING = """
# comments are fine
name: "everything"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
runtime: ""
version_policy: { specific: { versions: [ 1, 3 ] } }
max_batch_size: 16
input [
  {
    name: "INPUT0"
    data_type: TYPE_FP32
    format: FORMAT_NONE
    dims: [ -1, 4 ]
    reshape: { shape: [ -1, 2, 2 ] }
    allow_ragged_batch: false
    optional: true
  },
  { name: "SHAPE" data_type: TYPE_INT32 dims: [ 2 ] is_shape_tensor: true },
  { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "HALF" data_type: TYPE_BF16 dims: [ 3 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" }
]
batch_input [
  { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_INT32 source_input: "INPUT0" }
]
optimization {
  graph { level: 1 }
  priority: PRIORITY_MAX
  cuda { graphs: true busy_wait_events: true output_copy_stream: true }
  execution_accelerators {
    gpu_execution_accelerator: [
      { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } }
    ]
    cpu_execution_accelerator: [ { name: "openvino" } ]
  }
  input_pinned_memory { enable: false }
  gather_kernel_buffer_threshold: 4
  eager_batching: true
}
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  preserve_ordering: false
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 10 max_queue_size: 3 }
  priority_queue_policy { key: 2 value { timeout_action: DELAY allow_timeout_override: true } }
}
instance_group [
  { name: "cpu" count: 2 kind: KIND_CPU },
  { count: 1 kind: KIND_GPU gpus: [ 0, 1 ] profile: [ "0" ] },
  { kind: KIND_MODEL passive: true host_policy: "numa0" }
]
default_model_filename: "model.onnx"
cc_model_filenames { key: "7.5" value: "model_75.onnx" }
metric_tags { key: "team" value: "search" }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    count: 2
    inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
  }
]
model_transaction_policy { decoupled: false }
response_cache { enable: false }
model_repository_agents { agents [ { name: "checksum" parameters { key: "a" value: "b" } } ] }
"""

SEQUENCE = """
name: "seq"
backend: "python"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "IN_STATE" output_name: "OUT_STATE" data_type: TYPE_FP32 dims: [ 1 ] } ]
  direct { max_queue_delay_microseconds: 100 minimum_slot_utilization: 0.5 }
}
"""

ENSEMBLE = """
name: "ens"
platform: "ensemble"
ensemble_scheduling {
  step [
    {
      model_name: "a"
      model_version: -1
      input_map { key: "x" value: "y" }
      output_map { key: "o" value: "p" }
    }
  ]
}
"""


def test_parses_every_field_triton_accepts(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(EVERYTHING)
    config = load_config(path)
    assert config.name == "everything"
    assert config.platform == "onnxruntime_onnx"
    assert list(config.version_policy.specific.versions) == [1, 3]
    assert list(config.input[0].dims) == [-1, 4]
    assert list(config.input[0].reshape.shape) == [-1, 2, 2]
    assert config.input[0].optional
    assert config.input[1].is_shape_tensor
    assert config.output[0].label_filename == "labels.txt"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.dynamic_batching.priority_queue_policy[2].allow_timeout_override
    assert [g.count for g in config.instance_group] == [2, 1, 0]
    assert list(config.instance_group[1].gpus) == [0, 1]
    assert config.instance_group[1].kind == mc.ModelInstanceGroup.KIND_GPU
    assert config.optimization.cuda.graphs
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert config.default_model_filename == "model.onnx"
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    assert config.model_warmup[0].inputs["INPUT0"].zero_data
    assert config.model_repository_agents.agents[0].name == "checksum"


def test_parses_sequence_batching(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(SEQUENCE)
    config = load_config(path)
    assert config.sequence_batching.direct.minimum_slot_utilization == 0.5
    assert config.sequence_batching.control_input[1].control[0].data_type == mc.TYPE_UINT64
    assert config.sequence_batching.state[0].output_name == "OUT_STATE"


def test_parses_ensemble_scheduling(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(ENSEMBLE)
    config = load_config(path)
    assert config.ensemble_scheduling.step[0].model_version == -1
    assert config.ensemble_scheduling.step[0].input_map["x"] == "y"


@pytest.mark.parametrize(
    ("config_type", "wire"),
    [("TYPE_STRING", "BYTES"), ("TYPE_BF16", "BF16"), ("TYPE_FP32", "FP32"), ("TYPE_BOOL", "BOOL")],
)
def test_config_datatypes_map_to_wire_names(tmp_path: Path, config_type: str, wire: str) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(f'input [ {{ name: "x" data_type: {config_type} dims: [ 1 ] }} ]')
    config = load_config(path)
    assert config_to_wire(mc.DataType.Name(config.input[0].data_type)) == wire


@pytest.mark.parametrize(
    ("text", "position", "detail"),
    [
        (
            'name: "m"\n\nbogus: 1\n',
            "3:1",
            'Message type "inference.ModelConfig" has no field named "bogus".',
        ),
        (
            'name: "m"\ninput [ { name: "x" data_type: TYPE_FOO } ]\n',
            "2:32",
            'Enum type "inference.DataType" has no value named TYPE_FOO.',
        ),
        ('max_batch_size: "eight"\n', "1:17", 'Couldn\'t parse integer: "eight"'),
        (
            'name: "a"\nname: "b"\n',
            "2:7",
            'Message type "inference.ModelConfig" should not have multiple "name" fields.',
        ),
        ('name: "m"\ninput [ { name: "x" \n', "2:17", 'Expected "}".'),
        (
            "sequence_batching { }\nensemble_scheduling { }\n",
            "2:1",
            'Field "ensemble_scheduling" is specified along with field "sequence_batching"',
        ),
    ],
)
def test_parse_errors_name_file_line_and_column(
    tmp_path: Path, text: str, position: str, detail: str
) -> None:
    path = tmp_path / "m" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ModelConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{position}: ")
    assert detail in str(info.value)
    assert info.value.path == path
    assert isinstance(info.value, ConfigError)


def test_the_brief_example_message(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nbackend: "python"\nbogus: 1\n')
    with pytest.raises(ModelConfigError) as info:
        load_config(path)
    expected = f'{path}:3:1: Message type "inference.ModelConfig" has no field named "bogus".'
    assert str(info.value) == expected


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_bytes(b'name: "\xff"\n')
    with pytest.raises(ModelConfigError, match="not valid UTF-8"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match="failed to read text proto"):
        load_config(tmp_path / "config.pbtxt")


def test_parse_text_without_position() -> None:
    # an empty document parses to an empty message (Triton accepts an empty config.pbtxt)
    assert parse_text("", mc.ModelConfig(), source=Path("x")).ByteSize() == 0
