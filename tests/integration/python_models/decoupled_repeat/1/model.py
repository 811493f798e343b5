"""A decoupled model: N responses per request through the response sender, then FINAL."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException(
                "decoupled_repeat must be configured with a decoupled transaction policy"
            )

    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            payload = pb_utils.get_input_tensor_by_name(request, "PAYLOAD").as_numpy()[0]
            sender = request.get_response_sender()
            if n < 0:
                error = pb_utils.TritonError(f"N must not be negative, got {n}")
                sender.send(
                    pb_utils.InferenceResponse(error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                continue
            for i in range(n):
                out = pb_utils.Tensor("OUT", np.array([payload], dtype=np.object_))
                index = pb_utils.Tensor("INDEX", np.array([i], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out, index]))
            if payload == b"fail_after":
                error = pb_utils.TritonError(f"failed after {n} responses")
                sender.send(
                    pb_utils.InferenceResponse(error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                continue
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
