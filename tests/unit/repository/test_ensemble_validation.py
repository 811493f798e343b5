"""Ensemble checks, word for word against what a real Triton 2.51 said.

The broken ensembles live in ``tests/integration/ensemble_models`` (``bad_*``); Triton's
reasons were recorded by ``tests/integration/fixtures/record_triton_ensemble.py`` into
``triton_ensemble.json`` (``log_reasons``: the load answer of a config refused while polling
is only "failed to poll", the log says why). Two stages, as in Triton:

* the config alone (``validate_config``, through ``load_entry_config``);
* against the composing models' configs, once loaded (``composing_fault``), or Triton's
  texts for composing models that could not be loaded (``*_reason``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository import (
    ModelConfigError,
    composing_fault,
    composing_models,
    config_to_json,
    ensemble_steps,
    failed_model_reason,
    is_decoupled_over,
    load_entry_config,
    missing_models_reason,
    missing_version_reason,
    scan_model,
)

ROOT = Path(__file__).parents[2] / "integration"
MODELS = ROOT / "ensemble_models"
RECORDING: dict[str, Any] = json.loads((ROOT / "fixtures" / "triton_ensemble.json").read_text())
REASONS: dict[str, str] = RECORDING["log_reasons"]
KNOWN = {"python", "onnxruntime"}

LOADS = {
    c["name"].removeprefix("load_"): c for c in RECORDING["cases"] if c["name"].startswith("load_")
}
# refused by the config alone (Triton: while polling, so its load answer is a 500)
STATIC = sorted(n for n in RECORDING["broken"] if LOADS[n]["response"]["status"] == 500)
# refused against the composing models' configs (Triton: when the dependencies are loaded)
COMPOSING = ["bad_input_key", "bad_output_key", "bad_unmapped_input", "bad_dtype", "bad_shape"]


def entry_config(name: str) -> mc.ModelConfig:
    return load_entry_config(scan_model(MODELS / name), known_backends=KNOWN)


def composing_configs(config: mc.ModelConfig) -> dict[tuple[str, str], mc.ModelConfig]:
    return {pair: entry_config(pair[0]) for pair in composing_models(config)}


def test_every_recorded_refusal_is_covered() -> None:
    others = {"bad_missing_model", "bad_version_missing", "bad_version_zero", "bad_broken_step"}
    others.add("bad_decoupled_mix")
    covered = set(STATIC) | set(COMPOSING) | others
    assert covered | {"bad_version_negative"} == set(RECORDING["broken"]) == set(REASONS)


@pytest.mark.parametrize("name", STATIC)
def test_static_refusal_matches_triton(name: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        entry_config(name)
    assert info.value.reason == REASONS[name]
    assert info.value.path == MODELS / name / "config.pbtxt"


def test_a_version_below_minus_one_is_refused_early_with_tritons_later_text() -> None:
    """Triton finds out only when it looks for version -2 among the loaded ones."""
    with pytest.raises(ModelConfigError) as info:
        entry_config("bad_version_negative")
    assert info.value.reason == REASONS["bad_version_negative"]


@pytest.mark.parametrize("name", COMPOSING)
def test_composing_refusal_matches_triton(name: str) -> None:
    config = entry_config(name)  # the config alone is fine
    assert composing_fault(config, composing_configs(config)) == REASONS[name]


def test_a_step_may_not_mix_decoupled_and_plain_inputs() -> None:
    """The node Triton names depends on its hash maps' order: two recordings named the
    ensemble's output Y (hence the ensemble) once and add_sub's D once; ours is stable."""
    config = entry_config("bad_decoupled_mix")
    fault = composing_fault(config, composing_configs(config))
    template = (
        "in ensemble bad_decoupled_mix, step of model '{}' receives inputs originated from "
        "different decoupled models"
    )
    assert fault == template.format("bad_decoupled_mix")
    assert REASONS["bad_decoupled_mix"] in {
        template.format("bad_decoupled_mix"),
        template.format("add_sub"),
    }


def test_reasons_for_composing_models_that_did_not_load() -> None:
    assert (
        missing_models_reason("bad_missing_model", ["nosuchmodel"]) == REASONS["bad_missing_model"]
    )
    for name, version in (("bad_version_missing", 7), ("bad_version_zero", 0)):
        assert missing_version_reason(name, "scale", version) == REASONS[name]
    with pytest.raises(ModelConfigError) as info:
        entry_config("broken")
    triton_error = f"version 1 is at UNAVAILABLE state: Invalid argument: {info.value.reason};"
    assert (
        failed_model_reason("bad_broken_step", "broken", triton_error) == REASONS["bad_broken_step"]
    )


@pytest.mark.parametrize("name", ["fanout", "checked", "decoupled_pipeline"])
def test_working_ensembles_pass_both_stages(name: str) -> None:
    config = entry_config(name)
    assert composing_fault(config, composing_configs(config)) is None


def test_an_ensemble_over_a_decoupled_model_is_decoupled() -> None:
    pipeline = entry_config("decoupled_pipeline")
    assert is_decoupled_over(pipeline, composing_configs(pipeline))
    fanout = entry_config("fanout")
    assert not is_decoupled_over(fanout, composing_configs(fanout))
    served = next(c for c in RECORDING["cases"] if c["name"] == "decoupled_pipeline_config")
    assert served["response"]["body"]["model_transaction_policy"] == {"decoupled": True}


def test_composing_models_are_listed_once_each_with_pinned_versions() -> None:
    assert composing_models(entry_config("fanout")) == [
        ("scale", "1"),
        ("scale", ""),
        ("add_sub", ""),
    ]
    assert composing_models(entry_config("scale")) == []


def test_steps_keep_the_maps_in_both_directions() -> None:
    steps = ensemble_steps(entry_config("fanout"))
    assert [(s.model, s.version) for s in steps] == [("scale", "1"), ("scale", ""), ("add_sub", "")]
    assert steps[2].inputs == (("INPUT0", "S"), ("INPUT1", "X"))
    assert steps[2].outputs == (("OUTPUT0", "SUM"), ("OUTPUT1", "DIFF"))


def _config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


ENSEMBLE = """
name: "e" platform: "ensemble" max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
ensemble_scheduling { step [ { model_name: "m" model_version: -1
  input_map { key: "IN" value: "X" } output_map { key: "OUT" value: "Y" } } ] }
