"""config.pbtxt -> Triton's own ``ModelConfig``, with Triton's defaults and checks.

The schema is Triton's (``tritonclient.grpc.model_config_pb2``), so every field Triton accepts
parses, and the config we serve back is the one Triton would serve. Loading a model's config
is Triton's sequence, each step a function here:

1. :func:`load_config` parses the text (errors name ``file:line:col``);
2. :func:`normalize_config` fills what Triton fills (``AutoCompleteBackendFields``,
   ``NormalizeModelConfig``, ``NormalizeInstanceGroup``);
3. :func:`validate_config` refuses what Triton refuses, in Triton's words;
4. :func:`config_to_json` renders it the way ``GET /v2/models/{m}/config`` does.

A runtime that completes a config from the model file (ONNX inputs, say) runs between 1 and 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository._common import (
    CONFIG_FILENAME,
    ONNXRUNTIME_BACKEND,
    OPENVINO_BACKEND,
    PYTHON_BACKEND,
    PYTORCH_BACKEND,
    TENSORFLOW_BACKEND,
    TENSORRT_BACKEND,
    ModelConfigError,
)
from modelyard.repository._json import config_to_json
from modelyard.repository._pbtxt import parse_file
from modelyard.repository._validate import validate_config

__all__ = [
    "ModelConfig",
    "ModelConfigError",
    "config_to_json",
    "load_config",
    "normalize_config",
    "validate_config",
]

ModelConfig = mc.ModelConfig

SEQUENCE_IDLE_DEFAULT_MICROSECONDS: Final = 1_000_000

_SAVEDMODEL, _GRAPHDEF = "tensorflow_savedmodel", "tensorflow_graphdef"
_SAVEDMODEL_FILE, _GRAPHDEF_FILE = "model.savedmodel", "model.graphdef"


def load_config(config_path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt; a syntax error raises ModelConfigError naming ``file:line:col``."""
    config: mc.ModelConfig = parse_file(config_path, mc.ModelConfig())
    return config


def normalize_config(
    config: mc.ModelConfig, *, model_dir: Path | None = None, gpus: Sequence[int] = ()
) -> None:
    """Fill Triton's defaults in place, so the served config reads like Triton's.

    ``model_dir`` gives the folder name (the model name when the config has none) and the
    first version folder, whose files tell the backend when the config names none, exactly as
    Triton's autofill does. ``gpus`` are the usable GPU ids: without any, ``KIND_AUTO``
    instance groups become ``KIND_CPU``. Calling it twice changes nothing the second time.
    """
    _autocomplete_backend_fields(config, model_dir)
    _normalize_model_config(config)
    _normalize_instance_groups(config, gpus)


def _autocomplete_backend_fields(config: mc.ModelConfig, model_dir: Path | None) -> None:
    """Triton's ``AutoCompleteBackendFields`` (as of 2.51): name, backend, platform, file."""
    model_name = model_dir.name if model_dir is not None else config.name
    if not config.name:
        config.name = model_name
    version_dir = _first_subdir(model_dir)
    has_version = version_dir is not None

    def present(filename: str, *, want_dir: bool | None = None) -> bool:
        if version_dir is None or config.platform or config.default_model_filename:
            return False
        path = version_dir / filename
        if want_dir is None:
            return path.exists()
        return path.exists() and path.is_dir() == want_dir

    # TensorFlow: the platform decides the backend.
    if not config.platform and config.backend in ("", TENSORFLOW_BACKEND):
        if config.default_model_filename == _SAVEDMODEL_FILE:
            config.platform = _SAVEDMODEL
        elif config.default_model_filename == _GRAPHDEF_FILE:
            config.platform = _GRAPHDEF
        elif has_version:
            if present(_SAVEDMODEL_FILE, want_dir=True):
                config.platform = _SAVEDMODEL
            if present(_GRAPHDEF_FILE, want_dir=False):
                config.platform = _GRAPHDEF
    if config.platform in (_SAVEDMODEL, _GRAPHDEF):
        config.backend = config.backend or TENSORFLOW_BACKEND
        if not config.default_model_filename:
            is_saved = config.platform == _SAVEDMODEL
            config.default_model_filename = _SAVEDMODEL_FILE if is_saved else _GRAPHDEF_FILE
        return

    for backend, platform, filename, want_dir in (
        (TENSORRT_BACKEND, "tensorrt_plan", "model.plan", False),
        (ONNXRUNTIME_BACKEND, "onnxruntime_onnx", "model.onnx", None),
        (OPENVINO_BACKEND, "", "model.xml", None),
        (PYTORCH_BACKEND, "pytorch_libtorch", "model.pt", False),
        (PYTHON_BACKEND, "", "model.py", None),
    ):
        if not config.backend:
            named = (platform and config.platform == platform) or (
                config.default_model_filename == filename
            )
            if named or present(filename, want_dir=want_dir):
                config.backend = backend
        if config.backend == backend:
            if platform and not config.platform:
                config.platform = platform
            if not config.default_model_filename:
                config.default_model_filename = filename
            return

    # A custom backend is only guessed when the config says nothing at all.
    if not (config.backend or config.platform or config.default_model_filename):
        if "." not in model_name:
            where = _config_file_or_dir(model_dir)
            raise ModelConfigError(
                f"Invalid model name: Could not determine backend for model '{model_name}' "
                "with no backend in model configuration. Expected model name of the form "
                "'model.<backend_name>'.",
                where,
            )
        backend = model_name.split(".", 1)[1]
        config.backend = backend
        config.default_model_filename = f"model.{backend}"


