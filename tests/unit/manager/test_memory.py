"""parse_budget, host_memory_limit against fake cgroup trees, and real RSS readings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modelyard.manager.memory import (
    gpu_memory_used,
    host_memory_limit,
    measure_delta,
    parse_budget,
    physical_memory,
    process_tree_rss,
)

GiB = 1024**3
MiB = 1024**2
TOTAL = 16 * GiB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1073741824", GiB),
        ("  1073741824 ", GiB),
        ("4096B", 4096),
        ("8GiB", 8 * GiB),
        ("8gib", 8 * GiB),
        ("8Gi", 8 * GiB),
        ("512MiB", 512 * MiB),
        ("512 MiB", 512 * MiB),
        ("2GB", 2_000_000_000),
        ("1.5G", int(1.5 * GiB)),
        ("1.5g", int(1.5 * GiB)),
        ("100k", 100 * 1024),
        ("100KB", 100_000),
        ("1TiB", 1024**4),
        ("50%", TOTAL // 2),
        ("12.5 %", TOTAL // 8),
        ("100%", TOTAL),
    ],
)
def test_parse_budget_forms(text: str, expected: int) -> None:
    assert parse_budget(text, TOTAL) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not understood"),
        ("lots", "is not understood"),
        ("8 GiBs", "is not understood"),
        ("8PB", "is not understood"),
        ("-1GiB", "is not understood"),
        ("1e9", "is not understood"),
        ("0.5", r"fraction of a byte; .* write a percentage such as 50%"),
        ("0", "zero bytes"),
        ("0GiB", "zero bytes"),
        ("0%", "above 0% and at most 100%"),
        ("150%", "above 0% and at most 100%"),
        ("abc%", "is not a percentage"),
        ("nan%", "above 0% and at most 100%"),
    ],
)
def test_parse_budget_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_budget(text, TOTAL)


def test_parse_budget_error_lists_forms() -> None:
    with pytest.raises(ValueError, match=r"use bytes \(1073741824\), a size \(8GiB"):
        parse_budget("eight gigs", TOTAL)


# --- host_memory_limit -------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_no_cgroup_files_means_physical(tmp_path: Path) -> None:
    assert host_memory_limit(tmp_path, tmp_path / "missing", physical=TOTAL) == TOTAL


def test_cgroup_v2_limit_below_physical(tmp_path: Path) -> None:
    write(tmp_path / "memory.max", f"{4 * GiB}\n")
    assert host_memory_limit(tmp_path, tmp_path / "missing", physical=TOTAL) == 4 * GiB


def test_cgroup_v2_max_means_unlimited(tmp_path: Path) -> None:
    write(tmp_path / "memory.max", "max\n")
    assert host_memory_limit(tmp_path, tmp_path / "missing", physical=TOTAL) == TOTAL


def test_cgroup_limit_above_physical_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "memory.max", f"{64 * GiB}\n")
    assert host_memory_limit(tmp_path, tmp_path / "missing", physical=TOTAL) == TOTAL


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    write(tmp_path / "memory" / "memory.limit_in_bytes", f"{2 * GiB}\n")
    assert host_memory_limit(tmp_path, tmp_path / "missing", physical=TOTAL) == 2 * GiB


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    write(tmp_path / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    assert host_memory_limit(tmp_path, tmp_path / "missing", physical=TOTAL) == TOTAL


def test_cgroup_v2_own_path_and_parents_lowest_wins(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "memory.max", "max\n")
    write(root / "system.slice" / "memory.max", f"{3 * GiB}\n")
    write(root / "system.slice" / "app.service" / "memory.max", f"{6 * GiB}\n")
    write(tmp_path / "self_cgroup", "0::/system.slice/app.service\n")
    assert host_memory_limit(root, tmp_path / "self_cgroup", physical=TOTAL) == 3 * GiB


def test_cgroup_v1_own_path(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    write(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes", f"{GiB}\n")
    write(
        tmp_path / "self_cgroup",
        "9:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/\n",
    )
    assert host_memory_limit(root, tmp_path / "self_cgroup", physical=TOTAL) == GiB


def test_garbage_limit_file_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "memory.max", "lots\n")
    assert host_memory_limit(tmp_path, tmp_path / "missing", physical=TOTAL) == TOTAL


def test_real_host_limit_is_positive_and_at_most_physical() -> None:
    assert 0 < host_memory_limit() <= physical_memory()


# --- measuring ---------------------------------------------------------------------------


def test_process_tree_rss_is_positive() -> None:
    own = process_tree_rss()
    assert own > 0
    assert process_tree_rss(os.getpid()) > 0


def test_process_tree_rss_counts_children_and_grandchildren_as_psutil_does() -> None:
    """The kernel's children lists find the same tree psutil's scan of every process does
    (a worker that starts a helper process of its own included), and the memory a child
    holds counts."""
    import subprocess
    import sys

    import psutil

    from modelyard._procfs import descendants

    holder = (
        "b = bytearray(48 << 20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(60)"
    )
    spawner = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {holder!r}]); "
        "time.sleep(60)"
    )
    before = process_tree_rss()
    kids = [subprocess.Popen([sys.executable, "-c", spawner]) for _ in range(2)]
    try:
        me = psutil.Process()
        deadline = time.monotonic() + 30
        while len(me.children(recursive=True)) < 4 or process_tree_rss() < before + 96 * MiB:
            assert time.monotonic() < deadline, "the children never came up"
            time.sleep(0.1)
        found = descendants(os.getpid())
        assert found is not None, "this Linux has no /proc/<pid>/task/<tid>/children"
        assert sorted(found) == sorted(p.pid for p in me.children(recursive=True))
        assert process_tree_rss() >= before + 96 * MiB  # both grandchildren's 48 MiB
    finally:
        for kid in psutil.Process().children(recursive=True):
            kid.kill()
        for kid in kids:
            kid.wait()


def test_measure_delta_returns_result_and_non_negative_growth() -> None:
    def allocate() -> bytearray:
        block = bytearray(64 * MiB)
        block[::4096] = b"\x01" * len(block[::4096])  # touch every page
        return block

    block, grown = measure_delta(allocate)
    assert len(block) == 64 * MiB
    assert grown >= 32 * MiB  # allocators may reuse some freed memory, never most of 64 MiB


def test_gpu_memory_used_is_none_or_bytes() -> None:
    used = gpu_memory_used(0)
    assert used is None or used >= 0
    assert gpu_memory_used(10_000) is None


def test_bytes_to_shed_acts_above_the_high_mark_down_to_the_low_one() -> None:
    from modelyard.manager.memory import bytes_to_shed

    limit = 1000 * 2**20
    assert bytes_to_shed(800 * 2**20, limit) == 0
    assert bytes_to_shed(int(limit * 0.9), limit) == 0  # at the mark: still fine
    assert bytes_to_shed(950 * 2**20, limit) == 950 * 2**20 - int(limit * 0.85)
    assert bytes_to_shed(2000, 1000, high=0.5, low=0.25) == 1750


def test_parse_gpu_limits_takes_tritons_form() -> None:
    from modelyard.manager.memory import parse_gpu_limits

    assert parse_gpu_limits(["0:0.5", "1:1"]) == {0: 0.5, 1: 1.0}
    for bad in ("0", "x:0.5", "0:0", "0:1.5", "-1:0.5"):
        with pytest.raises(ValueError, match=bad.split(":")[0] if ":" in bad else bad):
            parse_gpu_limits([bad])


def test_gpu_memory_is_none_without_nvml_or_gpu() -> None:
    from modelyard.manager.memory import gpu_memory_total, gpu_memory_used

    assert gpu_memory_total(99) is None  # no such GPU (or no NVML at all)
    assert gpu_memory_used(99) is None


def test_learned_size_is_not_moved_by_one_noisy_measurement() -> None:
    from modelyard.manager.memory import SIZE_HISTORY, learned_size

    assert learned_size([]) == 0
    assert learned_size([84]) == 84  # the first measurement stands alone
    assert learned_size([84, 122]) == 84  # one reading inflated by concurrent work: ignored
    assert learned_size([84, 122, 85, 130, 83]) == 85  # noise does not ratchet it up
    assert learned_size([84, 40, 41]) == 41  # a real change wins once it repeats
    assert learned_size([10] * 20 + [50] * SIZE_HISTORY) == 50  # only the recent ones count
