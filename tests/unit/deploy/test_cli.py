"""The deploy commands' exit codes and messages (the loop itself: tests/integration)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from modelyard.cli.main import app
from tests.unit.deploy.models import python_model

runner = CliRunner()


def test_the_commands_are_there() -> None:
    out = runner.invoke(app, ["--help"]).output
    for command in ("serve", "init", "package", "test", "push", "promote", "rollback", "ls"):
        assert command in out


def test_package_reports_each_model_and_fails_on_a_broken_one(tmp_path: Path) -> None:
    good = python_model(tmp_path / "repo", "good")
    bad = python_model(tmp_path / "repo", "bad")
    (bad / "config.pbtxt").write_text('name: "bad"\nbackend: "python"\nbogus: 1\n')
    result = runner.invoke(app, ["package", str(good), str(bad), "-o", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "✓" in result.output and "good_1.tar.gz" in result.output
    assert "✗" in result.output and "its config does not load" in result.output


def test_push_refuses_the_wrong_sha256_and_ls_lists(tmp_path: Path) -> None:
    model = python_model(tmp_path / "repo", "m")
    runner.invoke(app, ["package", str(model), "-o", str(tmp_path / "d")])
    store = tmp_path / "store"
    store.mkdir()
    artifact = str(tmp_path / "d" / "m_1.tar.gz")
    result = runner.invoke(app, ["push", artifact, "--to", str(store), "--sha256", "0" * 64])
    assert result.exit_code == 1 and "not the artifact that was tested" in result.output
    assert runner.invoke(app, ["push", artifact, "--to", str(store)]).exit_code == 0
    result = runner.invoke(app, ["ls", str(store)])
    assert result.exit_code == 0 and "serving" in result.output
    result = runner.invoke(app, ["ls", str(store), "--json"])
    assert '"state": "serving"' in result.output
    result = runner.invoke(app, ["rollback", "m", "--store", str(store)])
    assert result.exit_code == 1 and "nothing older to roll back to" in result.output


def test_init_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 1 and "not an empty folder" in result.output


def test_test_without_cases_fails_unless_allowed(tmp_path: Path) -> None:
    model = python_model(tmp_path / "repo", "m")
    result = runner.invoke(app, ["test", str(model)])
    assert result.exit_code == 1 and "no test cases for 'm'" in result.output
    result = runner.invoke(app, ["test", str(model), "--allow-no-cases"])
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.output
