"""``modelyard serve``: takes ``tritonserver``'s flag names wherever the concept is the same.

Triton's boolean flags take a value (``--strict-model-config=false``), so ours do too, and a
script written for ``tritonserver`` runs unchanged. Two defaults differ on purpose and are
documented: ``--exit-on-error`` is false (a broken model is marked unavailable, the server
serves the rest) and ``--strict-readiness`` is false (readiness means "serving").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli._grpc_flags import grpc_settings
from modelyard.settings import DEFAULT_SAGEMAKER_MODEL_ROOT, ServerSettings

# the one set of defaults (settings.py): each option below shows and takes its default from here
_D = ServerSettings(model_repository="")
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
    ctx: typer.Context,
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
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP port.")] = _D.http_port,
    http_address: Annotated[
        str, typer.Option("--http-address", help="Address the HTTP server binds.")
    ] = _D.http_address,
    model_control_mode: Annotated[
        str,
        typer.Option(
            "--model-control-mode",
            help="on-demand (load on first request), none (load all at start), explicit "
            "(repository API only) or poll (rescan the repository).",
        ),
    ] = _D.model_control_mode,
    repository_poll_secs: Annotated[
        float,
        typer.Option(
            "--repository-poll-secs",
            help="poll and on-demand modes: rescan the repository this often (0: never).",
        ),
    ] = _D.repository_poll_secs,
    load_wait_timeout: Annotated[
        float,
        typer.Option(
            "--load-wait-timeout",
            help="on-demand: how long a request waits for its model to load (then 503).",
        ),
    ] = _D.load_wait_timeout,
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
    ] = _D.eviction_policy,
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
    ] = _D.max_input_size,
    http_max_url_size: Annotated[
        int,
        typer.Option(
            "--http-max-url-size",
            help="Longest request target (path and query), in bytes; longer ones get 414.",
        ),
    ] = _D.max_url_size,
    http_max_header_size: Annotated[
        int,
        typer.Option(
            "--http-max-header-size",
            help="Largest request line plus headers, in bytes; larger ones get 431.",
        ),
    ] = _D.max_header_size,
    http_header_timeout: Annotated[
        float,
        typer.Option(
            "--http-header-timeout",
            help="Seconds a request's headers may take to arrive, from its first byte; "
            "slower clients get 408 and are disconnected (0: no limit).",
        ),
    ] = _D.header_timeout,
    exit_timeout_secs: Annotated[
        float, typer.Option("--exit-timeout-secs", help="Grace period for in-flight requests.")
    ] = _D.exit_timeout_secs,
    exit_on_error: Annotated[
        str, typer.Option("--exit-on-error", help="true: exit when a model fails to load.")
    ] = "false",
    strict_readiness: Annotated[
        str, typer.Option("--strict-readiness", help="true: ready only when every model is.")
    ] = "false",
    log_verbose: Annotated[
        int, typer.Option("--log-verbose", help="0 info, 1+ debug.")
    ] = _D.log_verbose,
    inline_threshold_us: Annotated[
        float,
        typer.Option(
            "--inline-threshold-us",
            help="Models averaging under this many µs per execution run on the event loop "
            "thread; slower ones on worker threads. 0: always worker threads.",
        ),
    ] = _D.inline_threshold_us,
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
    ] = _D.metrics_port,
    http_status_page: Annotated[
        str,
        typer.Option(
            "--http-status-page",
            help="false: no status page (GET / and GET /v2/status, docs/status-page.md).",
        ),
    ] = "true",
    allow_sagemaker: Annotated[
        str,
        typer.Option(
            "--allow-sagemaker",
            help="true: also serve SageMaker's container API (/ping, /invocations, /models).",
        ),
    ] = "false",
    sagemaker_port: Annotated[
        int, typer.Option("--sagemaker-port", help="Port of SageMaker's container API.")
    ] = _D.sagemaker_port,
    sagemaker_safe_port_range: Annotated[
        str | None,
        typer.Option(
            "--sagemaker-safe-port-range",
            help="<low>-<high>: the ports the other listeners must use beside SageMaker's "
            "(Triton's flag; also SAGEMAKER_SAFE_PORT_RANGE).",
        ),
    ] = None,
    sagemaker_model_root: Annotated[
        list[str] | None,
        typer.Option(
            "--sagemaker-model-root",
            help="A folder SageMaker's POST /models may load models from (repeat; "
            "default /opt/ml/models). Nothing outside these is read.",
        ),
    ] = None,
    model_load_timeout: Annotated[
        float,
        typer.Option(
            "--model-load-timeout",
            help="Seconds a Python model's initialize (and auto_complete_config) may take "
            "per instance; then the load fails with that reason and the worker is killed.",
        ),
    ] = _D.model_load_timeout,
    python_execute_timeout: Annotated[
        float,
        typer.Option(
            "--python-execute-timeout",
            help="Seconds a Python model may take on one request before its worker is "
            "restarted (0: no limit).",
        ),
    ] = _D.python_execute_timeout,
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
    ] = _D.python_env_no_index,
    allow_model_load_files: Annotated[
        str,
        typer.Option(
            "--allow-model-load-files",
            help="true: the repository API's load may carry 'file:' parameters (model files, "
            "model.py code, sent over the network) and config overrides with an absolute "
            "EXECUTION_ENV_PATH. Off by default: such a load is refused with 403.",
            rich_help_panel="Access control (docs/security.md)",
        ),
    ] = "false",
    http_restricted_api: Annotated[
        list[str] | None,
        typer.Option(
            "--http-restricted-api",
            help="<groups>:<key>=<value> (repeatable), Triton's flag: requests to these API "
            "groups must carry the header '<key>: <value>', else 403. Groups: health, "
            "metadata, inference, shared-memory, model-config, model-repository, statistics, "
            "trace, logging. Applies to the SageMaker APIs too. Also read, space-separated, "
            "from MODELYARD_HTTP_RESTRICTED_API (keeps the value out of the command line).",
            envvar="MODELYARD_HTTP_RESTRICTED_API",
            rich_help_panel="Access control (docs/security.md)",
        ),
    ] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            "--auth-token-file",
            help="File of bearer tokens, one '<role> <token>' per line (role: inference or "
            "management). Every API but the health probes then needs 'Authorization: Bearer "
            "<token>' (401 without); the model-repository API a management token (403).",
            rich_help_panel="Access control (docs/security.md)",
        ),
    ] = None,
    # -- gRPC (Triton's flags; cli/_grpc_flags.py checks them) -----------------------------
    allow_grpc: Annotated[
        str, typer.Option("--allow-grpc", help="false: no gRPC port.", rich_help_panel="gRPC")
    ] = "true",
    grpc_address: Annotated[
        str | None,
        typer.Option(
            "--grpc-address",
            help="Address gRPC binds (default: --http-address).",
            rich_help_panel="gRPC",
        ),
    ] = None,
    grpc_port: Annotated[
        int,
        typer.Option(
            "--grpc-port", help="gRPC port (KServe v2, Triton's service).", rich_help_panel="gRPC"
        ),
    ] = _D.grpc.port,
    grpc_max_input_size: Annotated[
        int,
        typer.Option(
            "--grpc-max-input-size",
            help="Largest gRPC request in bytes (RESOURCE_EXHAUSTED above).",
            rich_help_panel="gRPC",
        ),
    ] = _D.grpc.max_input_size,
    grpc_infer_response_compression_level: Annotated[
        str,
        typer.Option(
            "--grpc-infer-response-compression-level",
            help="none, low, medium or high: inference answers gzip-compressed unless none.",
            rich_help_panel="gRPC",
        ),
    ] = _D.grpc.infer_response_compression_level,
    grpc_keepalive_time: Annotated[
        int,
        typer.Option(
            "--grpc-keepalive-time", help="ms between keepalive pings.", rich_help_panel="gRPC"
        ),
    ] = _D.grpc.keepalive_time,
    grpc_keepalive_timeout: Annotated[
        int,
        typer.Option(
            "--grpc-keepalive-timeout", help="ms to wait for a ping's ack.", rich_help_panel="gRPC"
        ),
    ] = _D.grpc.keepalive_timeout,
    grpc_keepalive_permit_without_calls: Annotated[
        str,
        typer.Option(
            "--grpc-keepalive-permit-without-calls",
            help="true: keepalive pings also without calls in flight.",
            rich_help_panel="gRPC",
        ),
    ] = "false",
    grpc_http2_max_pings_without_data: Annotated[
        int,
        typer.Option(
            "--grpc-http2-max-pings-without-data",
            help="Pings sent without data (0: no limit).",
            rich_help_panel="gRPC",
        ),
    ] = _D.grpc.http2_max_pings_without_data,
    grpc_http2_min_recv_ping_interval_without_data: Annotated[
        int,
        typer.Option(
            "--grpc-http2-min-recv-ping-interval-without-data",
            help="ms a client must leave between pings without data.",
            rich_help_panel="gRPC",
        ),
    ] = _D.grpc.http2_min_recv_ping_interval_without_data,
    grpc_http2_max_ping_strikes: Annotated[
        int,
        typer.Option(
            "--grpc-http2-max-ping-strikes",
            help="Bad pings before GOAWAY (0: any number).",
            rich_help_panel="gRPC",
        ),
    ] = _D.grpc.http2_max_ping_strikes,
    grpc_max_connection_age: Annotated[
        int | None,
        typer.Option(
            "--grpc-max-connection-age", help="ms a connection may live.", rich_help_panel="gRPC"
        ),
    ] = None,
    grpc_max_connection_age_grace: Annotated[
        int | None,
        typer.Option(
            "--grpc-max-connection-age-grace",
            help="ms of grace after the maximum age.",
            rich_help_panel="gRPC",
        ),
    ] = None,
    grpc_restricted_protocol: Annotated[
        list[str] | None,
        typer.Option(
            "--grpc-restricted-protocol",
            help="<groups>:<key>=<value> (repeatable): RPCs of these groups need the metadata "
            "'triton-grpc-protocol-<key>: <value>' (Triton's flag; groups as --http-restricted-api).",
            rich_help_panel="Access control (docs/security.md)",
        ),
    ] = None,
) -> None:
    from modelyard.manager.eviction import POLICIES
    from modelyard.manager.manager import MODES

    if model_control_mode not in MODES:
        raise typer.BadParameter(
            f"unsupported model control mode '{model_control_mode}' ({', '.join(MODES)})",
            param_hint="--model-control-mode",
        )
    if eviction_policy not in POLICIES:
        raise typer.BadParameter(
            f"unknown eviction policy '{eviction_policy}' ({', '.join(POLICIES)})",
            param_hint="--eviction-policy",
        )
    for flag, size in (
        ("--http-max-url-size", http_max_url_size),
        ("--http-max-header-size", http_max_header_size),
    ):
        if size <= 0:
            raise typer.BadParameter(
                f"must be a positive number of bytes, got {size}", param_hint=flag
            )
    if http_header_timeout < 0:
        raise typer.BadParameter(
            f"must be 0 (no limit) or more seconds, got {http_header_timeout}",
            param_hint="--http-header-timeout",
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
    from modelyard.protocol._access import parse_restricted_features

    try:
        restricted = parse_restricted_features(http_restricted_api or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--http-restricted-api") from None
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
        max_url_size=http_max_url_size,
        max_header_size=http_max_header_size,
        header_timeout=http_header_timeout,
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
        status_page=_bool(http_status_page, "--http-status-page"),
        metrics_port=metrics_port,
        sagemaker_port=sagemaker_port,
        sagemaker_model_roots=tuple(sagemaker_model_root or ()) or (DEFAULT_SAGEMAKER_MODEL_ROOT,),
        model_load_timeout=_positive(model_load_timeout, "--model-load-timeout"),
        python_execute_timeout=python_execute_timeout,
        python_env_dir=python_env_dir,
        python_env_build=_bool(python_env_build, "--python-env-build"),
        python_env_index_url=python_env_index_url,
        python_env_find_links=tuple(python_env_find_links or ()),
        python_env_no_index=python_env_no_index,
        allow_model_load_files=_bool(allow_model_load_files, "--allow-model-load-files"),
        http_restricted_api=restricted,
        auth_token_file=auth_token_file,
        grpc=grpc_settings(
            allow=_bool(allow_grpc, "--allow-grpc"),
            address=grpc_address,
            port=grpc_port,
            max_input_size=grpc_max_input_size,
            keepalive_time=grpc_keepalive_time,
            keepalive_timeout=grpc_keepalive_timeout,
            keepalive_permit_without_calls=_bool(
                grpc_keepalive_permit_without_calls, "--grpc-keepalive-permit-without-calls"
            ),
            http2_max_pings_without_data=grpc_http2_max_pings_without_data,
            http2_min_recv_ping_interval_without_data=grpc_http2_min_recv_ping_interval_without_data,
            http2_max_ping_strikes=grpc_http2_max_ping_strikes,
            max_connection_age=grpc_max_connection_age,
            max_connection_age_grace=grpc_max_connection_age_grace,
            compression_level=grpc_infer_response_compression_level,
            restricted=grpc_restricted_protocol or [],
        ),
    )
    settings = _with_sagemaker_environment(ctx, settings, sagemaker_safe_port_range)
    if "://" not in model_repository and not Path(model_repository).is_dir():
        typer.echo(f"error: model repository '{model_repository}' is not a folder", err=True)
        raise typer.Exit(2)
    if http_server not in ("modelyard", "uvicorn"):
        raise typer.BadParameter(f"unknown HTTP server '{http_server}'", param_hint="--http-server")
    sys.exit(run(settings, http_server))


# what ``modelyard serve --help`` ends with: the short answer to "is this safe to expose?"
SECURITY_EPILOG = (
    "Safe production setup (docs/security.md): keep --allow-model-load-files off (the "
    "default: no code is accepted from the network); close the model-repository API with "
    "--http-restricted-api model-repository:<header>=<value> or --auth-token-file "
    "management tokens, or serve with --model-control-mode none; bind --http-address "
    "127.0.0.1 behind a TLS proxy unless the network in front is trusted. The start-up log "
    "states the address and what is open there."
)


# command-line parameters -> the settings fields SageMaker's variables may also set
_SAGEMAKER_FLAGS = {
    "sagemaker_port": "sagemaker_port",
    "sagemaker_safe_port_range": "sagemaker_safe_port_range",
    "load_model": "load_models",
    "allow_metrics": "allow_metrics",
    "metrics_port": "metrics_port",
    "log_verbose": "log_verbose",
    "allow_grpc": "grpc",
}


def _with_sagemaker_environment(
    ctx: typer.Context, settings: ServerSettings, safe_range: str | None
) -> ServerSettings:
    """SageMaker's variables applied (``cli/_sagemaker_env.py``); flags given win."""
    from dataclasses import replace

    from modelyard.cli._sagemaker_env import (
        SageMakerEnvError,
        apply_sagemaker_environment,
        parse_port_range,
    )

    explicit = {
        field
        for param, field in _SAGEMAKER_FLAGS.items()
        if getattr(ctx.get_parameter_source(param), "name", None) == "COMMANDLINE"
    }
    try:
        if safe_range is not None:
            pair = parse_port_range(safe_range, "--sagemaker-safe-port-range")
            settings = replace(settings, sagemaker_safe_port_range=pair)
        settings, warnings = apply_sagemaker_environment(settings, os.environ, explicit)
    except SageMakerEnvError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    return settings


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
    """Serve until SIGTERM/SIGINT (``server/lifecycle.py``); returns the process exit code."""
    from modelyard.server.lifecycle import run as run_server

    return run_server(settings, http_server)


__all__ = ["run", "serve"]
