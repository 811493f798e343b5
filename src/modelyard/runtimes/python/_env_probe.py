"""What an environment is and whether it can run a worker.

* :func:`inspect_root` tells a conda-style prefix (its own interpreter in ``bin/``) from a
  virtualenv (``pyvenv.cfg``, whose ``home`` holds the interpreter), and checks a venv's home
  and Python version before anything is started.
* :func:`worker_vars` are the variables the worker gets: ``PATH`` (and, for conda,
  ``LD_LIBRARY_PATH``, as Triton sets it) with the environment first, ``CONDA_PREFIX`` or
  ``VIRTUAL_ENV``, and ``PYTHONNOUSERSITE`` so ``~/.local`` cannot leak in.
* :func:`probe` runs the interpreter once (``-c``: version, and whether numpy imports), with
  those variables; its result goes into the environment's ready record.
* :func:`add_server_numpy` makes the server's numpy importable, at the lowest priority, in a
  venv of the server's own Python minor version whose requirements did not bring numpy: a
  ``.pth`` adds a folder that holds only links to the server's ``numpy`` (and ``numpy.libs``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelyard.errors import EnvironmentUnusable
from modelyard.runtimes import children

__all__ = [
    "Layout",
    "Probe",
    "TransientProbeError",
    "add_server_numpy",
    "inspect_root",
    "probe",
    "read_pyvenv_cfg",
    "worker_vars",
]

PROBE_TIMEOUT_S = 120.0
_NUMPY_DIR = "modelyard-numpy"
_NUMPY_PTH = "zz_modelyard_numpy.pth"

# runs under the environment's interpreter, whatever its version: no f-strings
_PROBE_CODE = """\
import json, sys
out = {"version": list(sys.version_info[:3]), "prefix": sys.prefix}
try:
    import numpy
    out["numpy"] = str(numpy.__version__)
except BaseException as err:
    out["numpy_error"] = "%s: %s" % (type(err).__name__, err)
