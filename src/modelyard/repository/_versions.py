"""Triton's version policies as a pure function (``VersionsToLoad`` in model_lifecycle.cc).

Shared by ``layout`` (which re-exports it) and the validator, which runs Triton's "at least
one version" check at the same point in the sequence as Triton does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tritonclient.grpc import model_config_pb2 as mc

logger = logging.getLogger(__name__)


def select_versions(config: mc.ModelConfig, available: Sequence[int]) -> list[int]:
    """The versions ``config.version_policy`` picks from ``available``, ascending.

    No policy means Triton's default, the newest one. ``specific`` versions that have no
    folder are skipped (Triton logs them as errors and loads the rest).
    """
    present = sorted(set(available))
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice") if config.HasField("version_policy") else None
    if which == "all":
        return present
    if which == "specific":
        chosen: list[int] = []
        for version in sorted(set(policy.specific.versions)):
            if version in present:
                chosen.append(version)
            else:
                logger.error(
                    "version %d is specified for model '%s', but the version directory is "
                    "not present",
                    version,
                    config.name,
                )
        return chosen
    count = policy.latest.num_versions if which == "latest" else 1
    return present[len(present) - count :] if count > 0 else []


def no_version_reason(model_name: str) -> str:
    """Triton's message when the policy leaves nothing to load."""
    return (
        f"at least one version must be available under the version policy of model '{model_name}'"
    )
