"""How many cores this process may really use: affinity and the cgroup's CPU quota.

``os.cpu_count()`` counts the host's CPUs. Inside a container limited to 2 CPUs on a 64-core
host (Kubernetes ``resources.limits.cpu: 2``, ``docker run --cpus 2``) it says 64, and a
thread pool sized from it spins 63 threads that the quota then throttles, stalling every
request the process serves. Affinity (``taskset``, cpusets) narrows the cores; the quota
(cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) caps the time. The
usable count is the smaller of the two, the quota rounded down (a pool of 2 on a 1.5-core
quota is throttled a quarter of the time), and never below 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from modelyard._cgroup import CGROUP_ROOT, PROC_SELF_CGROUP, cgroup_dirs


@dataclass(frozen=True, slots=True)
class CpuBudget:
    """What bounds this process's CPU: ``usable`` is what thread pools should be sized to."""

    affinity: int  # CPUs in the process's affinity mask (all online CPUs when unset)
    quota: float | None  # the tightest cgroup quota, in cores; None when unlimited

    @property
    def usable(self) -> int:
        cores = self.affinity
        if self.quota is not None:
            cores = min(cores, math.floor(self.quota + 1e-9))
        return max(1, cores)

    def describe(self) -> str:
        """E.g. ``2 (affinity 2, no cgroup quota)`` for logs and benchmark records."""
        quota = "no cgroup quota" if self.quota is None else f"cgroup quota {self.quota:g}"
        return f"{self.usable} (affinity {self.affinity}, {quota})"


def cpu_budget(
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_SELF_CGROUP,
    affinity: int | None = None,
) -> CpuBudget:
    """This process's CPU budget; tests pass both paths and ``affinity`` to run off-host."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = os.cpu_count() or 1
    dirs = cgroup_dirs(cgroup_root, proc_cgroup, "cpu")
    quotas = [q for q in (_quota(d) for d in dirs) if q]
    return CpuBudget(affinity=affinity, quota=min(quotas) if quotas else None)


def usable_cores() -> int:
    return cpu_budget().usable


def _quota(entry: tuple[Path, bool]) -> float | None:
    """The folder's quota in cores, or None (no quota, not a cgroup folder, unreadable)."""
    folder, v2 = entry
    try:
        if v2:
            text = (folder / "cpu.max").read_text().split()
            if len(text) != 2 or text[0] == "max":
                return None
            quota, period = int(text[0]), int(text[1])
        else:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:  # v1 writes -1 for "no quota"
        return None
    return quota / period
