"""modelyard init: the files, and checks of the CI workflow, the pipeline script, pre-commit
and DVC settings it writes.

actionlint (https://github.com/rhysd/actionlint) lints the workflow when it is on the PATH;
it is not installable here without a network (its PyPI wrappers download the binary when
built), so the workflow's structure is always checked by the schema below as well: the
parts of GitHub's workflow syntax the template uses, and the rule that every step but the
checkout calls scripts/pipeline with one of its stages, in the pipeline's order.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.deploy.package import PackageOptions, package
from modelyard.deploy.scaffold import ScaffoldError, scaffold

STAGES = ["install", "lint", "pull", "package", "test", "publish"]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init") / "shop-models"
    result = scaffold(root, git=False)
    assert not result.git
    return root


def test_the_files(project: Path) -> None:
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert files == [
        ".dvc/.gitignore",
        ".dvc/config",
        ".dvcignore",
        ".github/workflows/models.yml",
        ".gitignore",
        ".pre-commit-config.yaml",
        "README.md",
        "models/add_sub/1/model.py",
        "models/add_sub/config.pbtxt",
        "models/add_sub/tests/cases.yaml",
        "models/add_sub/tests/test_add_sub.py",
        "pyproject.toml",
        "requirements-dev.txt",
        "scripts/pipeline",
    ]
    assert (project / "scripts" / "pipeline").stat().st_mode & stat.S_IXUSR
    assert "__PROJECT__" not in (project / "README.md").read_text()
    assert "../../shop-models-dvc-remote" in (project / ".dvc" / "config").read_text()


def test_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    with pytest.raises(ScaffoldError, match="not an empty folder"):
        scaffold(tmp_path, git=False)
    assert (tmp_path / "x").read_text() == "mine"


def test_a_git_repository_on_main(tmp_path: Path) -> None:
    if shutil.which("git") is None:  # CI never skips this: scripts/install-system installs git
        pytest.fail("git is missing: run scripts/install-system")
    result = scaffold(tmp_path / "repo")
    assert result.git
    head = (tmp_path / "repo" / ".git" / "HEAD").read_text()
    assert head.strip() == "ref: refs/heads/main"


def test_the_example_model_packages(project: Path, tmp_path: Path) -> None:
    result = package(project / "models" / "add_sub", PackageOptions(output=tmp_path))
    assert result.artifact is not None and result.artifact.name == "add_sub_1.tar.gz"


def test_the_example_model_passes_its_own_lint(project: Path) -> None:
    for args in (["check", "models"], ["format", "--check", "models"]):
        done = subprocess.run(
            [str(RUFF), *args, "--no-cache"], cwd=project, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _check(node: Any, schema: Any, where: str) -> None:
    """A small structural schema: dicts name required/optional keys, lists their items."""
    if isinstance(schema, type):
        assert isinstance(node, schema), f"{where}: {node!r} is not {schema.__name__}"
    elif isinstance(schema, tuple):  # alternatives
        errors = []
        for option in schema:
            try:
                _check(node, option, where)
                return
            except AssertionError as err:
                errors.append(str(err))
        raise AssertionError(" / ".join(errors))
    elif isinstance(schema, list):
        assert isinstance(node, list) and node, f"{where}: not a non-empty list"
        for i, item in enumerate(node):
            _check(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, dict):
        assert isinstance(node, dict), f"{where}: not a mapping"
        required = {k.rstrip("?") for k in schema if not k.endswith("?") and k != "*"}
        missing = required - set(node)
        assert not missing, f"{where}: missing {sorted(missing)}"
        for key, value in node.items():
            spec = schema.get(key, schema.get(f"{key}?", schema.get("*")))
            assert spec is not None, f"{where}: unexpected key {key!r}"
            _check(value, spec, f"{where}.{key}")
    else:
        assert node == schema, f"{where}: {node!r} != {schema!r}"


STEP = ({"uses": str}, {"name?": str, "run": str, "if?": str})
WORKFLOW = {
    "name": str,
    "on": {"push": {"branches": [str]}, "workflow_dispatch?": dict},
    "permissions": {"contents": "read"},
    "concurrency?": {"group": str, "cancel-in-progress": bool},
    "jobs": {
        "*": {
            "runs-on": str,
            "timeout-minutes?": int,
            "env?": {"*": str},
            "steps": [STEP],
        }
    },
}


def test_the_workflow_only_calls_the_pipeline_script(project: Path) -> None:
    text = (project / ".github" / "workflows" / "models.yml").read_text()
    doc = yaml.safe_load(text)
    doc["on"] = doc.pop(True)  # YAML 1.1 reads the key `on` as true
    _check(doc, WORKFLOW, "workflow")
    (job,) = doc["jobs"].values()
    steps = job["steps"]
    assert steps[0] == {"uses": "actions/checkout@v4"}
    called = []
    for step in steps[1:]:
        assert "uses" not in step
        match = re.fullmatch(r"scripts/pipeline (\w+)", step["run"])
        assert match, f"a step runs {step['run']!r}, not scripts/pipeline STAGE"
        called.append(match.group(1))
    assert called == STAGES
    for value in job["env"].values():  # settings come from variables and secrets
        assert re.fullmatch(r"\$\{\{ (vars|secrets|github)\.[A-Za-z_]+ \}\}", value)


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint is not installed")
def test_actionlint(project: Path) -> None:  # pragma: no cover - where actionlint exists
    done = subprocess.run(
        ["actionlint", ".github/workflows/models.yml"], cwd=project, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def test_the_pipeline_script(project: Path) -> None:
    script = project / "scripts" / "pipeline"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    for stage in STAGES:
        assert f"stage_{stage}()" in text
    done = subprocess.run([str(script), "nonsense"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "unknown stage 'nonsense'" in done.stderr
    done = subprocess.run(
        [str(script), "publish"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0 and "STAGING_STORE" in done.stderr
    if shutil.which("shellcheck"):  # pragma: no cover - where shellcheck exists
        assert subprocess.run(["shellcheck", str(script)], check=False).returncode == 0


def test_pre_commit_hooks_are_local(project: Path) -> None:
    doc = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    assert [r["repo"] for r in doc["repos"]] == ["local"]
    hooks = doc["repos"][0]["hooks"]
    assert {h["id"] for h in hooks} == {"ruff", "ruff-format", "mypy", "model-configs"}
    assert all(h["language"] == "system" for h in hooks)