"""


def test_a_composing_model_must_batch_at_least_as_far() -> None:
    model = _config(
        'name: "m" max_batch_size: 4 input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] } ] '
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    )
    assert composing_fault(_config(ENSEMBLE), {("m", ""): model}) == (
        "ensemble e allows maximum batch size 8, but it contains model m which only allows "
        "maximum batch size to be 4"
    )


def test_a_plain_model_in_a_batching_ensemble_may_take_the_batch_dimension() -> None:
    """Triton compares the full shapes too: [-1, 4] (batched) against a plain [-1, 4]."""
    model = _config(
        'name: "m" max_batch_size: 0 input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]'
        ' output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]'
    )
    assert composing_fault(_config(ENSEMBLE), {("m", ""): model}) is None
    model.input[0].dims[:] = [-1, 3]
    assert composing_fault(_config(ENSEMBLE), {("m", ""): model}) == (
        "in ensemble e, ensemble tensor X: inconsistent shape: [-1,4] is inferred from model e "
        "while [-1,3] is inferred from model m"
    )


def test_an_optional_input_may_stay_unmapped() -> None:
    model = _config(
        'name: "m" input [ { name: "IN" data_type: TYPE_FP32 dims: [ 4 ] }, '
        '{ name: "EXTRA" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ] '
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    )
    config = _config(ENSEMBLE.replace("max_batch_size: 8", "max_batch_size: 0"))
    assert composing_fault(config, {("m", ""): model}) is None


@pytest.mark.parametrize("name", ["fanout", "checked"])
def test_the_served_config_is_tritons(name: str) -> None:
    """Triton serves an ensemble's transaction policy (it sets it when it checks the steps)
    and no field newer than 2.51."""
    served = next(c for c in RECORDING["cases"] if c["name"] == f"{name}_config")
    assert config_to_json(entry_config(name)) == served["response"]["body"]
