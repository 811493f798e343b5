"""ONNX models on onnxruntime (``platform: "onnxruntime_onnx"`` or ``backend: "onnxruntime"``).

The only module that imports onnxruntime. ``session.run`` releases the GIL, so a model
executed on a worker thread leaves the event loop free to parse the next requests.

Config parameters honoured (Triton's onnxruntime backend uses the same keys):
``intra_op_thread_count``, ``inter_op_thread_count``, ``enable_mem_arena`` and
``optimization { graph { level } }`` (-1 basic, 0 default = all, 1 extended), and
onnxruntime's own session config entries under their ``session.*`` keys. Without
``intra_op_thread_count`` a CPU model's thread pool is chosen from its measured cost
(:mod:`._onnx_threads`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.cpus import cpu_budget
from modelyard.errors import ConfigError, Internal, InvalidArgument
from modelyard.runtimes import _onnx_threads as threads
from modelyard.runtimes.base import RuntimeOptions
from modelyard.types import Array, Runtime

log = logging.getLogger("modelyard.onnx")

# onnxruntime type strings -> config.pbtxt datatypes
_ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(string)": "TYPE_STRING",
}


def _dims(shape: Sequence[Any]) -> list[int]:
    """ORT shapes mix ints, symbolic names and None; Triton writes every unknown dim as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _param(config: Any, key: str) -> str | None:
    if key in config.parameters:
        return str(config.parameters[key].string_value)
    return None


