"""OUTPUT = INPUT; an error response when INPUT holds a negative number, and execute raises
when it holds a number above 1000."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            if (x > 1000).any():
                raise ValueError("check: input above 1000")
            if (x < 0).any():
                error = pb_utils.TritonError("check: negative input")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", x)]))
        return responses
