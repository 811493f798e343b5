"""``modelyard serve``: takes ``tritonserver``'s flag names wherever the concept is the same.

Triton's boolean flags take a value (``--strict-model-config=false``), so ours do too, and a
script written for ``tritonserver`` runs unchanged. Two defaults differ on purpose and are
documented: ``--exit-on-error`` is false (a broken model is marked unavailable, the server
serves the rest) and ``--strict-readiness`` is false (readiness means "serving").
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from signal import SIGINT, SIGTERM
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelyard.errors import ModelyardError
from modelyard.settings import DEFAULT_MAX_INPUT_SIZE, ServerSettings

if TYPE_CHECKING:
    from modelyard.protocol.app import ModelyardApp

_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}


def _bool(value: str, flag: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise typer.BadParameter(f"{flag} takes true or false, got '{value}'")


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        raise typer.BadParameter(f"{flag} takes a number of seconds above 0, got {value:g}")
    return value


def serve(
    model_repository: Annotated[
        str,
        typer.Option(
            "--model-repository",
            "--model-store",
            help="Model store: a folder, or s3://bucket/prefix (also s3://host:port/bucket/prefix).",
        ),
    ],
    model_cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-cache-dir",
            help="Where models fetched from the store are kept (default: ~/.cache/modelyard).",
        ),
    ] = None,
    model_cache_size: Annotated[
        str,
        typer.Option("--model-cache-size", help="Disk the model cache may use (bytes, 20GiB)."),
    ] = "20GiB",
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP port.")] = 8000,
    http_address: Annotated[
        str, typer.Option("--http-address", help="Address the HTTP server binds.")
    ] = "0.0.0.0",
    model_control_mode: Annotated[
        str,
        typer.Option(
            "--model-control-mode",
            help="on-demand (load on first request), none (load all at start), explicit "
            "(repository API only) or poll (rescan the repository).",
        ),
    ] = "on-demand",
    repository_poll_secs: Annotated[
        float,
        typer.Option(
            "--repository-poll-secs",
            help="poll and on-demand modes: rescan the repository this often (0: never).",
        ),
    ] = 15.0,
    load_wait_timeout: Annotated[
        float,
        typer.Option(
            "--load-wait-timeout",
            help="on-demand: how long a request waits for its model to load (then 503).",
        ),
    ] = 60.0,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            "--memory-budget",
            help="Memory loaded models may use: bytes, 8GiB, or 50% of the host's memory "
            "(the container's limit inside one). Idle models are evicted to stay within it.",
        ),
    ] = None,
    model_load_gpu_limit: Annotated[
        list[str] | None,
        typer.Option(
            "--model-load-gpu-limit",
            help="<device>:<fraction>: GPU memory share models may use on that GPU "
            "(Triton's flag; needs NVML).",
        ),
    ] = None,
    eviction_policy: Annotated[
        str,
        typer.Option("--eviction-policy", help="gdsf (size, reload cost and use) or lru."),
    ] = "gdsf",
    load_model: Annotated[
        list[str] | None,
        typer.Option("--load-model", help="explicit mode: model to load at start ('*' = all)."),
    ] = None,
    strict_model_config: Annotated[
        str | None,
        typer.Option("--strict-model-config", help="Older alias: true disables auto-complete."),
    ] = None,
    disable_auto_complete_config: Annotated[
        bool,
        typer.Option("--disable-auto-complete-config", help="Require complete config.pbtxt."),
    ] = False,
    http_max_input_size: Annotated[
        int, typer.Option("--http-max-input-size", help="Largest request body, in bytes.")
    ] = DEFAULT_MAX_INPUT_SIZE,
    exit_timeout_secs: Annotated[
        float, typer.Option("--exit-timeout-secs", help="Grace period for in-flight requests.")
    ] = 30.0,
    exit_on_error: Annotated[
        str, typer.Option("--exit-on-error", help="true: exit when a model fails to load.")
    ] = "false",
    strict_readiness: Annotated[
        str, typer.Option("--strict-readiness", help="true: ready only when every model is.")
    ] = "false",
    log_verbose: Annotated[int, typer.Option("--log-verbose", help="0 info, 1+ debug.")] = 0,
    inline_threshold_us: Annotated[
        float,
        typer.Option(
            "--inline-threshold-us",
            help="Models averaging under this many µs per execution run on the event loop "
            "thread; slower ones on worker threads. 0: always worker threads.",
        ),
    ] = 50.0,
    http_server: Annotated[
        str,
        typer.Option(
            "--http-server",
            help="modelyard (its own httptools front end, the fastest) or uvicorn (ASGI).",
        ),
    ] = "modelyard",
    backend_config: Annotated[
        list[str] | None,
        typer.Option("--backend-config", help="<backend>,<key>=<value>, as tritonserver."),
    ] = None,
    allow_metrics: Annotated[
        str, typer.Option("--allow-metrics", help="false: no metrics port (Triton's flag).")
    ] = "true",
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            help="Prometheus /metrics port (0: none; /metrics is also on the HTTP port).",
        ),
    ] = 8002,
    allow_sagemaker: Annotated[
        str,
        typer.Option(
            "--allow-sagemaker",
            help="true: also serve SageMaker's container API (/ping, /invocations, /models).",
        ),
    ] = "false",
    sagemaker_port: Annotated[
        int, typer.Option("--sagemaker-port", help="Port of SageMaker's container API.")
    ] = 8080,
    model_load_timeout: Annotated[
        float,
        typer.Option(
            "--model-load-timeout",
            help="Seconds a Python model's initialize (and auto_complete_config) may take "
            "per instance; then the load fails with that reason and the worker is killed.",
        ),
    ] = 300.0,
    python_execute_timeout: Annotated[
        float,
        typer.Option(
            "--python-execute-timeout",
            help="Seconds a Python model may take on one request before its worker is "
            "restarted (0: no limit).",
        ),
    ] = 0.0,
    python_env_dir: Annotated[
        Path | None,
        typer.Option(
            "--python-env-dir",
            help="Where Python model environments are unpacked and built "
            "[default: $XDG_CACHE_HOME/modelyard/envs].",
        ),
    ] = None,
    python_env_build: Annotated[
        str,
        typer.Option(
            "--python-env-build",
            help="true: build an environment from a model's requirements.txt; false "
            "(production): such a model fails to load unless it carries its environment.",
        ),
    ] = "true",
    python_env_index_url: Annotated[
        str | None,
        typer.Option("--python-env-index-url", help="Package index for environment builds."),
    ] = None,
    python_env_find_links: Annotated[
        list[str] | None,
        typer.Option("--python-env-find-links", help="Extra folder or URL of wheels (repeat)."),
    ] = None,
    python_env_no_index: Annotated[
        bool,
        typer.Option(
            "--python-env-no-index", help="Build environments from --python-env-find-links only."
        ),
    ] = False,
) -> None:
    if model_control_mode not in ("none", "explicit", "poll", "on-demand"):
        raise typer.BadParameter(
            f"unsupported model control mode '{model_control_mode}' "
            "(on-demand, none, explicit or poll)",
            param_hint="--model-control-mode",
        )
    if eviction_policy not in ("gdsf", "lru"):
        raise typer.BadParameter(
            f"unknown eviction policy '{eviction_policy}'", param_hint="--eviction-policy"
        )
    from modelyard.manager.memory import host_memory_limit, parse_budget, parse_gpu_limits

    try:
        gpu_limits = parse_gpu_limits(model_load_gpu_limit or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model-load-gpu-limit") from None
    try:
        cache_size = parse_budget(model_cache_size, 2**62)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model-cache-size") from None
    budget = None
    if memory_budget is not None:
        try:
            budget = parse_budget(memory_budget, host_memory_limit())
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--memory-budget") from None
    autocomplete = not disable_auto_complete_config
    if strict_model_config is not None and _bool(strict_model_config, "--strict-model-config"):
        autocomplete = False
    settings = ServerSettings(
        model_repository=model_repository,
        http_address=http_address,
        http_port=http_port,
        model_control_mode=model_control_mode,
        load_models=tuple(load_model or ()),
        autocomplete=autocomplete,
        max_input_size=http_max_input_size,
        exit_timeout_secs=exit_timeout_secs,
        exit_on_error=_bool(exit_on_error, "--exit-on-error"),
        strict_readiness=_bool(strict_readiness, "--strict-readiness"),
        log_verbose=log_verbose,
        default_max_batch_size=_default_max_batch_size(backend_config or []),
        inline_threshold_us=inline_threshold_us,
        load_wait_timeout=load_wait_timeout,
        repository_poll_secs=repository_poll_secs,
        memory_budget=budget,
        eviction_policy=eviction_policy,
        model_cache_dir=model_cache_dir,
        gpu_limits=tuple(sorted(gpu_limits.items())),
        model_cache_size=cache_size,
        allow_sagemaker=_bool(allow_sagemaker, "--allow-sagemaker"),
        allow_metrics=_bool(allow_metrics, "--allow-metrics"),
        metrics_port=metrics_port,
        sagemaker_port=sagemaker_port,
        model_load_timeout=_positive(model_load_timeout, "--model-load-timeout"),
        python_execute_timeout=python_execute_timeout,
        python_env_dir=python_env_dir,
        python_env_build=_bool(python_env_build, "--python-env-build"),
        python_env_index_url=python_env_index_url,
        python_env_find_links=tuple(python_env_find_links or ()),
        python_env_no_index=python_env_no_index,
    )
    if "://" not in model_repository and not Path(model_repository).is_dir():
        typer.echo(f"error: model repository '{model_repository}' is not a folder", err=True)
        raise typer.Exit(2)
    if http_server not in ("modelyard", "uvicorn"):
        raise typer.BadParameter(f"unknown HTTP server '{http_server}'", param_hint="--http-server")
    sys.exit(run(settings, http_server))


def _default_max_batch_size(configs: list[str]) -> int:
    value = 4
    for item in configs:
        backend, _, setting = item.partition(",")
        key, _, raw = setting.partition("=")
        if backend == "onnxruntime" and key == "default-max-batch-size":
            try:
                value = int(raw)
            except ValueError:
                raise typer.BadParameter(
                    f"not an integer: '{item}'", param_hint="--backend-config"
                ) from None
    return value


def run(settings: ServerSettings, http_server: str = "modelyard") -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    from modelyard.protocol.app import build_app

    logging.basicConfig(
        level=logging.DEBUG if settings.log_verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        app = build_app(settings)
    except ModelyardError as exc:  # a store that cannot be opened, a missing extra
        logging.getLogger("modelyard.server").error("cannot start: %s", exc)
        return 1
    if http_server == "uvicorn":
        return _run_uvicorn(app)
    return _run_own(app)


def _run_own(app: ModelyardApp) -> int:
    """modelyard's own front end on uvloop: SIGTERM/SIGINT start the drain."""
    import asyncio

    from modelyard.protocol._server import HttpFrontEnd

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (SIGTERM, SIGINT):
            loop.add_signal_handler(sig, stop.set)
        settings = app.settings
        listeners = []
        if settings.allow_metrics and settings.metrics_port:
            listeners.append((settings.http_address, settings.metrics_port, app.handle_metrics))
        if settings.allow_sagemaker:
            listeners.append((settings.http_address, settings.sagemaker_port, app.handle_sagemaker))
        return await HttpFrontEnd(app, listeners=listeners).serve(stop)

    try:
        import uvloop
    except ImportError:  # Windows: the standard event loop
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        drained = runner(main())
    except ModelyardError as exc:  # a store that cannot be listed, --exit-on-error, ...
        logging.getLogger("modelyard.server").error("cannot start: %s", exc)
        return 1
    except Exception:
        logging.getLogger("modelyard.server").exception("server failed")
        return 1
    if not drained:
        # --exit-timeout-secs is a promise: do not wait at exit for worker threads still
        # inside a model; exit 1, as Triton does when its exit timeout expires (os._exit
        # skips atexit: the children go first)
        from modelyard.runtimes import children

        children.kill_all()
        logging.shutdown()
        os._exit(1)
    return 0


