"""Pin the public surface of modelyard.repository (what the layers above may import)."""

from __future__ import annotations

import modelyard.repository as repository


def test_public_names() -> None:
    assert sorted(repository.__all__) == [
        "BACKEND_DEFAULT_FILENAME",
        "CONFIG_FILENAME",
        "ENSEMBLE_PLATFORM",
        "EnsembleStep",
        "ModelConfig",
        "ModelConfigError",
        "ModelEntry",
        "PLATFORM_TO_BACKEND",
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
    for name in repository.__all__:
        assert getattr(repository, name) is not None
