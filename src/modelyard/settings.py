"""Server settings: one frozen value, built by the CLI and passed down; no module globals.

The defaults written here are the only ones: ``modelyard serve``'s options take theirs from
this class, and the manager's options have none of their own (the app passes every field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelyard.manager.eviction import DEFAULT_POLICY

DEFAULT_MAX_INPUT_SIZE = 64 * 1024 * 1024  # Triton's --http-max-input-size default
DEFAULT_SAGEMAKER_MODEL_ROOT = "/opt/ml/models"  # where SageMaker puts an endpoint's models
# request line and headers: nginx refuses a request line over 8 KiB; 64 KiB of headers leaves
# room for large bearer tokens and cookies while bounding what one client makes us buffer
DEFAULT_MAX_URL_SIZE = 8 * 1024
DEFAULT_MAX_HEADER_SIZE = 64 * 1024
DEFAULT_HEADER_TIMEOUT = 30.0  # seconds from a request's first byte to the end of its headers


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    """The gRPC front end (``--grpc-*``, Triton's names and defaults; durations in ms)."""

    enabled: bool = True  # --allow-grpc (Triton's default: on)
    address: str | None = None  # --grpc-address; None: the HTTP address
    port: int = 8001
    max_input_size: int = DEFAULT_MAX_INPUT_SIZE  # --grpc-max-input-size: largest request
    keepalive_time: int = 7_200_000
    keepalive_timeout: int = 20_000
    keepalive_permit_without_calls: bool = False
    http2_max_pings_without_data: int = 2
    http2_min_recv_ping_interval_without_data: int = 300_000
    http2_max_ping_strikes: int = 2
    max_connection_age: int | None = None
    max_connection_age_grace: int | None = None
    infer_response_compression_level: str = "none"  # none | low | medium | high
    # Triton's --grpc-restricted-protocol, parsed: (group, key, value) per group
    restricted_protocol: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    model_repository: str  # a folder or s3://...
    http_address: str = "0.0.0.0"
    http_port: int = 8000
    model_control_mode: str = "on-demand"  # none | explicit | poll | on-demand
    load_models: tuple[str, ...] = ()
    autocomplete: bool = True  # --disable-auto-complete-config / --strict-model-config
    max_input_size: int = DEFAULT_MAX_INPUT_SIZE
    max_url_size: int = DEFAULT_MAX_URL_SIZE  # --http-max-url-size: longer targets get 414
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE  # --http-max-header-size: larger heads 431
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # --http-header-timeout (0: none)
    exit_timeout_secs: float = 30.0
    strict_readiness: bool = False
    log_verbose: int = 0
    exit_on_error: bool = False
    default_max_batch_size: int = 4
    inline_threshold_us: float = 200.0
    load_wait_timeout: float = 60.0
    repository_poll_secs: float = 15.0
    memory_budget: int | None = None  # bytes
    eviction_policy: str = DEFAULT_POLICY
    allow_metrics: bool = True
    status_page: bool = True  # --http-status-page: GET / and GET /v2/status (docs/status-page.md)
    metrics_port: int = 8002  # Triton's; /metrics is on the HTTP port as well
    gpu_limits: tuple[tuple[int, float], ...] = ()  # --model-load-gpu-limit device:share
    model_cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/modelyard/models
    model_cache_size: int = 20 * 2**30
    allow_sagemaker: bool = False  # SageMaker's container face (/ping, /invocations, /models)
    sagemaker_port: int = 8080  # Triton's default --sagemaker-port
    # --sagemaker-model-root: the only folders POST /models may load from
    sagemaker_model_roots: tuple[str, ...] = (DEFAULT_SAGEMAKER_MODEL_ROOT,)
    sagemaker_safe_port_range: tuple[int, int] | None = None  # SAGEMAKER_SAFE_PORT_RANGE
    sagemaker_ping_mode: str = "ready"  # ready | live (SAGEMAKER_MULTI_MODEL=true: live)
    sagemaker_default_model: str | None = None  # SAGEMAKER_TRITON_DEFAULT_MODEL_NAME
    # seconds a model's Python worker may take for auto_complete_config and for initialize
    # (each instance); then the load fails and the worker is killed. Triton has no such limit;
    # 300 s stays under SageMaker's 360 s model-load limit, so the reason reaches the platform
    model_load_timeout: float = 300.0
    # seconds a Python model may take per request (0: none, as in Triton: see python-models.md)
    python_execute_timeout: float = 0.0
    python_env_dir: Path | None = None  # None: $XDG_CACHE_HOME/modelyard/envs
    python_env_build: bool = True  # build environments from requirements.txt
    python_env_index_url: str | None = None
    python_env_find_links: tuple[str, ...] = ()
    python_env_no_index: bool = False
    # access control (docs/security.md)
    allow_model_load_files: bool = False  # load API's file: parameters (code over the network)
    # Triton's --http-restricted-api, parsed: (group, header, value) per group
    http_restricted_api: tuple[tuple[str, str, str], ...] = field(default=(), repr=False)
    auth_token_file: Path | None = None  # bearer tokens with roles; None: no tokens
    grpc: GrpcSettings = field(default_factory=GrpcSettings)  # the gRPC front end
