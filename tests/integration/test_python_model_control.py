"""Triton's model loading API from a Python model (``pb_utils.load_model``,
``unload_model``, ``is_model_ready``), through the server's own repository logic."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from modelyard.testing import running_server
from tests.factories.onnx_models import add_sub, write_model
from tests.factories.python_models import write_python_model

CONTROLLER_PY = """
import base64, json
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.seen = []

    def execute(self, requests):
        out = []
        for request in requests:
            order = json.loads(pb_utils.get_input_tensor_by_name(request, "CMD").as_numpy()[0])
            steps = []
            for op, *arg in order:
                try:
                    if op == "ready":
                        steps.append(pb_utils.is_model_ready(*arg))
                    elif op == "load":
                        name, config, files = (arg + [None, None])[:3]
                        files = {k: base64.b64decode(v) for k, v in (files or {}).items()}
                        steps.append(pb_utils.load_model(name, config or "", files or None))
                    elif op == "unload":
                        steps.append(pb_utils.unload_model(*arg))
                except pb_utils.TritonModelException as exc:
                    steps.append("error: " + str(exc))
            answer = np.array([json.dumps(steps).encode()], dtype=np.object_)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", answer)]))
        return out
"""

CONTROLLER_CONFIG = """
name: "controller"
backend: "python"
input [ { name: "CMD", data_type: TYPE_STRING, dims: [ 1 ] } ]
output [ { name: "OUT", data_type: TYPE_STRING, dims: [ 1 ] } ]
"""


def _run(base: str, *steps: list[object]) -> list[object]:
    body = {
        "inputs": [{"name": "CMD", "shape": [1], "datatype": "BYTES", "data": [json.dumps(steps)]}]
    }
    answer = httpx.post(f"{base}/v2/models/controller/infer", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    result: list[object] = json.loads(answer.json()["outputs"][0]["data"][0])
    return result


def test_a_python_model_loads_checks_and_unloads_other_models(tmp_path: Path) -> None:
    write_python_model(tmp_path, "controller", CONTROLLER_PY, CONTROLLER_CONFIG)
    write_model(tmp_path, "add_sub", add_sub(), None)
    args = ["--model-control-mode", "explicit", "--load-model", "controller"]
    with running_server(tmp_path, args) as server:
        base = server.base_url
        assert _run(base, ["ready", "add_sub"]) == [False]
        assert _run(base, ["load", "add_sub"], ["ready", "add_sub"], ["ready", "add_sub", "1"]) == [
            None,
            True,
            True,
        ]
        assert httpx.get(f"{base}/v2/models/add_sub/ready", timeout=10).status_code == 200
        assert _run(base, ["unload", "add_sub"], ["ready", "add_sub"]) == [None, False]
        assert httpx.get(f"{base}/v2/models/add_sub/ready", timeout=10).status_code == 400
        # failures come back as the model's exception, with the server's message
        (failed,) = _run(base, ["load", "nobody"])
        assert isinstance(failed, str) and failed.startswith("error: ") and "nobody" in failed


def test_load_model_with_files_uses_triton_spelling_of_the_keys(tmp_path: Path) -> None:
    import base64

    write_python_model(tmp_path, "controller", CONTROLLER_PY, CONTROLLER_CONFIG)
    config = json.dumps({"name": "fresh", "backend": "onnxruntime"})
    files = {"file:1/model.onnx": base64.b64encode(add_sub()).decode()}
    args = ["--model-control-mode", "explicit", "--load-model", "controller"]
    with running_server(tmp_path, args) as server:
        assert _run(server.base_url, ["load", "fresh", config, files], ["ready", "fresh"]) == [
            None,
            True,
        ]
        body = {
            "inputs": [
                {"name": n, "shape": [16], "datatype": "FP32", "data": [1.0] * 16}
                for n in ("INPUT0", "INPUT1")
            ]
        }
        answer = httpx.post(f"{server.base_url}/v2/models/fresh/infer", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
