"""Ensembles as the manager loads them: composing models first, then the checks.

Triton loads an ensemble's steps before the ensemble, refuses it in its own words when a step
is missing, failed, or does not fit, and marks it decoupled when a step is. The manager
calls these at load (``prepare_ensemble``) and when it serves an ensemble's config without
loading it (``mark_decoupled``).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

from modelyard.errors import ConfigError, ModelyardError
from modelyard.manager.records import ModelRecord, State
from modelyard.repository import (
    composing_fault,
    composing_models,
    failed_model_reason,
    is_decoupled_over,
    missing_models_reason,
    missing_version_reason,
)

if TYPE_CHECKING:
    from modelyard.manager.manager import ModelManager

# the "<path>/config.pbtxt[:line]: " modelyard puts before a config error
_WHERE = re.compile(r"^\S*config\.pbtxt(?::\d+)?: ")


async def prepare_ensemble(manager: ModelManager, config: Any) -> None:
    """Loads an ensemble's composing models first (or joins their loads), checks the
    ensemble against their configs and marks it decoupled when a step is, as Triton
    does when it loads an ensemble; refusals use Triton's texts."""
    pairs = composing_models(config)
    missing = sorted({name for name, _ in pairs if name not in manager.models})
    if missing and manager.on_demand:
        await manager.refresh()  # stored since the last listing?
        missing = sorted({name for name, _ in pairs if name not in manager.models})
    if missing:
        raise ConfigError(missing_models_reason(config.name, missing))
    configs: dict[tuple[str, str], Any] = {}
    for name, version in pairs:
        record = manager.models[name]
        try:
            await _step_loaded(manager, record, version)
        except ModelyardError as exc:
            if version and version not in record.versions:
                raise ConfigError(missing_version_reason(config.name, name, version)) from None
            vrec = record.versions.get(version) if version else None
            why = (vrec.reason if vrec is not None else "") or record.reason or str(exc)
            why = _WHERE.sub("", why)  # Triton's reason names no file
            shown = version or (max(record.versions, key=int) if record.versions else "1")
            raise ConfigError(
                failed_model_reason(
                    config.name,
                    name,
                    f"version {shown} is at UNAVAILABLE state: Invalid argument: {why};",
                )
            ) from None
        runner = record.lookup(version)
        if runner is None:
            raise ConfigError(missing_version_reason(config.name, name, version or "-1"))
        configs[(name, version)] = runner.config
    fault = composing_fault(config, configs)
    if fault:
        raise ConfigError(fault)
    config.model_transaction_policy.decoupled = is_decoupled_over(config, configs)


async def mark_decoupled(manager: ModelManager, config: Any) -> None:
    """An ensemble's served config says decoupled when a step is (Triton's), read from
    the steps' configs without loading anything."""
    configs: dict[tuple[str, str], Any] = {}
    for name, version in composing_models(config):
        try:
            configs[(name, version)] = await manager.config_for(name, version)
        except ModelyardError:
            return  # the load will say what is wrong
    if composing_fault(config, configs) is None:
        config.model_transaction_policy.decoupled = is_decoupled_over(config, configs)


async def _step_loaded(manager: ModelManager, record: ModelRecord, version: str) -> None:
    """Returns once a composing model serves ``version`` (newest when ""), loading it
    or joining the load under way; raises its load error."""
    if record.lookup(version) is not None:
        return
    if record.registered:  # beside the ensemble in its SageMaker url: loaded with it
        await manager.load_registered(record)
        return
    if manager.on_demand:
        await manager.runner_for(record.name, version)
        return
    if manager.options.control_mode == "explicit":
        await manager.load(record.name)
        return
    # none / poll: every model loads at start, in no particular order; wait for it
    deadline = time.monotonic() + manager.options.load_wait_timeout
    while record.lookup(version) is None:
        failed = record.reason or any(
            v.state == State.UNAVAILABLE and v.reason for v in record.versions.values()
        )
        if failed or time.monotonic() > deadline:
            raise ConfigError(record.reason or "not loaded")
        await asyncio.sleep(0.05)
