"""Logs through pb_utils.Logger at every level; OUTPUT0 echoes INPUT0."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        logger = pb_utils.Logger
        logger.log_info(f"logger model initialized: {args['model_instance_name']}")

    def execute(self, requests):
        logger = pb_utils.Logger
        responses = []
        for request in requests:
            input0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            logger.log_info(f"log_info: {input0.size} elements")
            logger.log_warn("log_warn: a warning")
            logger.log_error("log_error: an error")
            logger.log_verbose("log_verbose: a verbose line")
            logger.log("log with level INFO", logger.INFO)
            output0 = pb_utils.Tensor("OUTPUT0", input0)
            responses.append(pb_utils.InferenceResponse(output_tensors=[output0]))
        return responses

    def finalize(self):
        pb_utils.Logger.log_info("logger model finalized")
