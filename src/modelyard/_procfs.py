"""Resident memory of a process and its descendants, read from ``/proc``.

Both the manager (the memory watchdog, a load's measurement) and the Python runtime (a
worker's initialize against the budget) need it, often: the watchdog every second on a
thread that needs the GIL. Listing the children through psutil scans every process on the
host (1.6 to 2.2 ms of Python); the kernel's own list of each thread's children is a few reads
(about 120 µs for a server and its workers). psutil remains the fallback.
"""

from __future__ import annotations

import importlib
import os
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` and all its descendants; None once ``pid`` is gone.

    Children that exit or cannot be read while we look are skipped. RSS counts shared pages
    (a forked child's copy-on-write pages, shared libraries) once per process, so a tree's
    total can exceed what the host really lost."""
    tree = descendants(pid)
    if tree is None:  # a kernel without /proc/<pid>/task/<tid>/children
        return _psutil_tree_rss(pid)
    total = _statm_rss(pid)
    if total is None:
        return None
    for child in tree:
        total += _statm_rss(child) or 0
    return total


def _statm_rss(pid: int) -> int | None:
    """A process's resident bytes (``/proc/<pid>/statm``, as psutil reads it); None: gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int] | None:
    """Every descendant of ``pid``, from the children files of each of its threads (Linux
    3.5+ with CONFIG_PROC_CHILDREN, as in every distribution kernel); None without them.

    The kernel documents these lists as possibly missing a child that forks or exits while
    they are read: the watchdog reads again a second later, and a load's measurement runs
    while no worker starts or stops."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children"):
        return None
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # gone meanwhile
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def _psutil_tree_rss(pid: int) -> int | None:
    psutil = importlib.import_module("psutil")
    try:
        root = psutil.Process(pid)
        total = int(root.memory_info().rss)
        children = root.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            total += int(child.memory_info().rss)
        except psutil.Error:
            continue
    return total
