"""What the machine was while a benchmark ran: printed beside every table.

Machines of one kind differ by 2x, and in how they wake idle cores: on a VM whose guest
halts an idle vCPU at once (cpuidle ``haltpoll`` with ``guest_halt_poll_ns=0``), every
wake-up of a sleeping process costs tens of µs, so c=1 latency and spinning thread pools
behave differently from a machine that polls before halting. The record names the CPU, the
cores the server may use (affinity and cgroup quota, as modelyard itself counts them), the
idle driver, the load before the run and the steal time during it, and the versions.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from workloads import ROOT


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_times() -> list[int]:
    """The ``cpu`` line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    line = _read("/proc/stat").splitlines()[:1]
    return [int(x) for x in line[0].split()[1:]] if line else []


def idle_driver() -> str:
    driver = _read("/sys/devices/system/cpu/cpuidle/current_driver") or "?"
    poll = _read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    if driver == "haltpoll" and poll:
        return f"haltpoll, guest_halt_poll_ns={poll}"
    return driver


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "-"
    return str(getattr(mod, "__version__", "?"))


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


@dataclass
class Machine:
    """Taken at the start; ``finish`` adds the steal time and the load at the end."""

    start_times: list[int] = field(default_factory=_cpu_times)
    load_start: tuple[float, ...] = field(default_factory=os.getloadavg)
    steal_share: float | None = None
    load_end: tuple[float, ...] | None = None

    def finish(self) -> None:
        end = _cpu_times()
        if len(end) >= 8 and len(self.start_times) >= 8:
            total = sum(end) - sum(self.start_times)
            steal = end[7] - self.start_times[7]
            self.steal_share = steal / total if total > 0 else 0.0
        self.load_end = os.getloadavg()

    def markdown(self) -> str:
        from modelyard.cpus import cpu_budget

        hypervisor = "yes" if " hypervisor" in _read("/proc/cpuinfo") else "no"
        steal = "-" if self.steal_share is None else f"{self.steal_share:.1%}"
        load_end = "-" if self.load_end is None else f"{self.load_end[0]:.2f}"
        rows = [
            ("CPU", f"{cpu_model()}; {os.cpu_count()} CPUs; virtualised: {hypervisor}"),
            ("usable cores (modelyard.cpus)", cpu_budget().describe()),
            ("idle driver", idle_driver()),
            ("load (1 min) at start / end", f"{self.load_start[0]:.2f} / {load_end}"),
            ("steal time during the run", steal),
            ("kernel", platform.release()),
            (
                "versions",
                f"Python {platform.python_version()}, onnxruntime {_version('onnxruntime')}, "
                f"uvloop {_version('uvloop')}, grpcio {_version('grpc')}, "
                f"modelyard {_commit()}",
            ),
        ]
        lines = ["| machine | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines) + "\n"