def _first_subdir(model_dir: Path | None) -> Path | None:
    """Triton inspects the first subdirectory in byte order, numeric or not."""
    if model_dir is None or not model_dir.is_dir():
        return None
    subdirs = sorted((p for p in model_dir.iterdir() if p.is_dir()), key=lambda p: p.name.encode())
    return subdirs[0] if subdirs else None


def _config_file_or_dir(model_dir: Path | None) -> Path | None:
    if model_dir is None:
        return None
    config_path = model_dir / CONFIG_FILENAME
    return config_path if config_path.exists() else model_dir


def _normalize_model_config(config: mc.ModelConfig) -> None:
    """Triton's ``NormalizeModelConfig``."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if config.HasField("dynamic_batching"):
        batching = config.dynamic_batching
        if not batching.preferred_batch_size and config.max_batch_size > 0:
            batching.preferred_batch_size.append(config.max_batch_size)
    if config.HasField("sequence_batching"):
        sequence = config.sequence_batching
        if sequence.max_sequence_idle_microseconds == 0:
            sequence.max_sequence_idle_microseconds = SEQUENCE_IDLE_DEFAULT_MICROSECONDS
        if sequence.HasField("oldest"):
            oldest = sequence.oldest
            if not oldest.preferred_batch_size and config.max_batch_size > 0:
                oldest.preferred_batch_size.append(config.max_batch_size)
    if config.HasField("ensemble_scheduling"):
        # Triton sets an ensemble's transaction policy when it checks the composing models
        # (decoupled if one of them is): the field is always present on an ensemble
        config.model_transaction_policy.SetInParent()
    else:
        optimization = config.optimization
        if not optimization.HasField("input_pinned_memory"):
            optimization.input_pinned_memory.enable = True
        if not optimization.HasField("output_pinned_memory"):
            optimization.output_pinned_memory.enable = True


def _normalize_instance_groups(config: mc.ModelConfig, gpus: Sequence[int]) -> None:
    """Triton's ``NormalizeInstanceGroup``, minus backend-preferred groups (ours have none)."""
    if config.HasField("ensemble_scheduling"):
        return
    Group = mc.ModelInstanceGroup
    supported = sorted(set(gpus))
    if not config.instance_group:
        config.instance_group.add(name=config.name)
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.kind == Group.KIND_AUTO:
            usable = bool(supported) and all(g in supported for g in group.gpus)
            group.kind = Group.KIND_GPU if usable else Group.KIND_CPU
        if group.count < 1:
            # Triton's SetDefaultInstanceCount: two CPU instances for TF and ORT, else one.
            cpu_pair = group.kind == Group.KIND_CPU and config.backend in (
                TENSORFLOW_BACKEND,
                ONNXRUNTIME_BACKEND,
            )
            group.count = 2 if cpu_pair else 1
        if group.kind == Group.KIND_GPU and not group.gpus:
            group.gpus.extend(supported)
