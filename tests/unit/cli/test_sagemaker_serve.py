"""The container entry point's command line: what ``docker run <image> serve`` becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.cli._sagemaker_env import SageMakerEnvError
from modelyard.cli.sagemaker_serve import container_arguments

EMPTY = Path("/tmp/empty")


def _opt_ml(tmp_path: Path, *models: str) -> dict[str, str]:
    for name in models:
        (tmp_path / "model" / name).mkdir(parents=True)
    return {"MODELYARD_SAGEMAKER_OPT_ML": str(tmp_path)}


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_multi_model_endpoint(tmp_path: Path) -> None:
    env = {**_opt_ml(tmp_path), "SAGEMAKER_MULTI_MODEL": "true"}
    args = container_arguments(["serve"], env, EMPTY)
    assert _flag(args, "--model-repository") == str(EMPTY)
    assert _flag(args, "--sagemaker-model-root") == str(tmp_path / "models")
    assert _flag(args, "--model-control-mode") == "explicit"
    assert "--allow-sagemaker=true" in args and "--allow-metrics=false" in args
    assert "--http-port" not in args  # no safe range: the default port
    assert "--load-model" not in args


def test_safe_range_places_http_and_metrics_beside_the_bind_port(tmp_path: Path) -> None:
    env = {**_opt_ml(tmp_path), "SAGEMAKER_MULTI_MODEL": "true"}
    env |= {"SAGEMAKER_SAFE_PORT_RANGE": "9000-9002", "SAGEMAKER_BIND_TO_PORT": "9000"}
    args = container_arguments(["serve"], env, EMPTY)
    assert _flag(args, "--http-port") == "9001" and "--metrics-port" not in args
    env["SAGEMAKER_TRITON_ALLOW_METRICS"] = "true"  # serve reads it; the port is chosen here
    args = container_arguments(["serve"], env, EMPTY)
    assert (_flag(args, "--http-port"), _flag(args, "--metrics-port")) == ("9001", "9002")
    assert "--allow-metrics=false" not in args
    env["SAGEMAKER_TRITON_METRICS_PORT"] = "9001"  # its own port: serve reads it, HTTP moves
    args = container_arguments(["serve"], env, EMPTY)
    assert _flag(args, "--http-port") == "9002" and "--metrics-port" not in args
    env["SAGEMAKER_SAFE_PORT_RANGE"] = "9000-9001"
    with pytest.raises(SageMakerEnvError, match="leaves no port for the HTTP listener"):
        container_arguments(["serve"], env, EMPTY)


def test_single_model_endpoint_loads_its_model(tmp_path: Path) -> None:
    args = container_arguments(["serve"], _opt_ml(tmp_path, "resnet"), EMPTY)
    assert _flag(args, "--model-repository") == str(tmp_path / "model")
    assert _flag(args, "--load-model") == "resnet"
    env = _opt_ml(tmp_path, "ensemble", "step") | {
        "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "ensemble"
    }
    assert _flag(container_arguments(["serve"], env, EMPTY), "--load-model") == "ensemble"
    del env["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"]
    with pytest.raises(SageMakerEnvError, match="several model folders"):
        container_arguments(["serve"], env, EMPTY)
    env["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] = "missing"
    with pytest.raises(SageMakerEnvError, match="'missing', which is not a folder"):
        container_arguments(["serve"], env, EMPTY)


def test_arguments_after_serve_come_last_and_win(tmp_path: Path) -> None:
    env = {**_opt_ml(tmp_path), "SAGEMAKER_MULTI_MODEL": "true"}
    args = container_arguments(["serve", "--log-verbose", "1"], env, EMPTY)
    assert args[-2:] == ["--log-verbose", "1"]
    assert container_arguments([], env, EMPTY) == container_arguments(["serve"], env, EMPTY)
    with pytest.raises(SageMakerEnvError, match="got 'train'"):
        container_arguments(["train"], env, EMPTY)