sys.stdout.write("\\n" + json.dumps(out) + "\\n")
"""


class TransientProbeError(EnvironmentUnusable):
    """The check could not finish (timeout): not remembered, the next load tries again."""


@dataclass(frozen=True, slots=True)
class Layout:
    """An environment folder: ``kind`` is "conda" (own interpreter) or "venv"."""

    root: Path
    kind: str
    python: Path


@dataclass(frozen=True, slots=True)
class Probe:
    version: tuple[int, int, int]
    numpy: str | None
    numpy_error: str | None


def read_pyvenv_cfg(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    return values


def venv_version(cfg: dict[str, str]) -> tuple[int, int] | None:
    """The Python minor version a venv was made for (``version`` or uv's ``version_info``)."""
    raw = cfg.get("version_info") or cfg.get("version") or ""
    parts = raw.split(".")
    if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        return int(parts[0]), int(parts[1])
    return None


def home_interpreter(home: Path, version: tuple[int, int] | None) -> Path | None:
    """The interpreter in a venv's ``home`` for ``version`` (any python3 if unknown)."""
    names = [f"python{version[0]}.{version[1]}"] if version else ["python3", "python"]
    for name in names:
        candidate = home / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def inspect_root(root: Path, what: str) -> Layout:
    """Classify an environment folder and find its interpreter; ``what`` names it in errors."""
    cfg_path = root / "pyvenv.cfg"
    if cfg_path.is_file():
        cfg = read_pyvenv_cfg(cfg_path)
        check_venv_home(cfg, what)
        python = _first_interpreter(root)
        if python is None:
            raise EnvironmentUnusable(
                f"{what} is a virtualenv without an interpreter link in bin/ (bin/python)"
            )
        return Layout(root, "venv", python)
    python = _first_interpreter(root)
    if python is None:
        raise EnvironmentUnusable(
            f"{what} holds neither a conda environment (bin/python, lib/pythonX.Y, conda-meta/) "
            "nor a virtualenv (pyvenv.cfg)"
        )
    return Layout(root, "conda", python)


def check_venv_home(cfg: dict[str, str], what: str) -> Path:
    """The venv's home interpreter, or a clear error when this machine cannot provide it."""
    home_text = cfg.get("home", "")
    version = venv_version(cfg)
    made_for = f"Python {version[0]}.{version[1]}" if version else "an unknown Python"
    if not home_text or not Path(home_text).is_dir():
        raise EnvironmentUnusable(
            f"{what} is a virtualenv for {made_for} whose interpreter folder (pyvenv.cfg "
            f"home = '{home_text}') does not exist on this machine; a venv borrows its "
            "interpreter, so build it where it runs, or pack a conda environment (conda-pack), "
            "which carries its own"
        )
    interpreter = home_interpreter(Path(home_text), version)
    if interpreter is None:
        wanted = f"python{version[0]}.{version[1]}" if version else "python3"
        raise EnvironmentUnusable(
            f"{what} is a virtualenv for {made_for}, but its interpreter folder '{home_text}' "
            f"has no {wanted} (this server runs Python {sys.version_info[0]}."
            f"{sys.version_info[1]}); build the venv with a Python this machine has, or pack a "
            "conda environment (conda-pack), which carries its own interpreter"
        )
    return interpreter


def _first_interpreter(root: Path) -> Path | None:
    for name in ("python", "python3"):
        candidate = root / "bin" / name
        if candidate.exists() and os.access(candidate, os.X_OK):
            return candidate
    return None


def worker_vars(layout: Layout) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(variables to set, variables to prepend paths to) for a worker in ``layout``."""
    root = str(layout.root)
    bin_dir = str(layout.root / "bin")
    if layout.kind == "conda":
        return (
            {"CONDA_PREFIX": root, "PYTHONNOUSERSITE": "1"},
            {"PATH": [bin_dir], "LD_LIBRARY_PATH": [str(layout.root / "lib")]},
        )
    return {"VIRTUAL_ENV": root, "PYTHONNOUSERSITE": "1"}, {"PATH": [bin_dir]}


def compose(
    set_vars: Mapping[str, str], prepend: Mapping[str, list[str]], base: Mapping[str, str]
) -> dict[str, str]:
    """The variables to set, with prepended paths placed before ``base``'s values."""
    out = dict(set_vars)
    for name, paths in prepend.items():
        current = base.get(name, "")
        out[name] = os.pathsep.join([*paths, current] if current else paths)
    return out


def probe(python: Path, env: dict[str, str], what: str) -> Probe:
    """Run ``python`` once; an interpreter that cannot start is a clear load error."""
    try:
        done = children.run(
            [str(python), "-c", _PROBE_CODE], env=env, timeout=PROBE_TIMEOUT_S, cwd=python.parent
        )
    except OSError as err:
        raise EnvironmentUnusable(
            f"{what}: its interpreter '{python}' cannot start: {err}"
        ) from err
    except subprocess.TimeoutExpired as err:
        raise TransientProbeError(
            f"{what}: its interpreter '{python}' did not answer within {PROBE_TIMEOUT_S:.0f} s"
        ) from err
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise EnvironmentUnusable(
            f"{what}: its interpreter '{python}' failed to start (exit status "
            f"{done.returncode}): " + (" | ".join(tail) or "no output")
        )
    try:
        data = json.loads(lines[-1])
        major, minor, micro = (int(v) for v in data["version"])
    except (ValueError, KeyError, TypeError) as err:
        raise EnvironmentUnusable(
            f"{what}: its interpreter '{python}' gave an unexpected answer: {lines[-1][:200]}"
        ) from err
    return Probe((major, minor, micro), data.get("numpy"), data.get("numpy_error"))


def site_packages(root: Path, version: tuple[int, int]) -> Path:
    return root / "lib" / f"python{version[0]}.{version[1]}" / "site-packages"


def add_server_numpy(root: Path, version: tuple[int, int]) -> None:
    """Let a venv of the server's Python minor version import the server's numpy, last."""
    if version != sys.version_info[:2]:
        raise EnvironmentUnusable(
            f"cannot lend the server's numpy (Python {sys.version_info[0]}."
            f"{sys.version_info[1]}) to an environment for Python {version[0]}.{version[1]}"
        )
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentUnusable("the server has no numpy to lend to a model's environment")
    package = Path(next(iter(spec.submodule_search_locations)))
    folder = root / _NUMPY_DIR
    folder.mkdir(exist_ok=True)
    for source in (package, package.with_name("numpy.libs")):
        link = folder / source.name
        if source.is_dir() and not link.is_symlink():
            link.symlink_to(source, target_is_directory=True)
    target = site_packages(root, version)
    target.mkdir(parents=True, exist_ok=True)
    (target / _NUMPY_PTH).write_text(f"{folder}\n")
