"""SageMaker's variables onto the settings, as Triton's ``serve`` script maps them to flags."""

from __future__ import annotations

import pytest

from modelyard.cli._sagemaker_env import SageMakerEnvError, apply_sagemaker_environment
from modelyard.settings import ServerSettings

ON = ServerSettings("repo", allow_sagemaker=True, http_port=9001, metrics_port=9002)


def test_nothing_changes_without_the_container_face() -> None:
    off = ServerSettings("repo")
    assert apply_sagemaker_environment(off, {"SAGEMAKER_BIND_TO_PORT": "9090"}, ()) == (off, [])


def test_variables_set_what_the_flags_did_not() -> None:
    environ = {
        "SAGEMAKER_BIND_TO_PORT": "9090",
        "SAGEMAKER_SAFE_PORT_RANGE": "9000-9999",
        "SAGEMAKER_MULTI_MODEL": "true",
        "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "m",
        "SAGEMAKER_TRITON_LOG_VERBOSE": "true",
        "SAGEMAKER_TRITON_THREAD_COUNT": "4",
    }
    got, warnings = apply_sagemaker_environment(ON, environ, ())
    assert got.sagemaker_port == 9090
    assert got.sagemaker_safe_port_range == (9000, 9999)
    assert got.sagemaker_ping_mode == "live"  # a multi-model endpoint
    assert got.sagemaker_default_model == "m"
    assert got.load_models == ()  # multi-model: nothing loads at start
    assert got.log_verbose == 1
    assert warnings == [
        "SAGEMAKER_TRITON_THREAD_COUNT is set but has no effect on modelyard (no such feature)"
    ]
    # a flag on the command line wins
    kept, _ = apply_sagemaker_environment(ON, environ, {"sagemaker_port"})
    assert kept.sagemaker_port == ON.sagemaker_port


def test_a_single_model_endpoint_loads_its_default_model() -> None:
    environ = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "m"}
    got, _ = apply_sagemaker_environment(ON, environ, ())
    assert (got.sagemaker_ping_mode, got.load_models) == ("ready", ("m",))
    over = {**environ, "SAGEMAKER_TRITON_OVERRIDE_PING_MODE": "live"}
    assert apply_sagemaker_environment(ON, over, ())[0].sagemaker_ping_mode == "live"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAGEMAKER_SAFE_PORT_RANGE": "9500-9999"}, "cannot listen to HTTP requests at port 9001"),
        ({"SAGEMAKER_SAFE_PORT_RANGE": "9001-9001"}, "cannot listen to metrics requests"),
        ({"SAGEMAKER_SAFE_PORT_RANGE": "high-low"}, "takes <integer>-<integer>"),
        ({"SAGEMAKER_BIND_TO_PORT": "eighty"}, "takes an integer"),
        ({"SAGEMAKER_MULTI_MODEL": "maybe"}, "takes true or false"),
        ({"SAGEMAKER_TRITON_INFERENCE_TYPE": "train"}, "Must be one of: infer, generate"),
        ({"SAGEMAKER_TRITON_INFERENCE_TYPE": "generate"}, "not supported"),
        ({"SAGEMAKER_TRITON_PING_MODE": "sometimes"}, "ping mode"),
    ],
)
def test_refusals(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SageMakerEnvError, match=message):
        apply_sagemaker_environment(ON, environ, ())


def test_metrics_off_needs_no_port_in_range() -> None:
    environ = {"SAGEMAKER_SAFE_PORT_RANGE": "9001-9001", "SAGEMAKER_TRITON_ALLOW_METRICS": "false"}
    got, _ = apply_sagemaker_environment(ON, environ, ())
    assert got.allow_metrics is False
