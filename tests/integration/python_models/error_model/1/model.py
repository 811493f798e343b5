"""Fails on purpose, in the ways Python models fail, selected by MODE.

0: answers OUTPUT0 = MODE
1: an error response with code INVALID_ARG
2: raises ValueError in execute
3: an error response with no code
4..10: error responses with codes NOT_FOUND, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS,
       INTERNAL, UNKNOWN, CANCELLED
11: raises pb_utils.TritonModelException
12: answers OUTPUT0 as INT64 although the configuration says INT32
13: answers OUTPUT0 with shape [2] although the configuration says [1]
14: returns no responses at all (an empty list)
15: returns None
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # Triton adds TritonError (and Tensor, InferenceResponse...) to pb_utils after it imports
        # this file: module-level uses fail to load
        self.codes = {
            1: pb_utils.TritonError.INVALID_ARG,
            4: pb_utils.TritonError.NOT_FOUND,
            5: pb_utils.TritonError.UNAVAILABLE,
            6: pb_utils.TritonError.UNSUPPORTED,
            7: pb_utils.TritonError.ALREADY_EXISTS,
            8: pb_utils.TritonError.INTERNAL,
            9: pb_utils.TritonError.UNKNOWN,
            10: pb_utils.TritonError.CANCELLED,
        }

    def execute(self, requests):
        responses = []
        for request in requests:
            mode = int(pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0])
            if mode == 2:
                raise ValueError(f"mode {mode}: execute raised ValueError")
            if mode == 11:
                raise pb_utils.TritonModelException(f"mode {mode}: TritonModelException")
            if mode == 14:
                return []
            if mode == 15:
                return None
            if mode in self.codes:
                error = pb_utils.TritonError(f"mode {mode}: error response", self.codes[mode])
                responses.append(pb_utils.InferenceResponse(error=error))
            elif mode == 3:
                error = pb_utils.TritonError(f"mode {mode}: error response without a code")
                responses.append(pb_utils.InferenceResponse(error=error))
            elif mode == 12:
                out = pb_utils.Tensor("OUTPUT0", np.array([mode], dtype=np.int64))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            elif mode == 13:
                out = pb_utils.Tensor("OUTPUT0", np.array([mode, mode], dtype=np.int32))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            else:
                out = pb_utils.Tensor("OUTPUT0", np.array([mode], dtype=np.int32))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
