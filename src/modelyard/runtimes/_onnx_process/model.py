"""An ONNX model as a Triton Python model, for a worker process (see the package docstring).

The session is opened exactly as the in-server runtime opens it (``runtimes/onnx.py``: the
config's session options, the CUDA provider check, the thread pool chosen from the measured
cost), so placement changes where a model runs and nothing else. The server stacks a
dynamic batch into one request (the runner's ``stacks_batches``), so a batch is one
``session.run`` here, as in Triton's onnxruntime backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2 as mc

        from modelyard.runtimes.onnx import OnnxRuntime, open_session
        from modelyard.runtimes.python.factory import MODEL_FILE_ARG

        config = json_format.ParseDict(
            json.loads(args["model_config"]), mc.ModelConfig(), ignore_unknown_fields=True
        )
        session, choice = open_session(Path(args[MODEL_FILE_ARG]), config)
        self._runtime = OnnxRuntime(session, config, choice)
        if choice is not None:
            pb_utils.Logger.log_info(f"model '{config.name}' in its own process: {choice.reason}")

    def execute(self, requests: list[Any]) -> list[Any]:
        from modelyard.errors import ModelyardError

        responses = []
        for request in requests:
            feed = {t.name(): t.as_numpy() for t in request.inputs()}
            try:
                outputs = self._runtime.infer(feed, request.requested_output_names())
            except ModelyardError as exc:
                # one request's failure is its own response: the others in the call still run
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            tensors = [pb_utils.Tensor(name, value) for name, value in outputs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self._runtime.unload()
