"""Like bls_caller, with `async def execute` and `await InferenceRequest.async_exec()`."""

import asyncio
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        return await asyncio.gather(*(self.forward(request) for request in requests))

    async def forward(self, request):
        name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME")
        if name is not None:
            model_name = name.as_numpy()[0].decode("utf-8")
        else:
            model_name = json.loads(request.parameters()).get("model_name", "add_sub")
        infer_request = pb_utils.InferenceRequest(
            model_name=model_name,
            requested_output_names=["OUTPUT0", "OUTPUT1"],
            inputs=[
                pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                pb_utils.get_input_tensor_by_name(request, "INPUT1"),
            ],
        )
        infer_response = await infer_request.async_exec()
        if infer_response.has_error():
            return pb_utils.InferenceResponse(error=infer_response.error())
        return pb_utils.InferenceResponse(output_tensors=infer_response.output_tensors())
