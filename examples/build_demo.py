"""Regenerates examples/demo_repository from tests/factories (seeded, byte-for-byte stable).

usage: python examples/build_demo.py [OUT_DIR]     (needs the test extra: onnx)
A test rebuilds it into a temporary folder and compares with the committed files.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx import TensorProto  # noqa: E402
from tests.factories.onnx_models import add_sub, identity, mlp, write_model  # noqa: E402

ADD_SUB_CONFIG = """\
# Triton's classic example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1
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

CLASSIFIER_CONFIG = """\
# A small MLP classifier; ask for OUTPUT with class_count to get labelled top-k classes
name: "classifier"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ 8 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 3 ], label_filename: "labels.txt" } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
dynamic_batching { }
"""


def build(out: Path) -> None:
    write_model(out, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB_CONFIG)
    folder = write_model(out, "classifier", mlp((8, 32, 3), seed=7), CLASSIFIER_CONFIG)
    (folder / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    # no config.pbtxt: auto-complete fills it from the graph, as Triton does
    write_model(out, "echo_bytes", identity(TensorProto.STRING, ["batch", 1]), None)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples" / "demo_repository")
