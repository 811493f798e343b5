"""Server settings: one frozen value, built by the CLI and passed down; no module globals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_INPUT_SIZE = 64 * 1024 * 1024  # Triton's --http-max-input-size default


@dataclass(frozen=True, slots=True)
class ServerSettings:
    model_repository: str  # a folder or s3://...
    http_address: str = "0.0.0.0"
    http_port: int = 8000
    model_control_mode: str = "on-demand"  # none | explicit | poll | on-demand
    load_models: tuple[str, ...] = ()
    autocomplete: bool = True  # --disable-auto-complete-config / --strict-model-config
    max_input_size: int = DEFAULT_MAX_INPUT_SIZE
    exit_timeout_secs: float = 30.0
    strict_readiness: bool = False
    log_verbose: int = 0
    exit_on_error: bool = False
    default_max_batch_size: int = 4
    inline_threshold_us: float = 50.0
    load_wait_timeout: float = 60.0
    repository_poll_secs: float = 15.0
    memory_budget: int | None = None  # bytes
    eviction_policy: str = "gdsf"
    allow_metrics: bool = True
    metrics_port: int = 8002  # Triton's; /metrics is on the HTTP port as well
    gpu_limits: tuple[tuple[int, float], ...] = ()  # --model-load-gpu-limit device:share
    model_cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/modelyard/models
    model_cache_size: int = 20 * 2**30
    allow_sagemaker: bool = False  # SageMaker's container face (/ping, /invocations, /models)
    sagemaker_port: int = 8080  # Triton's default --sagemaker-port
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
