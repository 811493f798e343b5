"""Business Logic Scripting: forwards INPUT0/INPUT1 to another model with a blocking exec()."""

import json

import triton_python_backend_utils as pb_utils


def target_model(request):
    name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME")
    if name is not None:
        return name.as_numpy()[0].decode("utf-8")
    parameters = json.loads(request.parameters())
    return parameters.get("model_name", "add_sub")


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            infer_request = pb_utils.InferenceRequest(
                model_name=target_model(request),
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                inputs=[
                    pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                    pb_utils.get_input_tensor_by_name(request, "INPUT1"),
                ],
            )
            infer_response = infer_request.exec()
            if infer_response.has_error():
                error = pb_utils.TritonError(infer_response.error().message())
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            output0 = pb_utils.get_output_tensor_by_name(infer_response, "OUTPUT0")
            output1 = pb_utils.get_output_tensor_by_name(infer_response, "OUTPUT1")
            responses.append(pb_utils.InferenceResponse(output_tensors=[output0, output1]))
        return responses