def _run_uvicorn(app: ModelyardApp) -> int:
    """The same application under uvicorn (ASGI), kept for comparison and for ASGI setups.

    With ``--allow-sagemaker``, a second uvicorn server in the same event loop serves
    SageMaker's container face (``app.sagemaker_asgi``) on ``--sagemaker-port``: bound before
    anything starts, serving once the main server has started (models loaded), draining with
    it on SIGTERM, and done before the main server's lifespan unloads the models.
    """
    import asyncio
    import contextlib
    import socket
    from collections.abc import Generator

    import uvicorn

    settings = app.settings
    common: dict[str, Any] = {
        "host": settings.http_address,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "debug" if settings.log_verbose else "info",
        "timeout_graceful_shutdown": int(max(1, settings.exit_timeout_secs)),
        "timeout_keep_alive": 75,
        "backlog": 4096,
    }
    config = uvicorn.Config(app, port=settings.http_port, lifespan="on", **common)

    class _Face(uvicorn.Server):
        """The container face's server: the main server takes the signals and stops it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    face: uvicorn.Server | None = None
    face_socket: socket.socket | None = None
    if settings.allow_sagemaker:
        address = settings.http_address
        try:
            face_socket = socket.create_server(
                (address, settings.sagemaker_port),
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                backlog=4096,
            )
        except OSError as exc:
            logging.getLogger("modelyard.server").error(
                "cannot serve SageMaker's container API on %s:%d: %s",
                address,
                settings.sagemaker_port,
                exc,
            )
            return 1
        face_config = uvicorn.Config(
            app.sagemaker_asgi,
            port=settings.sagemaker_port,
            lifespan="off",
            interface="asgi3",  # a bound method: uvicorn's guess would be ASGI 2
            **common,
        )
        face = _Face(face_config)

    class _Server(uvicorn.Server):
        face_task: asyncio.Task[None] | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.begin_drain()
            super().handle_exit(sig, frame)
            if face is not None:
                face.should_exit = True  # both ports drain at once
            # uvicorn re-raises captured signals on exit (death by SIGTERM, status -15);
            # an orchestrator's SIGTERM is the normal way to stop, so it exits 0 instead
            self._captured_signals = [s for s in self._captured_signals if s != SIGTERM]

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)  # lifespan (models), then the main port
            if face is not None and face_socket is not None and not self.should_exit:
                self.face_task = asyncio.create_task(face.serve(sockets=[face_socket]))
                logging.getLogger("modelyard.server").info(
                    "SageMaker's container API on %s:%d",
                    settings.http_address,
                    settings.sagemaker_port,
                )

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if face is not None and self.face_task is not None:
                face.should_exit = True
                try:
                    await self.face_task  # its requests finish before the models unload
                except Exception:
                    logging.getLogger("modelyard.server").exception(
                        "SageMaker's container API failed"
                    )
            await super().shutdown(sockets=sockets)

    server = _Server(config)
    with face_socket or contextlib.nullcontext():
        server.run()
    if not server.started:
        return 1
    return 0


__all__ = ["run", "serve"]
