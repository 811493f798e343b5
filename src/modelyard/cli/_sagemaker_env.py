"""SageMaker's environment variables, read as Triton's SageMaker entry point reads them.

SageMaker configures a container through its environment; Triton's image turns the
variables into ``tritonserver`` flags in its ``serve`` script. With ``--allow-sagemaker=true``
``modelyard serve`` reads the same variables into the same settings. A flag given on the
command line wins over its variable (the operator wrote it on purpose); a variable wins over
the default.

* ``SAGEMAKER_BIND_TO_PORT``: the container face's port (``--sagemaker-port``).
* any of these, or ``SAGEMAKER_MULTI_MODEL``: no gRPC port unless ``--allow-grpc`` says so
  (Triton's serve script passes ``--allow-grpc=false``).
* ``SAGEMAKER_SAFE_PORT_RANGE`` ``<low>-<high>``: the ports the other listeners (HTTP, gRPC,
  metrics) must use (``--sagemaker-safe-port-range``); outside it, start-up fails with
  Triton's text.
* ``SAGEMAKER_MULTI_MODEL=true``: a multi-model endpoint; ``/ping`` then answers as live
  (Triton's ``SAGEMAKER_TRITON_PING_MODE=live``), else as ready.
  ``SAGEMAKER_TRITON_OVERRIDE_PING_MODE`` (or ``SAGEMAKER_TRITON_PING_MODE``) overrides it.
* ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME``: the model ``/invocations`` serves; on a
  single-model endpoint it is also loaded at start (Triton's ``--load-model``).
* ``SAGEMAKER_TRITON_INFERENCE_TYPE``: ``infer`` (the default) is what ``/invocations`` does
  here; ``generate`` and ``generate_stream`` are refused at start-up as unsupported.
* ``SAGEMAKER_TRITON_ALLOW_METRICS``, ``SAGEMAKER_TRITON_METRICS_PORT``,
  ``SAGEMAKER_TRITON_LOG_VERBOSE``: ``--allow-metrics``, ``--metrics-port``, ``--log-verbose``.
* The variables for features modelyard does not have (gRPC, thread counts, the Python
  backend's shared memory, TensorFlow, model namespacing, ``SAGEMAKER_TRITON_ADDITIONAL_ARGS``)
  are named in a start-up warning and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from modelyard.settings import ServerSettings

__all__ = ["IGNORED", "SageMakerEnvError", "apply_sagemaker_environment", "parse_port_range"]

_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}
INFERENCE_TYPES = ("infer", "generate", "generate_stream")
PING_MODES = ("ready", "live")
IGNORED = (
    "SAGEMAKER_TRITON_ALLOW_GRPC",
    "SAGEMAKER_TRITON_GRPC_PORT",
    "SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT",
    "SAGEMAKER_TRITON_THREAD_COUNT",
    "SAGEMAKER_TRITON_LOG_INFO",
    "SAGEMAKER_TRITON_LOG_WARNING",
    "SAGEMAKER_TRITON_LOG_ERROR",
    "SAGEMAKER_TRITON_SHM_DEFAULT_BYTE_SIZE",
    "SAGEMAKER_TRITON_SHM_GROWTH_BYTE_SIZE",
    "SAGEMAKER_TRITON_TENSORFLOW_VERSION",
    "SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT",
    "SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING",
    "SAGEMAKER_TRITON_ADDITIONAL_ARGS",
)


class SageMakerEnvError(ValueError):
    """A variable that cannot be used; the message names it and says what it takes."""


def parse_port_range(text: str, what: str) -> tuple[int, int]:
    """``(low, high)`` from ``<low>-<high>`` (Triton's ``--sagemaker-safe-port-range``)."""
    low, sep, high = text.strip().partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise SageMakerEnvError(f"{what} takes <integer>-<integer>, got '{text}'")
    pair = int(low), int(high)
    if pair[0] > pair[1] or pair[1] > 65535:
        raise SageMakerEnvError(f"{what} '{text}' is not a port range")
    return pair


def _bool(environ: Mapping[str, str], name: str) -> bool | None:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return None
    v = raw.strip().lower()
    if v in _TRUE or v in _FALSE:
        return v in _TRUE
    raise SageMakerEnvError(f"{name} takes true or false, got '{raw}'")


def _int(environ: Mapping[str, str], name: str) -> int | None:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise SageMakerEnvError(f"{name} takes an integer, got '{raw}'")
    return int(raw)


def apply_sagemaker_environment(
    settings: ServerSettings, environ: Mapping[str, str], explicit: Collection[str]
) -> tuple[ServerSettings, list[str]]:
    """``settings`` with SageMaker's variables applied, and warnings to log at start.

    ``explicit`` names the settings fields the command line set; those keep their values.
    Raises SageMakerEnvError for a variable that cannot be used or a port outside the
    safe range (Triton's start-up errors).
    """
    if not settings.allow_sagemaker:
        return settings, []
    changes: dict[str, object] = {}

    def take(field: str, value: object | None) -> None:
        if value is not None and field not in explicit:
            changes[field] = value

    take("sagemaker_port", _int(environ, "SAGEMAKER_BIND_TO_PORT"))
    raw_range = (environ.get("SAGEMAKER_SAFE_PORT_RANGE") or "").strip()
    if raw_range:
        take("sagemaker_safe_port_range", parse_port_range(raw_range, "SAGEMAKER_SAFE_PORT_RANGE"))
    multi = _bool(environ, "SAGEMAKER_MULTI_MODEL") or False
    ping = (
        environ.get("SAGEMAKER_TRITON_OVERRIDE_PING_MODE")
        or environ.get("SAGEMAKER_TRITON_PING_MODE")
        or ("live" if multi else "ready")
    ).strip()
    if ping not in PING_MODES:
        raise SageMakerEnvError(f"SageMaker ping mode '{ping}' is not one of: ready, live")
    take("sagemaker_ping_mode", ping)
    default_model = (environ.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME") or "").strip()
    if default_model:
        take("sagemaker_default_model", default_model)
        if not multi:  # Triton's serve script: --load-model=<the default model>
            take("load_models", (*settings.load_models, default_model))
    inference = (environ.get("SAGEMAKER_TRITON_INFERENCE_TYPE") or "infer").strip()
    if inference not in INFERENCE_TYPES:
        raise SageMakerEnvError(
            f"Invalid SAGEMAKER_TRITON_INFERENCE_TYPE '{inference}'. "
            "Must be one of: infer, generate, generate_stream"
        )
    if inference != "infer":
        raise SageMakerEnvError(
            f"SAGEMAKER_TRITON_INFERENCE_TYPE={inference} is not supported: modelyard's "
            "/invocations runs inference (infer); unset it, or call /v2/models/<m>/generate"
        )
    take("allow_metrics", _bool(environ, "SAGEMAKER_TRITON_ALLOW_METRICS"))
    take("metrics_port", _int(environ, "SAGEMAKER_TRITON_METRICS_PORT"))
    verbose = _bool(environ, "SAGEMAKER_TRITON_LOG_VERBOSE")
    take("log_verbose", None if verbose is None else int(verbose))
    settings = replace(settings, **changes)  # type: ignore[arg-type]
    platform = any(environ.get(v) for v in ("SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_SAFE_PORT_RANGE"))
    if (platform or multi) and "grpc" not in explicit:
        # Triton's serve script runs tritonserver with --allow-grpc=false on SageMaker
        settings = replace(settings, grpc=replace(settings.grpc, enabled=False))
    check_safe_ports(settings)
    warnings = [
        f"{name} is set but has no effect on modelyard (no such feature)"
        for name in IGNORED
        if environ.get(name)
    ]
    return settings, warnings


def check_safe_ports(settings: ServerSettings) -> None:
    """Triton's check: with a safe range, every other listener's port lies inside it."""
    if not settings.allow_sagemaker or settings.sagemaker_safe_port_range is None:
        return
    low, high = settings.sagemaker_safe_port_range
    others = [("HTTP", settings.http_port, "--http-port")]
    if settings.allow_metrics and settings.metrics_port:
        others.append(("metrics", settings.metrics_port, "--metrics-port or --allow-metrics=false"))
    if settings.grpc.enabled:
        others.append(("GRPC", settings.grpc.port, "--grpc-port or --allow-grpc=false"))
    for service, port, flag in others:
        if not low <= port <= high:
            raise SageMakerEnvError(
                f"The server cannot listen to {service} requests at port {port}, allowed "
                f"port range is [{low}, {high}] (set {flag})"
            )
