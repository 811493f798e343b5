"""OUTPUT0 = INPUT0 + INPUT1 when the optional INPUT1 is sent, else INPUT0 * 10."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            input0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            input1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")
            result = input0 * 10 if input1 is None else input0 + input1.as_numpy()
            used = np.array([input1 is not None], dtype=bool)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", result.astype(np.float32)),
                        pb_utils.Tensor("USED_INPUT1", used),
                    ]
                )
            )
        return responses
