"""The cgroup folders whose limits may bind this process, for one controller.

Limits sit at the mount's top (inside a container that is the container's own cgroup) and on
every folder along the process's path in ``/proc/self/cgroup`` up to the hierarchy's root: a
parent's limit binds its children, so the callers read them all and keep the tightest. cgroup
v2 has one hierarchy (``0::/path``); v1 one per controller (``4:memory:/path``,
``2:cpu,cpuacct:/path``), mounted under the controller's name or the joined list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP: Final = Path("/proc/self/cgroup")


def cgroup_dirs(root: Path, proc_cgroup: Path, controller: str) -> list[tuple[Path, bool]]:
    """``(folder, is_v2)`` pairs to look for ``controller``'s limit files in, without repeats."""
    found: list[tuple[Path, bool]] = [(root, True), (root / controller, False)]
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            bases = [(root, True)]
        elif controller in controllers.split(","):
            bases = [(root / controllers, False), (root / controller, False)]
        else:
            continue
        rel = Path(path.strip().lstrip("/"))
        for base, v2 in bases:
            node = rel
            while node != Path("."):
                found.append((base / node, v2))
                node = node.parent
    return list(dict.fromkeys(found))
