"""BLS into a decoupled model: iterate the responses of exec(decoupled=True)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            infer_request = pb_utils.InferenceRequest(
                model_name="decoupled_repeat",
                requested_output_names=["OUT", "INDEX"],
                inputs=[
                    pb_utils.get_input_tensor_by_name(request, "N"),
                    pb_utils.Tensor("PAYLOAD", np.array([b"bls"], dtype=np.object_)),
                ],
            )
            count, indices, payloads, error = 0, [], [], None
            for infer_response in infer_request.exec(decoupled=True):
                count += 1
                if infer_response.has_error():
                    error = infer_response.error().message()
                    break
                index = pb_utils.get_output_tensor_by_name(infer_response, "INDEX")
                if index is None:  # the last response only carries the final flag
                    continue
                indices.append(int(index.as_numpy()[0]))
                out = pb_utils.get_output_tensor_by_name(infer_response, "OUT")
                payloads.append(out.as_numpy()[0])
            if error is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error)))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("RESPONSES", np.array([count], dtype=np.int32)),
                        pb_utils.Tensor("INDICES", np.array(indices, dtype=np.int32)),
                        pb_utils.Tensor("PAYLOADS", np.array(payloads, dtype=np.object_)),
                    ]
                )
            )
        return responses
