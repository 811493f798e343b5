"""Upper-cases and reverses each string; LENGTH is each input element's length in bytes."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            flat = texts.reshape(-1)
            shouted = [t.decode("utf-8").upper()[::-1].encode("utf-8") for t in flat]
            out = np.array(shouted, dtype=np.object_).reshape(texts.shape)
            lengths = np.array([len(t) for t in flat], dtype=np.int32).reshape(texts.shape)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", out),
                        pb_utils.Tensor("LENGTH", lengths),
                    ]
                )
            )
        return responses
