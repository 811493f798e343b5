"""Custom metrics: a counter of requests, a counter of elements and a gauge of the last sum.

OUTPUT0 echoes INPUT0; REQUESTS is the request counter's value after this request.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.requests_family = pb_utils.MetricFamily(
            name="custom_requests_total",
            description="Requests seen by the custom_metrics model",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.elements_family = pb_utils.MetricFamily(
            name="custom_elements_total",
            description="Input elements seen, by input",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.last_sum_family = pb_utils.MetricFamily(
            name="custom_last_input_sum",
            description="Sum of the last request's INPUT0",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self.requests = self.requests_family.Metric(labels=labels)
        self.elements = self.elements_family.Metric(labels={**labels, "input": "INPUT0"})
        self.last_sum = self.last_sum_family.Metric(labels=labels)

    def execute(self, requests):
        responses = []
        for request in requests:
            input0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            self.requests.increment(1)
            self.elements.increment(input0.size)
            self.last_sum.set(float(input0.sum()))
            count = np.array([self.requests.value()], dtype=np.float64)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", input0),
                        pb_utils.Tensor("REQUESTS", count),
                    ]
                )
            )
        return responses
