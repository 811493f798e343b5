"""Blocking steps of a load, run on worker threads: config completion and runtime creation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelyard.errors import ConfigError, InvalidArgument
from modelyard.repository import (
    ModelEntry,
    load_config,
    model_file_path,
    normalize_config,
    validate_config,
)
from modelyard.runtimes.base import factory_for
from modelyard.scheduling.runner import ModelRunner

if TYPE_CHECKING:
    from modelyard.manager.manager import ManagerOptions

KNOWN_BACKENDS = frozenset({"onnxruntime"})


def prepare_config(
    entry: ModelEntry, options: ManagerOptions, override_json: str | None = None
) -> Any:
    """Read, auto-complete (unless disabled), normalise and validate a model's config.

    ``override_json`` is the config a repository-extension load request carried (Triton's
    ``parameters.config``, the JSON form of ModelConfig); it replaces config.pbtxt. Auto-complete
    reads the newest version's model file, as Triton does.
    """
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2 as mc

    if override_json is not None:
        try:
            config = json_format.Parse(override_json, mc.ModelConfig())
        except json_format.ParseError as exc:
            raise InvalidArgument(
                f"failed to load '{entry.name}', failed to parse the 'config' parameter: {exc}"
            ) from None
    elif entry.config_path is not None:
        config = load_config(entry.config_path)
    elif options.autocomplete:
        config = mc.ModelConfig()
    else:
        raise ConfigError(
            f"failed to load model '{entry.name}': no config.pbtxt in {entry.path} and "
            "auto-complete is disabled (--disable-auto-complete-config)"
        )
    # Triton's order: backend fields from the files, the backend's auto-complete, defaults
    normalize_config(config, model_dir=entry.path)
    if options.autocomplete and entry.versions:
        model_file = model_file_path(entry.path, max(entry.versions), config)
        factory_for(config).autocomplete(config, model_file, options.runtime)
        normalize_config(config, model_dir=entry.path)
    validate_config(
        config,
        folder_name=entry.name,
        config_path=entry.config_path,
        known_backends=KNOWN_BACKENDS,
        versions=entry.versions,
    )
    return config


def runner_for_version(
    entry: ModelEntry, config: Any, version: int, options: ManagerOptions
) -> ModelRunner:
    factory = factory_for(config)
    runtime = factory.load(config, model_file_path(entry.path, version, config), options.runtime)
    return ModelRunner(
        config,
        str(version),
        runtime,
        model_dir=entry.path,
        inline_ns=options.inline_threshold_ns,
    )
