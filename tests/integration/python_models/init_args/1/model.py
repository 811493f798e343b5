"""ARGS: the `args` dictionary initialize() received, as JSON with sorted keys."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = json.dumps(args, sort_keys=True)

    def execute(self, requests):
        out = pb_utils.Tensor("ARGS", np.array([self.args.encode("utf-8")], dtype=np.object_))
        return [pb_utils.InferenceResponse(output_tensors=[out]) for _ in requests]
