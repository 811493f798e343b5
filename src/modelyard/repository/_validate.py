"""Triton's semantic checks on a model configuration, with Triton's own messages.

The messages are copied from ``triton-inference-server/core`` ``src/model_config_utils.cc``
(``ValidateModelConfig``, ``ValidateInstanceGroup``, ``ValidateModelIOConfig``,
``ValidateIOShape``, ``ValidateBatchIO``), ``src/model_repository_manager.cc`` (the folder-name
check) and ``src/backend_model.cc`` (unknown backend), and checked against a real Triton 2.51
in ``tests/unit/repository/fixtures/triton_rejections.json``. Checks run in Triton's order so
that a config with several faults reports the one Triton reports.

The ensemble graph (``ValidateEnsembleSchedulingConfig``) is checked in ``ensemble.py``; the
checks that need the composing models' configs run when those are loaded
(``ensemble.composing_fault``). Not covered yet: sequence-batching control inputs and
model_metrics.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository._common import (
    ENSEMBLE_PLATFORM,
    MIN_COMPUTE_CAPABILITY,
    PLATFORM_TO_BACKEND,
    ModelConfigError,
)
from modelyard.repository._versions import no_version_reason, select_versions
from modelyard.repository.ensemble import ensemble_scheduling_fault

WILDCARD_DIM = -1
_KNOWN_BACKEND_TYPES = frozenset(PLATFORM_TO_BACKEND.values())


def validate_config(
    config: mc.ModelConfig,
    *,
    folder_name: str,
    config_path: Path | None,
    known_backends: Collection[str] | None = None,
    gpus: Sequence[int] = (),
    versions: Sequence[int] | None = None,
) -> None:
    """Raise :class:`ModelConfigError` for the first fault Triton would report.

    Expects a config that went through ``normalize_config`` (as Triton validates after
    normalizing). ``known_backends`` is the set of backends modelyard can run; ``None``
    skips that check. ``gpus`` are the usable GPU ids (none on a CPU-only host).
    ``versions`` are the version folders present; given, Triton's "at least one version"
    check runs where Triton runs it (after the folder-name check, before the backend's).
    """

    def fail(reason: str) -> ModelConfigError:
        return ModelConfigError(reason, config_path)

    reason = model_config_fault(config)
    if reason is None and config.name != folder_name:
        reason = (
            f"unexpected directory name '{folder_name}' for model '{config.name}', "
            "directory name must equal model name"
        )
    if reason is None and versions is not None and not select_versions(config, versions):
        reason = no_version_reason(folder_name)
    unknown = known_backends is not None and config.backend not in known_backends
    if reason is None and config.backend and unknown:
        reason = (
            f"unable to find backend library for backend '{config.backend}', "
            "try specifying runtime on the model configuration."
        )
    if reason is None:
        reason = instance_group_fault(config, gpus)
    if reason is None:
        reason = io_fault(config)
    if reason is None and config_path is not None:
        reason = _label_file_fault(config, config_path.parent)
    if reason is not None:
        raise fail(reason)


def model_config_fault(config: mc.ModelConfig) -> str | None:
    """Triton's ``ValidateModelConfig``, minus sequence controls."""
    name = config.name
    if not name:
        return "model configuration must specify 'name'"
    if not config.backend:
        if config.platform != ENSEMBLE_PLATFORM:
            return f"unexpected platform type '{config.platform}' for {name}"
    elif config.platform == ENSEMBLE_PLATFORM:
        return (
            f"Ensemble model '{name}' must have platform type '{config.platform}' "
            "and empty backend type"
        )
    if config.backend in _KNOWN_BACKEND_TYPES and PLATFORM_TO_BACKEND.get(config.platform) != (
        config.backend
    ):
        return f"unexpected 'platform' and 'backend' pair, got:{config.platform}, {config.backend}"
    if config.max_batch_size < 0:
        return f"'max_batch_size' must be non-negative value for {name}"
    if not config.HasField("version_policy"):
        return f"must specify 'version policy' for {name}"
    if config.HasField("dynamic_batching"):
        fault = _dynamic_batching_fault(config)
        if fault is not None:
            return fault
    if config.HasField("sequence_batching"):
        fault = _sequence_batching_fault(config)
        if fault is not None:
            return fault
    if config.HasField("ensemble_scheduling"):
        fault = ensemble_scheduling_fault(config)
        if fault is not None:
            return fault
    elif config.platform == ENSEMBLE_PLATFORM:
        return (
            f"ensemble scheduling must be set for ensemble {name} whose platform is "
            f"{ENSEMBLE_PLATFORM}"
        )
    if config.model_transaction_policy.decoupled and config.response_cache.enable:
        return (
            f"Response Cache does not currently support model {name} with 'decoupled' "
            "transaction policy. Please disable the response cache."
        )
    return None


def _dynamic_batching_fault(config: mc.ModelConfig) -> str | None:
    name, batching = config.name, config.dynamic_batching
    for size in batching.preferred_batch_size:
        if size <= 0:
            return f"dynamic batching preferred size must be positive for {name}"
        if size > config.max_batch_size:
            return f"dynamic batching preferred size must be <= max batch size for {name}"
    levels = batching.priority_levels
    if levels != 0:
        if batching.default_priority_level == 0 or batching.default_priority_level > levels:
            return f"default priority level must be in range [1, {levels}] for {name}"
        for level in batching.priority_queue_policy:
            if level == 0 or level > levels:
                return (
                    "priority queue policy must have priority level in range "
                    f"[1, {levels}] for {name}"
                )
    if batching.preserve_ordering:
        if levels > 1:
            return f"Only one priority level is allowed when 'preserve_ordering' is true for {name}"
        policies = [batching.default_queue_policy, *batching.priority_queue_policy.values()]
        for policy in policies:
            if (
                policy.default_timeout_microseconds != 0
                and policy.timeout_action == mc.ModelQueuePolicy.DELAY
            ):
                return (
                    "Queue policy can not have DELAY as timeout action when "
                    f"'preserve_ordering' is true for {name}"
                )
    return None


def _sequence_batching_fault(config: mc.ModelConfig) -> str | None:
    name, batching = config.name, config.sequence_batching
    if config.response_cache.enable:
        return (
            f"Response Cache does not currently support model {name} with sequence "
            "batching scheduler. Please disable the response cache."
        )
    if batching.HasField("oldest"):
        for size in batching.oldest.preferred_batch_size:
            if size <= 0:
                return f"sequence batching preferred batch size must be positive for {name}"
            if size > config.max_batch_size:
                return (
                    f"sequence batching preferred batch size must be <= max batch size for {name}"
                )
    if batching.HasField("direct"):
        utilization = batching.direct.minimum_slot_utilization
        if utilization < 0.0 or utilization > 1.0:
            return (
                f"sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}"
            )
    return None


def instance_group_fault(config: mc.ModelConfig, gpus: Sequence[int]) -> str | None:
    """Triton's ``ValidateInstanceGroup`` for a host with the given GPU ids."""
    if config.HasField("ensemble_scheduling"):
        return None
    name = config.name
    if not config.instance_group:
        return f"must specify one or more 'instance group's for {name}"
    supported = sorted(set(gpus))
    Group = mc.ModelInstanceGroup
    for group in config.instance_group:
        prefix = f"instance group {group.name} of model {name}"
        if group.kind == Group.KIND_MODEL:
            if group.gpus:
                return f"{prefix} has kind KIND_MODEL but specifies one or more GPUs"
        elif group.kind == Group.KIND_GPU:
            if not group.gpus:
                if not supported:
                    return f"{prefix} has kind KIND_GPU but no GPUs are available"
                return f"{prefix} has kind KIND_GPU but specifies no GPUs"
            for gid in group.gpus:
                if gid not in supported:
                    listed = ", ".join(str(g) for g in supported)
                    return (
                        f"{prefix} specifies invalid or unsupported gpu id {gid}. GPUs with at "
                        "least the minimum required CUDA compute compatibility of "
                        f"{MIN_COMPUTE_CAPABILITY:.6f} are: {listed}"
                    )
        elif group.kind == Group.KIND_CPU:
            if group.gpus:
                return f"{prefix} has kind KIND_CPU but specifies one or more GPUs"
        else:
            return f"{prefix} has unexpected kind KIND_AUTO"
        if config.platform != "tensorrt_plan" and group.profile:
            # Triton's message really lacks the space before "specifies".
            return (
                f"{prefix} and platform {config.platform}specifies profile field which is "
                "only supported for TensorRT models"
            )
    return None


def io_fault(config: mc.ModelConfig) -> str | None:
    """Triton's ``ValidateModelIOConfig`` (each fault ends "for <model>"), then duplicates."""
    for model_input in config.input:
        fault = _input_fault(model_input, config)
        if fault is not None:
            return f"{fault} for {config.name}"
    for model_output in config.output:
        fault = _output_fault(model_output, config)
        if fault is not None:
            return f"{fault} for {config.name}"
    fault = _batch_io_fault(config)
    if fault is not None:
        return f"{fault} for {config.name}"
    # Not a Triton check: Triton keeps the first of two same-named tensors and then can
    # never satisfy its own required-input count. We refuse the config instead.
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            if tensor.name in seen:
                return f"model {kind} '{tensor.name}' is specified more than once for {config.name}"
            seen.add(tensor.name)
    return None


def _input_fault(io: mc.ModelInput, config: mc.ModelConfig) -> str | None:
    fault = _shape_fault(io, config.max_batch_size, "model input ")
    if fault is not None:
        return fault
    formats = (mc.ModelInput.FORMAT_NHWC, mc.ModelInput.FORMAT_NCHW)
    if io.format in formats and len(io.dims) != 3:
        return "model input NHWC/NCHW require 3 dims"
    return _tensor_kind_fault(io, config.platform, "input")


def _output_fault(io: mc.ModelOutput, config: mc.ModelConfig) -> str | None:
    fault = _shape_fault(io, config.max_batch_size, "model output ")
    if fault is not None:
        return fault
    return _tensor_kind_fault(io, config.platform, "output")


def _tensor_kind_fault(io: mc.ModelInput | mc.ModelOutput, platform: str, kind: str) -> str | None:
    if platform != "tensorrt_plan" and io.is_shape_tensor:
        return "shape tensors are only supported for TensorRT platform"
    if io.is_non_linear_format_io:
        if platform != "tensorrt_plan":
            return "Non-linear IO format is only supported for the TensorRT platform"
        if len(io.dims) != 3:
            return f"Non-linear IO format {kind} requires 3 dims"
    return None


def _shape_fault(
    io: mc.ModelInput | mc.ModelOutput, max_batch_size: int, prefix: str
) -> str | None:
    """Triton's ``ValidateIOShape``."""
    if not io.name:
        return f"{prefix}must specify 'name'"
    prefix = f"{prefix}'{io.name}' "
    if io.data_type == mc.TYPE_INVALID:
        return f"{prefix}must specify 'data_type'"
    if not io.dims:
        return f"{prefix}must specify 'dims'"
    has_reshape = io.HasField("reshape")
    if has_reshape and not io.reshape.shape and max_batch_size == 0:
        return (
            f"{prefix}cannot have empty reshape for non-batching model as scalar tensors "
            "are not supported"
        )
    if any(d < 1 and d != WILDCARD_DIM for d in io.dims):
        return (
            f"{prefix}dimension must be integer >= 1, or {WILDCARD_DIM} to indicate a "
            "variable-size dimension"
        )
    if not has_reshape:
        return None
    shape = list(io.reshape.shape)
    if any(d < 1 and d != WILDCARD_DIM for d in shape):
        return (
            f"{prefix}reshape dimensions must be integer >= 1, or {WILDCARD_DIM} to indicate "
            "a variable-size dimension"
        )
    dims_size, reshape_size = _element_count(io.dims), _element_count(shape)
    # An empty reshape (a scalar) expects dims with exactly one element.
    if dims_size != reshape_size and (reshape_size != 0 or dims_size != 1):
        return f"{prefix}has different size for dims and reshape"
    if dims_size == WILDCARD_DIM:
        # Compare the runs between variable-size dims: [2, 4, -1, 6] -> [8, -1, 1, 6] is fine.
        dims_runs, shape_runs = _runs(io.dims), _runs(shape)
        if len(dims_runs) != len(shape_runs):
            return f"{prefix}has different number of variable-size dimensions for dims and reshape"
        if dims_runs != shape_runs:
            return f"{prefix}has different size for dims and reshape"
    return None


def _element_count(dims: Sequence[int]) -> int:
    """Triton's ``GetElementCount``: -1 if any dim is variable, 0 for an empty shape."""
    if not dims:
        return 0
    if any(d == WILDCARD_DIM for d in dims):
        return WILDCARD_DIM
    return math.prod(dims)


def _runs(dims: Sequence[int]) -> list[int]:
    runs, current = [], 1
    for d in dims:
        if d == WILDCARD_DIM:
            runs.append(current)
            current = 1
        else:
            current *= d
    runs.append(current)
    return runs


def _batch_io_fault(config: mc.ModelConfig) -> str | None:
    """Triton's ``ValidateBatchIO``."""
    input_names = {io.name for io in config.input}
    output_names = {io.name for io in config.output}
    one_source = {
        mc.BatchInput.BATCH_ELEMENT_COUNT,
        mc.BatchInput.BATCH_ACCUMULATED_ELEMENT_COUNT,
        mc.BatchInput.BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO,
        mc.BatchInput.BATCH_MAX_ELEMENT_COUNT_AS_SHAPE,
        mc.BatchInput.BATCH_ITEM_SHAPE,
        mc.BatchInput.BATCH_ITEM_SHAPE_FLATTEN,
    }
    for batch_input in config.batch_input:
        kind = mc.BatchInput.Kind.Name(batch_input.kind)
        if batch_input.kind not in one_source:
            return f"unknown batch input kind '{kind}'"
        if len(batch_input.source_input) != 1:
            return (
                f"batch input kind '{kind}' expects 1 source input, got "
                f"{len(batch_input.source_input)}"
            )
        if batch_input.data_type not in (mc.TYPE_INT32, mc.TYPE_FP32):
            return "batch input data type must be TYPE_INT32 or TYPE_FP32"
        for source in batch_input.source_input:
            if source not in input_names:
                return f"unknown source input name '{source}'"
    for batch_output in config.batch_output:
        kind = mc.BatchOutput.Kind.Name(batch_output.kind)
        if batch_output.kind != mc.BatchOutput.BATCH_SCATTER_WITH_INPUT_SHAPE:
            return f"unknown batch output kind '{kind}'"
        if len(batch_output.source_input) != 1:
            return (
                f"batch output kind '{kind}' expects 1 source input, got "
                f"{len(batch_output.source_input)}"
            )
        for source in batch_output.source_input:
            if source not in input_names:
                return f"unknown source input name '{source}'"
        targets: set[str] = set()
        for target in batch_output.target_name:
            if target not in output_names:
                return f"unknown target output name '{target}'"
            if target in targets:
                return f"target output name '{target}' can only be specified once"
            targets.add(target)
    return None


def _label_file_fault(config: mc.ModelConfig, model_dir: Path) -> str | None:
    """Triton's ``Model::Init`` refuses label files outside the model directory."""
    root = model_dir.resolve()
    for output in config.output:
        if not output.label_filename:
            continue
        label_path = model_dir / output.label_filename
        if not label_path.resolve().is_relative_to(root):
            return (
                f"label file path '{label_path}' for output '{output.name}' in model "
                f"'{config.name}' is outside model directory"
            )
    return None
