"""Triton model-repository semantics: layout, config.pbtxt, defaults, checks, served JSON.

No HTTP and no runtimes here; the manager asks this package what models exist, which
versions to load, and what each config says (see ``config.py`` and ``layout.py``).
"""

from modelyard.repository._common import (
    BACKEND_DEFAULT_FILENAME,
    CONFIG_FILENAME,
    ENSEMBLE_PLATFORM,
    PLATFORM_TO_BACKEND,
    ModelConfigError,
)
from modelyard.repository.config import (
    ModelConfig,
    config_to_json,
    load_config,
    normalize_config,
    validate_config,
)
from modelyard.repository.ensemble import (
    EnsembleStep,
    composing_fault,
    composing_models,
    ensemble_steps,
    failed_model_reason,
    is_decoupled_over,
    missing_models_reason,
    missing_version_reason,
)
from modelyard.repository.layout import (
    ModelEntry,
    default_model_filename,
    list_versions,
    load_entry_config,
    model_file_path,
    scan_model,
    scan_repository,
    select_versions,
    versions_to_load,
)

__all__ = [
    "BACKEND_DEFAULT_FILENAME",
    "CONFIG_FILENAME",
    "ENSEMBLE_PLATFORM",
    "PLATFORM_TO_BACKEND",
    "EnsembleStep",
    "ModelConfig",
    "ModelConfigError",
    "ModelEntry",
    "composing_fault",
    "composing_models",
    "config_to_json",
    "default_model_filename",
    "ensemble_steps",
    "failed_model_reason",
    "is_decoupled_over",
    "list_versions",
    "load_config",
    "load_entry_config",
    "missing_models_reason",
    "missing_version_reason",
    "model_file_path",
    "normalize_config",
    "scan_model",
    "scan_repository",
    "select_versions",
    "validate_config",
    "versions_to_load",
]