def _session_options(config: Any, intra: int | None = None) -> Any:
    """The config's session options; ``intra`` (a chosen pool size, with the pool sleeping
    rather than spinning unless the config says otherwise) when the config names none."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if intra is not None:
        opts.intra_op_num_threads = intra
        if threads.SPINNING_KEY not in config.parameters:
            opts.add_session_config_entry(threads.SPINNING_KEY, "0")
    for key, attr in (
        ("intra_op_thread_count", "intra_op_num_threads"),
        ("inter_op_thread_count", "inter_op_num_threads"),
    ):
        value = _param(config, key)
        if value is not None:
            try:
                setattr(opts, attr, int(value))
            except ValueError:
                raise ConfigError(f"parameter '{key}' must be an integer, got '{value}'") from None
    # onnxruntime's own session settings pass straight through ("session.*" keys), e.g.
    # "session.intra_op.allow_spinning": "0" for a pool that sleeps instead of spinning
    for key, value in config.parameters.items():
        if key.startswith("session."):
            opts.add_session_config_entry(key, str(value.string_value))
    arena = _param(config, "enable_mem_arena")
    if arena is not None:
        opts.enable_cpu_mem_arena = arena.lower() in ("1", "true", "on")
    level = config.optimization.graph.level
    opts.graph_optimization_level = {
        -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return opts


def _wants_gpu(config: Any) -> bool:
    from tritonclient.grpc import model_config_pb2 as mc

    return any(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in config.instance_group)


def _gpu_device(config: Any) -> int:
    """The device of the first KIND_GPU instance group (Triton's gpus list; 0 when empty)."""
    from tritonclient.grpc import model_config_pb2 as mc

    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU and group.gpus:
            return int(group.gpus[0])
    return 0


def open_session(
    model_file: Path, config: Any, tune: bool = True
) -> tuple[Any, threads.ThreadChoice | None]:
    """An onnxruntime session; on the CUDA provider when a KIND_GPU instance group asks.

    onnxruntime silently falls back to the CPU when CUDA cannot start, so the providers the
    session really got are checked: a GPU model never runs on the CPU by surprise. A CPU
    model whose config names no ``intra_op_thread_count`` gets its pool from its measured
    cost when ``tune`` (loads do; auto-complete only reads the graph and uses 1 thread).
    """
    import onnxruntime as ort

    if not model_file.is_file():
        raise ConfigError(f"unable to find model file '{model_file}'")
    gpu = _wants_gpu(config)
    device = _gpu_device(config)
    providers: list[Any] = (
        [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
        if gpu
        else ["CPUExecutionProvider"]
    )
    no_gpu = ConfigError(
        f"instance group of model '{config.name}' asks for KIND_GPU, but no GPU is usable "
        "(onnxruntime's CUDAExecutionProvider is missing or found no CUDA device); use "
        "KIND_CPU, or install onnxruntime-gpu on a machine with a GPU"
    )
    if gpu and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise no_gpu
    # the GPU runs a GPU model's graph; its CPU pool keeps onnxruntime's default there
    choose = not gpu and _param(config, "intra_op_thread_count") is None

    def session_with(intra: int | None) -> Any:
        try:
            return ort.InferenceSession(
                str(model_file), sess_options=_session_options(config, intra), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ConfigError(f"failed to load '{model_file}': {exc}") from exc

    if not choose:
        session = session_with(None)
        if gpu and "CUDAExecutionProvider" not in session.get_providers():
            raise no_gpu
        return session, None
    session = session_with(1)
    if not tune:
        return session, None
    spins = _param(config, threads.SPINNING_KEY) == "1"  # the config lets a pool spin
    return _choose_pool(session, session_with, str(config.name), spins)


def _choose_pool(
    single: Any, session_with: Any, model: str, spins: bool
) -> tuple[Any, threads.ThreadChoice]:
    """Keep the 1-thread session, or a pool if timing both says the pool pays (see
    :mod:`._onnx_threads`)."""
    budget = cpu_budget()
    cores = budget.usable
    feed = threads.zero_feed(single)
    single_ns = None if feed is None else threads.time_runs(lambda: single.run(None, feed))
    pool_ns = None
    pooled = None
    if threads.wants_pool_trial(single_ns, cores):
        pooled = session_with(cores)
        pool_ns = threads.time_runs(lambda: pooled.run(None, feed))
    keep_pool, reason = threads.choose(single_ns, pool_ns, cores)
    session, count, cost = (pooled, cores, pool_ns) if keep_pool else (single, 1, single_ns)
    choice = threads.ThreadChoice(
        threads=count, spinning=spins and count > 1, cost_ns=cost, reason=reason
    )
    log.info(
        "model '%s': %d intra-op thread%s (%s; usable cores %s)",
        model,
        count,
        "" if count == 1 else "s",
        reason,
        budget.describe(),
    )
    return session, choice


class OnnxRuntime:
    """A loaded ONNX session. Thread-safe: ``InferenceSession.run`` may run concurrently."""

    def __init__(
        self, session: Any, config: Any, choice: threads.ThreadChoice | None = None
    ) -> None:
        self._session = session
        self._run = _runner(session)
        # what load measured: the runner places the first requests by it
        self.threads = choice
        self.cost_ns = None if choice is None else choice.cost_ns
        self._string_inputs = {i.name for i in session.get_inputs() if i.type == "tensor(string)"}
        self.output_names = [o.name for o in session.get_outputs()]
        self._bf16 = any(
            t.type == "tensor(bfloat16)" for t in (*session.get_inputs(), *session.get_outputs())
        )
        # BF16 outputs are written into buffers we allocate, so their shapes must be known
        batch = [-1] if config.max_batch_size > 0 else []
        self._out_dims = {o.name: [*batch, *o.dims] for o in config.output}

    def infer(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        if self._bf16:
            return self._infer_bf16(inputs, list(outputs) or self.output_names)
        feed = {
            name: (_bytes_to_str(arr) if name in self._string_inputs else arr)
            for name, arr in inputs.items()
        }
        names = list(outputs) or self.output_names
        try:
            results = self._run(names, feed, None)
        except Exception as exc:  # inputs were validated already: a failure here is the model's
            raise Internal(f"onnx runtime error: {exc}") from exc
        out: dict[str, Array] = {}
        for name, value in zip(names, results, strict=True):
            arr = np.asarray(value)
            out[name] = _str_to_bytes(arr) if arr.dtype.kind in ("O", "U") else arr
        return out

    def _infer_bf16(self, inputs: Mapping[str, Array], names: list[str]) -> dict[str, Array]:
        """onnxruntime's numpy bridge has no bfloat16: go through OrtValues and IO binding."""
        import ml_dtypes
        import onnxruntime as ort

        bf16 = np.dtype(ml_dtypes.bfloat16)
        binding = self._session.io_binding()
        for name, arr in inputs.items():
            if arr.dtype == bf16:
                value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    np.ascontiguousarray(arr).view(np.uint16),
                    16,  # TensorProto.BFLOAT16
                )
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        batch = next(iter(inputs.values())).shape[0] if inputs else 1
        buffers: dict[str, Array] = {}
        types = {o.name: o.type for o in self._session.get_outputs()}
        for name in names:
            if types[name] != "tensor(bfloat16)":
                binding.bind_output(name)
                continue
            dims = [
                batch if i == 0 and d == -1 else d
                for i, d in enumerate(self._out_dims.get(name, [-1]))
            ]
            if any(d < 0 for d in dims):
                raise Internal(
                    f"BF16 output '{name}' needs fully known dims in config.pbtxt: "
                    "onnxruntime's Python API cannot return bfloat16 tensors of dynamic shape"
                )
            buf = np.empty(dims, dtype=bf16)
            buffers[name] = buf
            binding.bind_output(name, "cpu", 0, 16, dims, buf.ctypes.data)
        try:
            self._session.run_with_iobinding(binding)
        except Exception as exc:
            raise Internal(f"onnx runtime error: {exc}") from exc
        # outputs come back in binding order; the BF16 ones are already in our buffers
        values = binding.get_outputs()
        return {
            name: buffers[name] if name in buffers else np.asarray(value.numpy())
            for name, value in zip(names, values, strict=True)
        }

    def unload(self) -> None:
        # both references: the compiled session holds the weights
        self._session = None
        self._run = None


def _runner(session: Any) -> Any:
    """``session.run``, or on the CPU the compiled session's own ``run`` beneath it.

    The Python wrapper checks input names (the data plane validated them against the config,
    whose names the load checked against the graph), OrtValue ownership (we pass numpy
    arrays), WebGPU graph capture, and retries on another provider when a GPU provider
    fails: none of which applies to a CPU session. Skipping it saves ~3 µs a run, 10-15% of a
    small model's ``session.run``. Any other session, or an onnxruntime without the
    attribute, goes through the wrapper.
    """
    inner = getattr(session, "_sess", None)
    if inner is None or session.get_providers() != ["CPUExecutionProvider"]:
        return session.run
    return inner.run  # (output names, feed, run options), as session.run takes them


def _bytes_to_str(arr: Array) -> Array:
    """onnxruntime's string tensors take Python str (stored as UTF-8); BYTES arrive as bytes.

    Bytes that are not UTF-8 cannot cross onnxruntime's Python API, so they are refused
    with a clear error rather than mangled.
    """
    try:
        flat = [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in arr.ravel()]
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"onnxruntime string tensors must hold UTF-8 text; got invalid bytes: {exc}"
        ) from None
    return np.array(flat, dtype=object).reshape(arr.shape)


def _str_to_bytes(arr: Array) -> Array:
    flat = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in arr.ravel()]
    return np.array(flat, dtype=object).reshape(arr.shape)


class OnnxFactory:
    backend = "onnxruntime"

    def autocomplete(self, config: Any, model_file: Path, options: RuntimeOptions) -> None:
        """Triton's onnxruntime auto-complete: I/O from the graph, batching when every dim 0 is -1."""
        session, _ = open_session(model_file, config, tune=False)
        ins = [(i.name, i.type, _dims(i.shape)) for i in session.get_inputs()]
        outs = [(o.name, o.type, _dims(o.shape)) for o in session.get_outputs()]
        if not config.backend:
            config.backend = self.backend
        if not config.platform:
            config.platform = "onnxruntime_onnx"
        all_io = ins + outs
        batchable = bool(all_io) and all(d and d[0] == -1 for _, _, d in all_io)
        if config.max_batch_size == 0 and batchable and not _has_explicit_io(config):
            config.max_batch_size = options.default_max_batch_size
            if not config.HasField("dynamic_batching") and not config.HasField("sequence_batching"):
                config.dynamic_batching.SetInParent()
        strip = 1 if config.max_batch_size > 0 else 0
        _complete_io(config.input, ins, strip, "input", config.name)
        _complete_io(config.output, outs, strip, "output", config.name)

    def load(self, config: Any, model_file: Path, options: RuntimeOptions) -> Runtime:
        if _placed_in_process(config):
            from modelyard.runtimes.python.factory import start_runtime

            return start_runtime(config, model_file, options, code=PROCESS_MODEL)
        session, choice = open_session(model_file, config)
        return OnnxRuntime(session, config, choice)


# the model a worker process runs for an ONNX model placed in its own process
PROCESS_MODEL = Path(__file__).parent / "_onnx_process" / "model.py"
PLACEMENT_KEY = "modelyard.placement"


def _placed_in_process(config: Any) -> bool:
    """``modelyard.placement``: ``server`` (the default: the session lives in the server
    process) or ``process`` (one worker process per instance, the session in it)."""
    value = (_param(config, PLACEMENT_KEY) or "server").strip().lower()
    if value not in ("server", "process"):
        raise ConfigError(
            f"parameter '{PLACEMENT_KEY}' of model '{config.name}' must be 'server' or "
            f"'process', got '{value}'"
        )
    return value == "process"


def _has_explicit_io(config: Any) -> bool:
    """A config that lists I/O with full dims made its batching choice already."""
    return len(config.input) > 0 and all(len(i.dims) > 0 for i in config.input)


def _complete_io(
    declared: Any, found: list[tuple[str, str, list[int]]], strip: int, kind: str, model: str
) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    by_name = {t.name: t for t in declared}
    # whether the config listed any: ``declared`` is the live repeated field, truthy once
    # the loop below adds the first tensor the model has
    listed = len(declared) > 0
    if listed and (unknown := set(by_name) - {n for n, _, _ in found}):
        allowed = ", ".join(n for n, _, _ in found)
        raise ConfigError(
            f"unable to load model '{model}', configuration expects {kind} "
            f"'{sorted(unknown)[0]}' but model has only: {allowed}"
        )
    for name, ort_type, dims in found:
        dtype = _ORT_TYPES.get(ort_type)
        if dtype is None:
            raise ConfigError(f"unsupported ONNX type '{ort_type}' for {kind} '{name}' of {model}")
        tensor = by_name.get(name)
        if tensor is None:
            if listed and kind == "output":
                continue  # a config may expose a subset of outputs
            tensor = declared.add()
            tensor.name = name
        if tensor.data_type == mc.TYPE_INVALID:
            tensor.data_type = mc.DataType.Value(dtype)
        elif mc.DataType.Name(tensor.data_type) != dtype:
            raise ConfigError(
                f"unable to load model '{model}', configuration expects datatype "
                f"{mc.DataType.Name(tensor.data_type)} for {kind} '{name}', model provides "
                f"{dtype}"
            )
        if not tensor.dims:
            tensor.dims.extend(dims[strip:] if strip else dims)
