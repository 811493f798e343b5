"""``modelyard init``: a model monorepo from ``templates/project`` (docs/deploy.md).

Template files are copied with ``__PROJECT__`` replaced by the project's name; a path part
``dot-x`` becomes ``.x`` (dotfiles are kept under other names in the package, so that a
``.gitignore`` template never acts on modelyard's own tree). ``scripts/pipeline`` is made
executable. With git on the PATH, the new folder becomes a git repository (DVC needs one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from modelyard.errors import ModelyardError

__all__ = ["ScaffoldError", "ScaffoldResult", "scaffold"]

TOKEN = "__PROJECT__"
_EXECUTABLE = {"scripts/pipeline"}


class ScaffoldError(ModelyardError):
    """A folder ``modelyard init`` will not write into."""


@dataclass(frozen=True, slots=True)
class ScaffoldResult:
    root: Path
    files: list[str]  # relative paths written, sorted
    git: bool  # a git repository was made


def _templates() -> Traversable:
    return resources.files("modelyard.deploy").joinpath("templates", "project")


def scaffold(root: Path, *, name: str | None = None, git: bool = True) -> ScaffoldResult:
    """Write the monorepo into ``root`` (absent or empty)."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"'{root}' exists and is not an empty folder")
    project = name or root.resolve().name
    written: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    _copy(_templates(), root, "", project, written)
    for rel in _EXECUTABLE:
        path = root / rel
        path.chmod(path.stat().st_mode | 0o111)
    made_git = git and _git_init(root)
    return ScaffoldResult(root, sorted(written), made_git)


def _copy(source: Traversable, dest: Path, rel: str, project: str, written: list[str]) -> None:
    for item in sorted(source.iterdir(), key=lambda t: t.name):
        if item.name.startswith(".") or item.name == "__pycache__":
            continue  # tool caches (a template's own dotfiles are named dot-*)
        name = "." + item.name.removeprefix("dot-") if item.name.startswith("dot-") else item.name
        target = dest / name
        child_rel = f"{rel}/{name}" if rel else name
        if item.is_dir():
            target.mkdir()
            _copy(item, target, child_rel, project, written)
            continue
        data = item.read_bytes()
        target.write_bytes(data.replace(TOKEN.encode(), project.encode()))
        written.append(child_rel)


def _git_init(root: Path) -> bool:
    git = shutil.which("git")
    if git is None:
        return False
    inside = subprocess.run(
        [git, "rev-parse", "--is-inside-work-tree"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if inside.returncode == 0:
        return False  # already in a repository (a monorepo inside a bigger one)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(
        [git, "init", "--quiet", "--initial-branch=main"],
        cwd=root,
        capture_output=True,
        check=False,
        env=env,
    )
    return done.returncode == 0
