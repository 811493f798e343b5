"""How much memory there is, and how much a model takes.

* :func:`parse_budget` reads ``--memory-budget``: bytes, a size with a unit, or a share.
* :func:`host_memory_limit` is what this process may use: the cgroup limit inside a container,
  physical memory otherwise; the base a ``50%`` budget is a share of.
* :func:`process_rss`, :func:`process_tree_rss` and :func:`measure_delta` measure what a model
  costs; a model's footprint is measured, never declared. :func:`learned_size` turns the
  measurements of the same files into the size the books hold.
* :func:`gpu_memory_used` asks NVML, when it is installed, what a GPU has in use.

psutil and pynvml are imported inside the functions that need them, so importing this module
costs nothing and a host without a GPU never needs pynvml.
"""

from __future__ import annotations

import importlib
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from modelyard._cgroup import CGROUP_ROOT, PROC_SELF_CGROUP, cgroup_dirs
from modelyard._procfs import tree_rss

__all__ = [
    "gpu_memory_used",
    "host_memory_limit",
    "learned_size",
    "measure_delta",
    "parse_budget",
    "physical_memory",
    "process_rss",
    "process_tree_rss",
    "processes_rss",
]

T = TypeVar("T")

# Units, matched case-insensitively. IEC names (KiB, Ki) are powers of 1024 and SI names with a
# B (KB, MB) powers of 1000, as their standards say. A bare letter (8G, 512m) is a power of 1024,
# as `docker --memory`, `java -Xmx` and `ulimit` read it: people who write "8G" mean GiB.
_UNITS: Final[dict[str, int]] = {
    "": 1,
    "b": 1,
    **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")},
    **{f"{p}i": 1024 ** (i + 1) for i, p in enumerate("kmgt")},
    **{p: 1024 ** (i + 1) for i, p in enumerate("kmgt")},
    **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")},
}
_SIZE: Final = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]*)")
_FORMS: Final = "bytes (1073741824), a size (8GiB, 512MiB, 2GB, 1.5G) or a share of the host (50%)"


def parse_budget(text: str, total: int) -> int:
    """The budget ``text`` names, in bytes; ``total`` is what a share is a share of.

    Accepted: plain bytes (``"1073741824"``), a number with a unit (``"8GiB"``, ``"512 MiB"``,
    ``"2GB"``, ``"1.5G"``; see ``_UNITS``), and a share written as a percentage (``"50%"``,
    ``"12.5%"``, at most 100). A bare fraction such as ``"0.5"`` is refused rather than guessed
    at: it reads as half a byte as easily as half the host. Sizes round down to whole bytes.
    A size larger than ``total`` is accepted (the caller may warn); zero is refused.

    Raises ValueError with the accepted forms when ``text`` is none of these.
    """
    raw = text.strip()
    if raw.endswith("%"):
        number = raw[:-1].strip()
        try:
            share = float(number)
        except ValueError:
            raise ValueError(f"memory budget {text!r} is not a percentage; use {_FORMS}") from None
        if not math.isfinite(share) or not 0 < share <= 100:
            raise ValueError(f"memory budget {text!r} must be a share above 0% and at most 100%")
        return _positive(int(total * share / 100), text)
    match = _SIZE.fullmatch(raw.lower())
    if match is None or match["unit"] not in _UNITS:
        raise ValueError(f"memory budget {text!r} is not understood; use {_FORMS}")
    number, unit = match["number"], match["unit"]
    if unit in ("", "b") and not number.isdigit():
        raise ValueError(
            f"memory budget {text!r} is a fraction of a byte; for a share of the host write a "
            f"percentage such as {float(number) * 100:g}%"
        )
    scale = _UNITS[unit]
    size = int(number) * scale if number.isdigit() else int(float(number) * scale)
    return _positive(size, text)


def _positive(size: int, text: str) -> int:
    if size <= 0:
        raise ValueError(f"memory budget {text!r} is zero bytes; give a positive budget")
    return size


def physical_memory() -> int:
    """Total physical memory of the host, in bytes."""
    return int(_psutil().virtual_memory().total)


def host_memory_limit(
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_SELF_CGROUP,
    physical: int | None = None,
) -> int:
    """The memory this process may use: its cgroup's limit when lower than RAM, else RAM.

    Reads cgroup v2 ``memory.max`` and cgroup v1 ``memory/memory.limit_in_bytes``, both at
    ``cgroup_root`` (inside a container the mount is the container's own cgroup) and along the
    process's own cgroup path from ``proc_cgroup`` up to the root, and keeps the lowest: a
    parent's limit binds its children. ``"max"``, v1's "unlimited" (a number near 2**63) and
    unreadable files are no limit. ``physical`` defaults to psutil's total; tests pass both
    paths and ``physical`` to run without the real host.
    """
    limit = physical_memory() if physical is None else physical
    for candidate in _cgroup_limit_files(cgroup_root, proc_cgroup):
        value = _read_limit(candidate)
        if value is not None and 0 < value < limit:
            limit = value
    return limit


