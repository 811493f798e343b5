"""Python-backend models written the way Triton users write them, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

ADD_SUB_PY = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return responses
"""

ADD_SUB_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ {dim} ] }},
  {{ name: "INPUT1", data_type: TYPE_FP32, dims: [ {dim} ] }}
]
output [
  {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ {dim} ] }},
  {{ name: "OUTPUT1", data_type: TYPE_FP32, dims: [ {dim} ] }}
]
instance_group [ {{ kind: KIND_CPU, count: {count} }} ]
"""

# sleeps SECONDS (an input), then echoes it: for hangs, timeouts and instance parallelism
SLEEP_PY = """import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            seconds = pb_utils.get_input_tensor_by_name(request, "SECONDS").as_numpy()
            time.sleep(float(seconds[0]))
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("PID", np.array([os.getpid()], dtype=np.int64))]))
        return responses
"""

SLEEP_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "SECONDS", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "PID", data_type: TYPE_INT64, dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: {count} }} ]
"""

# reports which version of the probe package its environment holds
PROBE_PY = """import numpy as np
import triton_python_backend_utils as pb_utils
import myard_probe


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "VERSION", np.array([myard_probe.__version__.encode()], dtype=object))])
            for _ in requests]
"""

PROBE_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "VERSION", data_type: TYPE_STRING, dims: [ 1 ] }} ]
"""

# BLS: the Python step in front of an ONNX network, as in a pre-processing pipeline
BLS_ONNX_PY = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            call = pb_utils.InferenceRequest(
                model_name="{target}",
                inputs=[pb_utils.Tensor("INPUT0", x * 2), pb_utils.Tensor("INPUT1", x)],
                requested_output_names=["OUTPUT0"])
            result = call.exec()
            if result.has_error():
                responses.append(pb_utils.InferenceResponse(error=result.error()))
                continue
            out = pb_utils.get_output_tensor_by_name(result, "OUTPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", out)]))
        return responses
"""

BLS_ONNX_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 16 ] }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ 16 ] }} ]
"""

CRASH_AT_INIT_PY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file is missing")

    def execute(self, requests):
        return []
"""


# BF16 in and out: ml_dtypes arithmetic on as_numpy() (modelyard's addition) and a
# DLPack pass-through of the input tensor (Triton's way, which needs no numpy type)
BF16_PY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X")
            assert x.triton_dtype() == 14, x.triton_dtype()  # TRITONSERVER_TYPE_BF16
            arr = x.as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("DOUBLED", (arr * 2).astype(arr.dtype)),
                pb_utils.Tensor.from_dlpack("SAME", x),
            ]))
        return responses
"""

BF16_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X", data_type: TYPE_BF16, dims: [ 4 ] }} ]
output [
  {{ name: "DOUBLED", data_type: TYPE_BF16, dims: [ 4 ] }},
  {{ name: "SAME", data_type: TYPE_BF16, dims: [ 4 ] }}
]
"""

# BLS to the model MODEL_NAME names, passing the name as as_numpy()[0] gives it (bytes), and
# the output names as bytes too: Triton takes bytes for every string argument of pb_utils
BLS_BYTES_NAME_PY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0]
            call = pb_utils.InferenceRequest(
                model_name=name,
                requested_output_names=[b"OUTPUT0"],
                inputs=[
                    pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                    pb_utils.get_input_tensor_by_name(request, "INPUT1"),
                ],
            )
            answer = call.exec()
            if answer.has_error():
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(answer.error().message())))
                continue
            out = pb_utils.get_output_tensor_by_name(answer, "OUTPUT0")
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""

BLS_BYTES_NAME_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] }},
  {{ name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }},
  {{ name: "MODEL_NAME", data_type: TYPE_STRING, dims: [ 1 ] }}
]
output [ {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] }} ]
"""

# initialize never returns: for the load timeout
HANG_AT_INIT_PY = """import time


class TritonPythonModel:
    def initialize(self, args):
        while True:
            time.sleep(1)

    def execute(self, requests):
        return []
"""

HANG_AT_INIT_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ 1 ] }} ]
"""


def write_python_model(root: Path, name: str, source: str, config: str) -> Path:
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.py").write_text(source)
    (folder / "config.pbtxt").write_text(config)
    return folder


def add_sub_model(root: Path, name: str = "py_add_sub", dim: int = 16, count: int = 1) -> Path:
    return write_python_model(
        root, name, ADD_SUB_PY, ADD_SUB_CONFIG.format(name=name, dim=dim, count=count)
    )


def sleep_model(root: Path, name: str = "sleeper", count: int = 1) -> Path:
    return write_python_model(root, name, SLEEP_PY, SLEEP_CONFIG.format(name=name, count=count))


def probe_model(root: Path, name: str, requirement: str) -> Path:
    folder = write_python_model(root, name, PROBE_PY, PROBE_CONFIG.format(name=name))
    (folder / "requirements.txt").write_text(requirement + "\n")
    return folder


def bls_onnx_model(root: Path, name: str, target: str) -> Path:
    return write_python_model(
        root, name, BLS_ONNX_PY.replace("{target}", target), BLS_ONNX_CONFIG.format(name=name)
    )


def bf16_model(root: Path, name: str = "py_bf16") -> Path:
    return write_python_model(root, name, BF16_PY, BF16_CONFIG.format(name=name))


def bls_bytes_name_model(root: Path, name: str = "bls_bytes_name") -> Path:
    return write_python_model(
        root, name, BLS_BYTES_NAME_PY, BLS_BYTES_NAME_CONFIG.format(name=name)
    )


def hang_at_init_model(root: Path, name: str = "hang_init") -> Path:
    return write_python_model(root, name, HANG_AT_INIT_PY, HANG_AT_INIT_CONFIG.format(name=name))
