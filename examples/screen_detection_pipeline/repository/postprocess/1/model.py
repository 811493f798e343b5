"""Post-processing: the network's raw output becomes a box in the original image's pixels,
a confidence, and a label."""

import numpy as np
import triton_python_backend_utils as pb_utils

THRESHOLD = 0.5


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "RAW").as_numpy()
            sizes = pb_utils.get_input_tensor_by_name(request, "IMAGE_SIZE").as_numpy()
            corners = 1.0 / (1.0 + np.exp(-raw[:, :4]))  # relative x0, y0, x1, y1
            corners = np.concatenate(  # top-left, then bottom-right
                [
                    np.minimum(corners[:, :2], corners[:, 2:]),
                    np.maximum(corners[:, :2], corners[:, 2:]),
                ],
                axis=1,
            )
            heights, widths = sizes[:, :1].astype(np.float32), sizes[:, 1:].astype(np.float32)
            boxes = corners * np.concatenate([widths, heights, widths, heights], axis=1)
            scores = 1.0 / (1.0 + np.exp(-raw[:, 4:5]))
            labels = np.array(
                [[b"screen" if s >= THRESHOLD else b"no_screen"] for s in scores[:, 0]],
                dtype=object,
            )
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("BOX", boxes.astype(np.float32)),
                        pb_utils.Tensor("SCORE", scores.astype(np.float32)),
                        pb_utils.Tensor("LABEL", labels),
                    ]
                )
            )
        return responses