def _cgroup_limit_files(root: Path, proc_cgroup: Path) -> list[Path]:
    """``memory.max`` / ``memory.limit_in_bytes`` files that may bound this process."""
    return [
        folder / ("memory.max" if v2 else "memory.limit_in_bytes")
        for folder, v2 in cgroup_dirs(root, proc_cgroup, "memory")
    ]


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    try:
        return int(text)
    except ValueError:
        return None


def process_rss() -> int:
    """Resident memory of this process alone (not its children), in bytes."""
    return int(_psutil().Process().memory_info().rss)


def processes_rss(pids: list[int]) -> int:
    """Resident memory of these processes and their descendants (a model's worker processes:
    separate processes, so what they hold is the model's alone); gone ones count 0."""
    psutil = _psutil()
    total = 0
    for pid in pids:
        try:
            total += process_tree_rss(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


# how many measurements of the same files the learned size is the median of
SIZE_HISTORY = 7


def learned_size(history: list[int]) -> int:
    """The size the books hold for a model, from what loads of the same files measured.

    Each figure is the process's growth across a load run alone (loads and unloads are
    serialized while measured), yet requests for other models run meanwhile and add or
    free memory of their own: noise in both directions, and an outlier is no more the
    model's than the figures before it. The lower median of the last ``SIZE_HISTORY``
    measurements follows a real change once it repeats and never ratchets up on one noisy
    reading (the first measurement stands alone until a second one comes). 0 when nothing
    was measured.
    """
    recent = sorted(history[-SIZE_HISTORY:])
    return recent[(len(recent) - 1) // 2] if recent else 0


def process_tree_rss(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default) and all its descendants, in bytes
    (:func:`modelyard._procfs.tree_rss`); psutil's NoSuchProcess once it is gone.

    Model workers run as child processes; their memory is the model's too.
    """
    root = os.getpid() if pid is None else pid
    rss = tree_rss(root)
    if rss is None:
        raise _psutil().NoSuchProcess(root)
    return rss


def measure_delta(fn: Callable[[], T], pid: int | None = None) -> tuple[T, int]:
    """Run ``fn`` and return its result with the growth of :func:`process_tree_rss` across it.

    A first measure, good enough to admit and account for a model, with known limits:

    * anything else the process allocates or frees meanwhile (concurrent requests, another
      load, the garbage collector) is counted as ``fn``'s;
    * allocators keep freed memory in their arenas: a load may reuse it (and look smaller) or
      leave scratch space behind (and look larger);
    * weights that are memory-mapped or allocated lazily count only once touched.

    So the manager measures a model again after its first inference, and the growth is never
    reported below zero.
    """
    before = process_tree_rss(pid)
    result = fn()
    after = process_tree_rss(pid)
    return result, max(0, after - before)


def gpu_memory_used(device: int = 0) -> int | None:
    """Bytes in use on GPU ``device`` as NVML reports it, or None without pynvml or a GPU.

    The figure is the whole device's (every process on it), so a model's share is a delta
    across its load, with the same caveats as :func:`measure_delta`.
    """
    info = _nvml_memory(device)
    return None if info is None else int(info.used)


def gpu_memory_total(device: int = 0) -> int | None:
    """Total bytes of GPU ``device`` (NVML), or None without pynvml or that GPU."""
    info = _nvml_memory(device)
    return None if info is None else int(info.total)


def _nvml_memory(device: int) -> Any:
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # no driver, no device: NVML raises its own NVMLError types
        return None
    try:
        return nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(device))
    except Exception:  # an index past the last device, a lost GPU
        return None
    finally:
        nvml.nvmlShutdown()


def parse_gpu_limits(items: list[str]) -> dict[int, float]:
    """Triton's ``--model-load-gpu-limit <device>:<fraction>`` values, e.g. ``0:0.5``."""
    limits: dict[int, float] = {}
    for item in items:
        device, sep, fraction = item.partition(":")
        try:
            if not sep:
                raise ValueError
            dev, share = int(device), float(fraction)
        except ValueError:
            raise ValueError(f"'{item}' is not <device>:<fraction> (e.g. 0:0.5)") from None
        if dev < 0 or not 0 < share <= 1:
            raise ValueError(f"'{item}': the device is an index >= 0 and the fraction in (0, 1]")
        limits[dev] = share
    return limits


def _psutil() -> Any:
    """psutil, imported on first use (it ships no type stubs; callers cast what they read)."""
    return importlib.import_module("psutil")


# the watchdog acts above HIGH of the host's limit and frees down to LOW: a band, so that
# allocator noise around one threshold does not evict a model every second
WATCHDOG_HIGH = 0.90
WATCHDOG_LOW = 0.85


def bytes_to_shed(
    rss: int, limit: int, high: float = WATCHDOG_HIGH, low: float = WATCHDOG_LOW
) -> int:
    """How much model memory to give back so the process is not killed for lack of memory.

    0 while resident memory stays under ``high`` of the limit (the cgroup's ``memory.max``
    or RAM); above it, enough to come back to ``low``.
    """
    if rss <= int(limit * high):
        return 0
    return rss - int(limit * low)
