"""Names Triton fixes in its source, and the one error type this package raises.

Kept apart from ``config.py`` so that the parser, the validator and the layout code can all
import them without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from modelyard.errors import ConfigError

CONFIG_FILENAME: Final = "config.pbtxt"

ENSEMBLE_PLATFORM: Final = "ensemble"
PYTHON_BACKEND: Final = "python"
ONNXRUNTIME_BACKEND: Final = "onnxruntime"
TENSORRT_BACKEND: Final = "tensorrt"
TENSORFLOW_BACKEND: Final = "tensorflow"
PYTORCH_BACKEND: Final = "pytorch"
OPENVINO_BACKEND: Final = "openvino"

# Triton's GetBackendTypeFromPlatform: the platforms that name a backend.
PLATFORM_TO_BACKEND: Final[dict[str, str]] = {
    "onnxruntime_onnx": ONNXRUNTIME_BACKEND,
    "tensorrt_plan": TENSORRT_BACKEND,
    "pytorch_libtorch": PYTORCH_BACKEND,
    "tensorflow_savedmodel": TENSORFLOW_BACKEND,
    "tensorflow_graphdef": TENSORFLOW_BACKEND,
}

# Triton's kXxxFilename constants: what a backend loads when default_model_filename is empty.
BACKEND_DEFAULT_FILENAME: Final[dict[str, str]] = {
    ONNXRUNTIME_BACKEND: "model.onnx",
    TENSORRT_BACKEND: "model.plan",
    PYTORCH_BACKEND: "model.pt",
    PYTHON_BACKEND: "model.py",
    OPENVINO_BACKEND: "model.xml",
}
PLATFORM_DEFAULT_FILENAME: Final[dict[str, str]] = {
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
    "onnxruntime_onnx": "model.onnx",
    "tensorrt_plan": "model.plan",
    "pytorch_libtorch": "model.pt",
}

# Folders inside a model directory that Triton never treats as versions.
NON_VERSION_FOLDERS: Final = frozenset({"warmup", "initial_state"})

# Triton's default --min-compute-capability, printed with std::to_string(double).
MIN_COMPUTE_CAPABILITY: Final = 6.0


class ModelConfigError(ConfigError):
    """A model configuration Triton would refuse.

    ``reason`` is Triton's own text, word for word, so the protocol layer can answer exactly
    what Triton answers; ``path`` is the config file (or model folder) when there is one, and
    the message (``str(err)``) is ``"<path>: <reason>"``, or ``"<path>:<line>:<col>: <reason>"``
    for a syntax error, so that a user reading a log knows where to look.
    """

    def __init__(
        self,
        reason: str,
        path: Path | None = None,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        where = "" if path is None else str(path)
        if where and line is not None:
            where += f":{line}" if column is None else f":{line}:{column}"
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.path = path
        self.line = line
        self.column = column
