"""MLServer custom runtimes for the benchmark: onnxruntime (``mlp``) and numpy (``add_sub``).

Copied into the generated MLServer repository, which MLServer puts on ``sys.path``.
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        uri = self.settings.parameters.uri
        self._sess = ort.InferenceSession(uri, so, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._sess.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        ys = self._sess.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(n, y) for n, y in zip(self._outputs, ys, strict=True)
            ],
        )


class AddSubModel(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        a, b = (NumpyCodec.decode_input(i).astype(np.float32) for i in payload.inputs[:2])
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("OUTPUT0", a + b),
                NumpyCodec.encode_output("OUTPUT1", a - b),
            ],
        )
