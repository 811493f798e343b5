"""An `async def execute` model: waits 10 ms per request (concurrently), returns INPUT0 * 2."""

import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        return await asyncio.gather(*(self.double(request) for request in requests))

    async def double(self, request):
        await asyncio.sleep(0.01)
        input0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", input0 * 2)])
