"""Pre-processing: a raw RGB image (any size) becomes the network's normalised 3x32x32 input.

The maths lives in the team's `screen_preprocessing` package (pinned in requirements.txt),
the same code the training pipeline uses.
"""

import numpy as np
import triton_python_backend_utils as pb_utils
from screen_preprocessing import to_network_input


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "RAW_IMAGE").as_numpy()
            sizes = np.array([img.shape[:2] for img in images], dtype=np.int32)
            batch = np.stack([to_network_input(img) for img in images])
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("IMAGE", batch), pb_utils.Tensor("IMAGE_SIZE", sizes)]
                )
            )
        return responses
