"""The CPU budget from affinity and cgroup quotas, over cgroup trees written here."""

from __future__ import annotations

from pathlib import Path

from modelyard.cpus import CpuBudget, cpu_budget


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_no_cgroup_files_means_the_affinity(tmp_path: Path) -> None:
    budget = cpu_budget(tmp_path, tmp_path / "missing", affinity=6)
    assert budget == CpuBudget(affinity=6, quota=None)
    assert budget.usable == 6
    assert budget.describe() == "6 (affinity 6, no cgroup quota)"


def test_v2_quota_at_the_mount_is_rounded_down(tmp_path: Path) -> None:
    _write(tmp_path / "cpu.max", "150000 100000\n")
    budget = cpu_budget(tmp_path, tmp_path / "none", affinity=64)
    assert budget.quota == 1.5
    assert budget.usable == 1


def test_v2_max_is_no_quota(tmp_path: Path) -> None:
    _write(tmp_path / "cpu.max", "max 100000\n")
    assert cpu_budget(tmp_path, tmp_path / "none", affinity=4).usable == 4


def test_a_parent_quota_binds_the_process_below_it(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/kubepods/pod1/container\n")
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "300000 100000\n")
    _write(tmp_path / "kubepods" / "pod1" / "container" / "cpu.max", "max 100000\n")
    assert cpu_budget(tmp_path, proc, affinity=16).usable == 3


def test_v1_quota_and_its_unlimited_value(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    _write(proc, "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n")
    folder = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    _write(folder / "cpu.cfs_quota_us", "200000\n")
    _write(folder / "cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cpu_budget(tmp_path, proc, affinity=8).usable == 2


def test_affinity_below_the_quota_wins_and_a_tiny_quota_still_gives_one(tmp_path: Path) -> None:
    _write(tmp_path / "cpu.max", "800000 100000\n")
    assert cpu_budget(tmp_path, tmp_path / "none", affinity=2).usable == 2
    _write(tmp_path / "cpu.max", "10000 100000\n")
    budget = cpu_budget(tmp_path, tmp_path / "none", affinity=2)
    assert budget.quota == 0.1 and budget.usable == 1


def test_garbage_files_are_no_quota(tmp_path: Path) -> None:
    _write(tmp_path / "cpu.max", "lots\n")
    assert cpu_budget(tmp_path, tmp_path / "none", affinity=3).usable == 3


def test_this_process_has_at_least_one_core() -> None:
    assert cpu_budget().usable >= 1
