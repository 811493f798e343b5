"""The ``python`` backend: Triton Python-backend models, each instance in its own process."""

from __future__ import annotations

import base64
import json
import logging
import sys
from pathlib import Path
from typing import Any

from modelyard.errors import (
    ConfigError,
    DecoupledModel,
    Internal,
    InvalidArgument,
    ModelyardError,
    NotFound,
    Unavailable,
)
from modelyard.runtimes.base import RuntimeOptions
from modelyard.runtimes.python._process import (
    WorkerHooks,
    WorkerProcess,
    WorkerSpec,
    run_autocomplete,
)
from modelyard.runtimes.python.runtime import PythonRuntime
from modelyard.types import Array, InferRequest, RequestedOutput, Tensor

log = logging.getLogger("modelyard.python")


class PythonFactory:
    backend = "python"

    def autocomplete(self, config: Any, model_file: Path, options: RuntimeOptions) -> None:
        """Runs the model's ``auto_complete_config``, as Triton does at every load.

        Starting a process costs ~100 ms, so a model whose source never mentions the hook
        (most models) is not started for it.
        """
        try:
            source = model_file.read_text(errors="replace")
        except OSError:
            return  # a missing model.py is reported by validation, with Triton's message
        if "auto_complete_config" not in source:
            return
        from google.protobuf import json_format

        spec = _spec(config, model_file, options, mode_args=False)
        result = run_autocomplete(spec)
        try:
            json_format.ParseDict(result, config, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise ConfigError(
                f"auto_complete_config of model '{config.name}' returned an invalid config: {exc}"
            ) from None

    def load(self, config: Any, model_file: Path, options: RuntimeOptions) -> PythonRuntime:
        return start_runtime(config, model_file, options)


def start_runtime(
    config: Any, model_file: Path, options: RuntimeOptions, code: Path | None = None
) -> PythonRuntime:
    """A worker process per instance of the config's instance groups, running ``model_file``.

    ``code``, when given, is a model of the server's own that runs in place of a
    ``model.py`` (an ONNX model placed in its own process): it runs on the server's
    interpreter, whatever the model's folder holds, and finds the version's file
    (``model_file``) in its ``args[MODEL_FILE_ARG]``.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    specs: list[WorkerSpec] = []
    base = _spec(config, model_file, options, mode_args=True, code=code)
    for group in config.instance_group:
        gpu = group.kind == mc.ModelInstanceGroup.KIND_GPU
        devices = list(group.gpus) if gpu and group.gpus else [0]
        for i in range(max(1, int(group.count))):
            args = dict(base.args)
            args["model_instance_kind"] = "GPU" if gpu else "CPU"
            args["model_instance_device_id"] = str(devices[i % len(devices)])
            args["model_instance_name"] = f"{group.name}_{i}"
            specs.append(_replace(base, instance_name=f"{group.name}_{i}", args=args))
    if not specs:
        specs.append(base)
    runtime = PythonRuntime(specs, _hooks(options), options.python_execute_timeout)
    # a model of our own takes a dynamic batch as one request of stacked tensors
    runtime.stacks_batches = code is not None
    runtime.start()
    return runtime


# the args key that names the version's file to a model of the server's own (``code``)
MODEL_FILE_ARG = "modelyard_model_file"


def _spec(
    config: Any,
    model_file: Path,
    options: RuntimeOptions,
    mode_args: bool,
    code: Path | None = None,
) -> WorkerSpec:
    from modelyard.repository import config_to_json

    version_dir = model_file.parent
    model_dir = version_dir.parent
    params = {k: v.string_value for k, v in config.parameters.items()}
    env = (
        (Path(sys.executable), {}, True)
        if code is not None
        else _environment(model_dir, params, options)
    )
    config_json = json.dumps(config_to_json(config), separators=(",", ":"))
    args = {
        "model_config": config_json,
        "model_instance_kind": "CPU",
        "model_instance_name": f"{config.name}_0",
        "model_instance_device_id": "0",
        "model_repository": str(model_dir),
        "model_version": version_dir.name,
        "model_name": config.name,
    }
    if code is not None:
        args[MODEL_FILE_ARG] = str(model_file)
    return WorkerSpec(
        model_name=config.name,
        instance_name=f"{config.name}_0",
        model_file=code or model_file,
        args=args,
        config_json=config_json,
        decoupled=bool(config.model_transaction_policy.decoupled),
        python=env[0],
        env=env[1],
        own_interpreter=env[2],
        arena_bytes=options.python_arena_bytes,
        start_timeout=options.python_start_timeout,
        memory_limit=options.memory_limit,
    )


def _environment(
    model_dir: Path, params: dict[str, str], options: RuntimeOptions
) -> tuple[Path, dict[str, str], bool]:
    if options.python_envs is None:
        return Path(sys.executable), {}, True
    from modelyard.runtimes.python.environments import resolve_environment

    env = resolve_environment(model_dir, params, options.python_envs)
    return env.python, dict(env.env), env.origin == "server"


def _replace(spec: WorkerSpec, **changes: Any) -> WorkerSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _hooks(options: RuntimeOptions) -> WorkerHooks:
    hooks = WorkerHooks()
    metrics = options.custom_metrics
    if metrics is not None:
        hooks.metric_family = metrics.family
        hooks.metric = metrics.metric
        hooks.metric_update = metrics.update
        hooks.release_metrics = metrics.release
    resolver = options.resolver
    if resolver is not None:

        async def bls(
            msg: dict[str, Any], tensors: list[tuple[str, str, Array]], worker: WorkerProcess
        ) -> None:
            await _bls(resolver, msg, tensors, worker)

        hooks.bls = bls
    return hooks


async def _bls(
    resolver: Any,
    msg: dict[str, Any],
    tensors: list[tuple[str, str, Array]],
    worker: WorkerProcess,
) -> None:
    """Runs a model's BLS request through the server, loading the target on demand."""
    version = int(msg.get("ver", -1))
    request = InferRequest(
        model_name=str(msg.get("model", "")),
        model_version="" if version < 0 else str(version),
        id=msg.get("rid"),
        inputs=[Tensor(name, datatype, list(arr.shape), arr) for name, datatype, arr in tensors],
        outputs=[RequestedOutput(name) for name in msg.get("o") or []] or None,
        parameters=dict(msg.get("p") or {}),
    )
    call_id = int(msg["id"])
    if msg.get("op") == "ctl":
        await _control(resolver, msg, worker)
        return
    try:
        if msg.get("dec"):
            # as in Triton, the iterator ends with the response that carried the final flag
            # (a plain model's one response); a flag sent alone becomes an empty response
            ended = False
            async for response in resolver.stream(request):
                outs = [(t.name, t.data) for t in response.outputs]
                ended = response.final
                await worker.send_bls_reply(call_id, None, outs, ended, response.parameters)
            if not ended:
                await worker.send_bls_reply(call_id, None, None, True)
        else:
            response = await resolver.infer(request)
            outs = [(t.name, t.data) for t in response.outputs]
            await worker.send_bls_reply(call_id, None, outs, True, response.parameters)
    except NotFound:
        # Triton's BLS words for a model it cannot run (unknown, or not loaded)
        not_ready = Internal(
            f"Failed for execute the inference request. Model '{request.model_name}' is not ready."
        )
        await worker.send_bls_reply(
            call_id, _bls_failure(request.model_name, not_ready), None, True
        )
    except DecoupledModel as exc:
        refused = InvalidArgument(
            f"Model {exc.model} is using the decoupled. The current BLS request call doesn't "
            "support models using the decoupled transaction policy. Please use "
            "'decoupled=True' argument to the 'exec' or 'async_exec' calls for decoupled "
            "models.'"
        )
        await worker.send_bls_reply(call_id, _bls_failure(request.model_name, refused), None, True)
    except ModelyardError as exc:
        error = exc if exc.from_model else _bls_failure(request.model_name, exc)
        await worker.send_bls_reply(call_id, error, None, True)
    except Exception as exc:
        log.exception("BLS call from model '%s' failed", worker.spec.model_name)
        await worker.send_bls_reply(call_id, Unavailable(f"BLS call failed: {exc}"), None, True)


async def _control(resolver: Any, msg: dict[str, Any], worker: WorkerProcess) -> None:
    """``pb_utils.load_model`` / ``unload_model`` / ``is_model_ready`` from a model."""
    call_id = int(msg["id"])
    action = msg.get("action")
    name = str(msg.get("model", ""))
    try:
        if action == "ready":
            ready = bool(await resolver.is_ready(name, str(msg.get("version") or "")))
            await worker.send_bls_reply(call_id, None, None, True, {"ready": ready})
            return
        if action == "load":
            # Triton's keys name the file as the HTTP API does ("file:1/model.onnx")
            files = {
                k.removeprefix("file:"): base64.b64decode(v)
                for k, v in (msg.get("files") or {}).items()
            }
            await resolver.load(name, msg.get("config") or None, files or None)
        elif action == "unload":
            await resolver.unload(name)
        else:
            raise InvalidArgument(f"unknown model control action '{action}'")
    except ModelyardError as exc:
        await worker.send_bls_reply(call_id, exc, None, True)
        return
    await worker.send_bls_reply(call_id, None, None, True)


def _bls_failure(model: str, error: ModelyardError) -> ModelyardError:
    """Triton's framing of a BLS request the server could not run: its text, and the
    INTERNAL code whatever went wrong (a model's own error response travels as it is)."""
    return Internal(f"Model {model} - Error when running inference: {error}")
