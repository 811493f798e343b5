"""The command's surface: it is registered, its public names, and usage errors (exit 2)
before anything is sent. Runs against a server: tests/integration/test_loadtest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import modelyard.loadtest as loadtest
from modelyard.cli.main import app

runner = CliRunner()
URL = ["--url", "http://127.0.0.1:9", "--p99-ms", "50"]  # nothing is sent to it


def test_registered_with_its_options() -> None:
    assert "loadtest" in runner.invoke(app, ["--help"]).output
    out = runner.invoke(app, ["loadtest", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--url", "--p99-ms", "--model", "--mix", "--duration", "--closed-loop",
                   "--concurrency", "--start-rate", "--step", "--max-rate", "--max-requests",
                   "--protocol", "--timeout", "--headroom", "--seed", "--json", "--plot"):  # fmt: skip
        assert option in out


def test_public_names() -> None:
    assert sorted(loadtest.__all__) == [
        "Event", "LoadTestFailed", "MixEntry", "MixError", "ModelInfo", "Options",
        "Recommendation", "Result", "Slo", "StepPlan", "StepResult", "load_mix_file",
        "parse_model_option", "run_loadtest",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step", "fast"], "--step 'fast'"),
        (["--step", "x1"], "factor above 1"),
        (["--start-rate", "100", "--max-rate", "10"], "below the first"),
        (["--rate", "5", "--concurrency", "2"], "--rate is an open-loop level"),
        (["--arrivals", "bursty"], "poisson or constant"),
        (["--protocol", "grpc"], "v2 or sagemaker"),
        (["--cold-start", "never"], "auto, unload or skip"),
        (["--header", "no-colon"], "'Name: value'"),
        (["--headroom", "1.5"], "fraction"),
        (["--model", "m=zero"], "weight 'zero'"),
        (["--plot", "x.gif"], ".png, .html or .svg"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["loadtest", *URL, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_bad_mix_file_names_itself(tmp_path: Path) -> None:
    mix = tmp_path / "mix.yaml"
    mix.write_text("models:\n  - {name: a, wieght: 2}\n")
    result = runner.invoke(app, ["loadtest", *URL, "--mix", str(mix)])
    assert result.exit_code == 2 and "mix.yaml: model 1: unknown key 'wieght'" in result.output
