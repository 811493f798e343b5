"""Who may load what through the repository API: the rules every front end shares."""

from __future__ import annotations

import orjson

from modelyard.errors import PermissionDenied, Unavailable

LOAD_FILES_DISABLED = (
    "failed to load '{model}': loading a model with 'file:' parameters (model files sent "
    "with the request) is disabled on this server; start it with "
    "--allow-model-load-files=true to allow it (docs/security.md)"
)
# Triton's text and status for its modes; on-demand serves the API too (pre-loading)
CONTROL_DISABLED = "explicit model load / unload is not allowed if polling is enabled"


def check_model_control(control_mode: str) -> None:
    """Unavailable (Triton's text) unless the control mode lets clients load and unload."""
    if control_mode not in ("explicit", "on-demand"):
        raise Unavailable(CONTROL_DISABLED)


def refuse_code_from_request(model: str, with_files: bool, config: str | None) -> None:
    """Refuse a load that would run code the repository does not hold.

    ``file:`` parameters are the model's files themselves (a ``model.py`` is code). A
    ``config`` override cannot add files, and the model file and a relative or
    ``$$TRITON_MODEL_DIRECTORY`` ``EXECUTION_ENV_PATH`` stay inside the model's folder, but
    an absolute ``EXECUTION_ENV_PATH`` would run a Python interpreter from anywhere on the
    host: that needs the same switch. A config that does not parse is left to the load to
    report.
    """
    if with_files:
        raise PermissionDenied(LOAD_FILES_DISABLED.format(model=model))
    if config is None:
        return
    try:
        parsed = orjson.loads(config)
        env_path = parsed["parameters"]["EXECUTION_ENV_PATH"]["string_value"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return
    if isinstance(env_path, str):
        path = env_path.strip()
        if path.startswith("/"):
            raise PermissionDenied(
                f"failed to load '{model}': a 'config' parameter with an absolute "
                "EXECUTION_ENV_PATH runs an environment from outside the model repository; "
                "start the server with --allow-model-load-files=true to allow it"
            )
