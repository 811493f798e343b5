"""The servers under test: modelyard and its peers, each started as a subprocess on free ports.

Every server writes its own model repository into a temp folder (``prepare``), is started in its
own process group, polled on ``GET /v2/health/ready`` and stopped with SIGTERM to the group.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from workloads import ROOT, Workload

PEER_MODELS = Path(__file__).resolve().parent / "peer_models"
TRITON_SH = Path(os.environ.get("BENCH_TRITON", "/tmp/triton/tritonserver.sh"))
MLSERVER_VENV = Path(os.environ.get("BENCH_MLSERVER_VENV", "/tmp/mlserver-venv"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerUnavailable(RuntimeError):
    """The server cannot be started here (not installed, failed to become ready)."""


@dataclass
class Server:
    """Base: subclasses say how to lay out the repository and which command to run."""

    name: str = ""
    label: str = ""
    validates: bool = True  # False for the floor, whose answer is a constant
    port: int = field(default_factory=free_port)
    grpc_port: int | None = None  # its KServe v2 gRPC port, when it serves one
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def available(self) -> str | None:
        """None if it can run here, else why not."""
        return None

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        raise NotImplementedError

    def command(self, repo: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, workdir: Path, workloads: list[Workload], timeout: float = 120.0) -> None:
        why = self.available()
        if why:
            raise ServerUnavailable(why)
        repo = workdir / f"{self.name}-repo"
        repo.mkdir(parents=True, exist_ok=True)
        self.prepare(repo, workloads)
        self.log_path = workdir / f"{self.name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(repo),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=repo,
                env=self.env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if _ready(self.port) and all(
                not self.validates or _ready(self.port, f"/v2/models/{w.name}/ready")
                for w in workloads
            ):
                return
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def log_tail(self, n: int = 1500) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n:].strip()


def _ready(port: int, path: str = "/v2/health/ready") -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)


@dataclass
class Modelyard(Server):
    name: str = "modelyard"
    label: str = "modelyard"

    def available(self) -> str | None:
        probe = subprocess.run(
            [sys.executable, "-m", "modelyard", "serve", "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if probe.returncode != 0:
            err = (probe.stderr or probe.stdout).strip().splitlines()
            return "`python -m modelyard serve` not available: " + (err[-1] if err else "?")
        return None

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        for w in workloads:
            head = f'name: "{w.name}"\nplatform: "onnxruntime_onnx"\n'
            _write(repo / w.name / "config.pbtxt", head + w.config_body)
            _write(repo / w.name / "1" / "model.onnx", w.onnx_bytes)

    def command(self, repo: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "modelyard",
            "serve",
            "--model-repository",
            str(repo),
            "--http-port",
            str(self.port),
            "--http-address",
            "127.0.0.1",
            "--grpc-port",
            str(self.grpc_port),
            # extra serve flags for an experiment, e.g. BENCH_MODELYARD_ARGS="--inline-threshold-us 0"
            *os.environ.get("BENCH_MODELYARD_ARGS", "").split(),
        ]

    def __post_init__(self) -> None:
        self.grpc_port = free_port()


@dataclass
class ModelyardProcess(Modelyard):
    """modelyard with each ONNX model in its own process (``modelyard.placement: process``):
    the opt-in way past one core of Python. The instance count is the config's
    (``BENCH_PROCESS_INSTANCES``, default Triton's: two for an ONNX model on the CPU)."""

    name: str = "modelyard-process"
    label: str = "modelyard (ONNX in its own process)"

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        super().prepare(repo, workloads)
        count = os.environ.get("BENCH_PROCESS_INSTANCES", "")
        extra = 'parameters { key: "modelyard.placement" value: { string_value: "process" } }\n'
        if count:
            extra += f"instance_group [ {{ count: {int(count)} kind: KIND_CPU }} ]\n"
        for w in workloads:
            with (repo / w.name / "config.pbtxt").open("a") as f:
                f.write(extra)


@dataclass
class ModelyardBaseline(Modelyard):
    """modelyard from another checkout (``BENCH_BASELINE_SRC``: its ``src`` folder), run by
    the same interpreter and harness: before/after a change in one run, as performance
    claims need (``--servers modelyard,modelyard-baseline``). The baseline must accept the
    same ``serve`` flags (one without gRPC: set ``BENCH_BASELINE_NO_GRPC=1``)."""

    name: str = "modelyard-baseline"
    label: str = "modelyard (baseline checkout)"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        src = env.get("BENCH_BASELINE_SRC", "")
        if src:
            env["PYTHONPATH"] = str(Path(src).resolve())
        return env

    def available(self) -> str | None:
        if not os.environ.get("BENCH_BASELINE_SRC"):
            return "BENCH_BASELINE_SRC (the baseline checkout's src folder) is not set"
        return None

    def command(self, repo: Path) -> list[str]:
        cmd = super().command(repo)
        if os.environ.get("BENCH_BASELINE_NO_GRPC"):
            at = cmd.index("--grpc-port")
            cmd = cmd[:at] + cmd[at + 2 :]
        return cmd


@dataclass
class Triton(Server):
    """Triton 2.51 (pytriton wheel): Python backend; onnxruntime (MLP) or numpy (add_sub)."""

    name: str = "triton"
    label: str = "Triton 2.51 (Python backend)"

    def __post_init__(self) -> None:
        self.grpc_port = free_port()

    def available(self) -> str | None:
        if not TRITON_SH.exists():
            return f"{TRITON_SH} missing: run `bash /work/shared/peers/setup_triton.sh`"
        return None

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        for w in workloads:
            head = f'name: "{w.name}"\nbackend: "python"\n'
            _write(repo / w.name / "config.pbtxt", head + w.config_body)
            shutil.copy(
                PEER_MODELS / "triton_model.py", _mkparent(repo / w.name / "1" / "model.py")
            )
            _write(repo / w.name / "1" / "model.onnx", w.onnx_bytes)

    def command(self, repo: Path) -> list[str]:
        return [
            str(TRITON_SH),
            f"--model-repository={repo}",
            f"--http-port={self.port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={free_port()}",
            "--allow-metrics=false",
            "--log-verbose=0",
            "--exit-timeout-secs=5",
        ]


@dataclass
class ModelyardPython(Modelyard):
    """modelyard serving Triton's repository as is: the same ``model.py`` in the Python
    backend, in a worker process per instance (the like-for-like comparison with Triton)."""

    name: str = "modelyard-python"
    label: str = "modelyard (Python backend)"

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        Triton.prepare(self, repo, workloads)  # type: ignore[arg-type]


@dataclass
class MLServer(Server):
    """Seldon MLServer in its own venv, parallel_workers=0 (inference on the event loop)."""

    name: str = "mlserver"
    label: str = "MLServer (parallel_workers=0)"

    def __post_init__(self) -> None:
        self.grpc_port = free_port()

    def available(self) -> str | None:
        if not (MLSERVER_VENV / "bin" / "mlserver").exists():
            return f"{MLSERVER_VENV}/bin/mlserver missing: see bench/README.md"
        return None

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        settings = {
            "parallel_workers": 0,
            "debug": False,
            "http_port": self.port,
            "grpc_port": self.grpc_port,
            "metrics_port": free_port(),
            "load_models_at_startup": True,
        }
        _write(repo / "settings.json", json.dumps(settings, indent=1))
        shutil.copy(PEER_MODELS / "mlserver_runtime.py", repo / "mlserver_runtime.py")
        for w in workloads:
            impl = "OnnxModel" if w.name == "mlp" else "AddSubModel"
            _write(repo / w.name / "model.onnx", w.onnx_bytes)
            model_settings = {
                "name": w.name,
                "implementation": f"mlserver_runtime.{impl}",
                "parameters": {"uri": str(repo / w.name / "model.onnx")},
            }
            _write(repo / w.name / "model-settings.json", json.dumps(model_settings, indent=1))

    def command(self, repo: Path) -> list[str]:
        return [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(repo)]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = f"{MLSERVER_VENV}/bin:{env.get('PATH', '')}"
        return env


@dataclass
class Floor(Server):
    """Starlette on uvicorn (httptools, uvloop): reads the body, returns a constant JSON body."""

    name: str = "floor"
    label: str = "floor: Starlette + uvicorn/httptools"
    validates: bool = False

    def available(self) -> str | None:
        try:
            import starlette  # noqa: F401
        except ImportError:
            return "starlette not installed in this venv: pip install starlette"
        return None

    def prepare(self, repo: Path, workloads: list[Workload]) -> None:
        pass

    def command(self, repo: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "floor_app:app",
            "--app-dir",
            str(Path(__file__).resolve().parent),
            "--port",
            str(self.port),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
        ]


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


SERVERS: dict[str, type[Server]] = {
    "modelyard": Modelyard,
    "modelyard-python": ModelyardPython,
    "modelyard-process": ModelyardProcess,
    "modelyard-baseline": ModelyardBaseline,
    "triton": Triton,
    "mlserver": MLServer,
    "floor": Floor,
}
PEERS = ("triton", "mlserver", "floor")
