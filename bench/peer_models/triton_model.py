"""Triton Python-backend model for the benchmark: onnxruntime for ``mlp``, numpy for ``add_sub``.

Copied into the generated repository as ``<name>/1/model.py``; runs inside Triton's stub process.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        if args["model_name"] == "add_sub":
            self.fn = lambda a, b: [a + b, a - b]
            return
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = self.inputs
        self.fn = lambda *xs: sess.run(None, dict(zip(names, xs, strict=True)))

    def execute(self, requests):
        responses = []
        for request in requests:
            xs = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs]
            ys = self.fn(*xs)
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(y))
                for n, y in zip(self.outputs, ys, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
