"""The runtime seam: a backend turns one model version's files into a :class:`Runtime`.

Triton names a model's backend with ``platform`` (``onnxruntime_onnx``) or ``backend``
(``onnxruntime``); :func:`backend_for` maps both onto one key (with the repository's
table), and :func:`factory_for` maps that key to the factory. Factories import their
framework lazily, so importing this module is cheap and a missing optional framework only
fails the models that need it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelyard.errors import ConfigError, ModelyardError
from modelyard.repository import ENSEMBLE_PLATFORM, PLATFORM_TO_BACKEND
from modelyard.types import Array, ModelResolver, Runtime

if TYPE_CHECKING:
    from modelyard.metrics import CustomMetrics
    from modelyard.runtimes.python.environments import EnvironmentOptions


@dataclass(slots=True)
class Result:
    """One answer of an awaited runtime (Python worker, ensemble): outputs by name and
    response parameters, or an error response. An ensemble step's failure is raised, not
    returned, so that the ensemble's statistics count it as a failed request, as Triton's do.
    """

    outputs: dict[str, Array] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    error: ModelyardError | None = None
    failed_execution: bool = False  # execute raised (vs. an error response)
    final: bool = False  # a decoupled answer that carried the final flag: the last one


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Server-wide knobs a runtime may honour; per-model settings come from the config.

    ``default_max_batch_size`` is what auto-complete gives a batchable model that names no
    ``max_batch_size`` (Triton's ``--backend-config=<backend>,default-max-batch-size=N``).
    """

    default_max_batch_size: int = 4
    # Python backend: where model environments come from (None: the server's interpreter
    # for every model), how other models are reached (BLS), where custom metrics go
    python_envs: EnvironmentOptions | None = None
    resolver: ModelResolver | None = None
    custom_metrics: CustomMetrics | None = None
    python_execute_timeout: float = 0.0  # seconds; 0 = no limit
    python_start_timeout: float = 300.0  # --model-load-timeout
    python_arena_bytes: int = 32 * 2**20
    memory_limit: int = 0  # the host memory budget: a worker passing it while it starts stops


class RuntimeFactory(Protocol):
    """Loads one backend's models. ``autocomplete`` fills what ``config.pbtxt`` left out."""

    backend: str

    def autocomplete(self, config: Any, model_file: Path, options: RuntimeOptions) -> None: ...

    def load(self, config: Any, model_file: Path, options: RuntimeOptions) -> Runtime: ...


def backend_for(config: Any) -> str:
    """The backend key of a config: ``backend`` wins, else the platform's backend."""
    if config.backend:
        return str(config.backend)
    if config.platform == ENSEMBLE_PLATFORM:
        return ENSEMBLE_PLATFORM
    return PLATFORM_TO_BACKEND.get(config.platform, "")


def factory_for(config: Any) -> RuntimeFactory:
    """The factory for a config (whose backend fields the repository already filled in)."""
    key = backend_for(config)
    if key not in _REGISTRY:
        if not key:
            raise ConfigError(f"unexpected platform type '{config.platform}' for {config.name}")
        raise ConfigError(
            f"unable to find backend library for backend '{key}', try specifying "
            f"runtime on the model configuration."
        )
    return _factory(key)


# backend key -> "module:FactoryClass"; a module is imported only when a model needs it
_REGISTRY: dict[str, str] = {
    "onnxruntime": "modelyard.runtimes.onnx:OnnxFactory",
    "python": "modelyard.runtimes.python:PythonFactory",
    "fil": "modelyard.runtimes.fil:FilFactory",
    "ensemble": "modelyard.runtimes.ensemble:EnsembleFactory",
}

KNOWN_BACKENDS = frozenset(_REGISTRY)


def _factories() -> dict[str, RuntimeFactory]:
    """Every registered factory (imports each backend: for tools, not the request path)."""
    return {key: _factory(key) for key in _REGISTRY}


def _factory(key: str) -> RuntimeFactory:
    cached = _CACHE.get(key)
    if cached is None:
        module_name, _, cls_name = _REGISTRY[key].partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        cached = _CACHE[key] = cls()
    return cached


_CACHE: dict[str, RuntimeFactory] = {}
