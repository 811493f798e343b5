"""One real server per test module, over a repository of real ONNX models built here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from onnx import TensorProto

from modelyard.testing import RunningServer, running_server
from tests.factories.onnx_models import add_sub, identity, mlp, reshape_to, slow, write_model
from tests.integration.s3_server import aws_env, bucket, moto_server, s3  # noqa: F401 - fixtures

ADD_SUB = """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
"""

CLASSIFIER = """
name: "classifier"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ 8 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 3 ], label_filename: "labels.txt" } ]
"""

BYTES = """
name: "echo_bytes"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_STRING, dims: [ -1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_STRING, dims: [ -1 ] } ]
"""

SLOW = """
name: "slow"
backend: "onnxruntime"
max_batch_size: 1
input [ { name: "TRIPS", data_type: TYPE_INT64, dims: [ 1 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 1 ], reshape: { shape: [ ] } } ]
"""

VERSIONED = """
name: "versioned"
backend: "onnxruntime"
version_policy: { specific: { versions: [ 1, 3 ] } }
"""

# ONNX element type per Triton datatype, for the identity round trips
IDENTITY_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BF16": TensorProto.BFLOAT16,
}


def build_repository(repo: Path) -> Path:
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    folder = write_model(repo, "classifier", mlp((8, 32, 3), seed=7), CLASSIFIER)
    (folder / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    write_model(repo, "echo_bytes", identity(TensorProto.STRING, ["batch", "n"]), BYTES)
    write_model(repo, "mlp", mlp(), None)  # auto-completed from the graph
    write_model(repo, "slow", slow(), SLOW)
    for version in (1, 2, 3):
        write_model(
            repo, "versioned", add_sub(), VERSIONED if version == 1 else None, version=version
        )
    write_model(repo, "fails_at_run", reshape_to(4), None)  # runs only with 4 elements
    write_model(repo, "stats_probe", identity(TensorProto.INT16, ["batch", 4]), None)
    for wire, onnx_type in IDENTITY_TYPES.items():
        write_model(repo, f"identity_{wire.lower()}", identity(onnx_type, ["batch", 4]), None)
    broken = repo / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.onnx").write_bytes(add_sub())
    (broken / "config.pbtxt").write_text('name: "broken"\nbackend: "onnxruntime"\nbogus: 1\n')
    return repo


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    with running_server(repository, ["--http-max-input-size", str(1 << 20)]) as s:
        yield s
