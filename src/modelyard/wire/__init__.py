"""Framework-free encodings shared by the server and the client.

``v2``: KServe v2 / Open Inference Protocol JSON plus Triton's binary-tensor extension.
``classification``: Triton's classification extension as a pure numpy function.
"""

from modelyard.wire.classification import classify
from modelyard.wire.v2 import (
    RAW_INPUT_NAME,
    decode_infer_request,
    encode_infer_response,
)

__all__ = ["RAW_INPUT_NAME", "classify", "decode_infer_request", "encode_infer_response"]
