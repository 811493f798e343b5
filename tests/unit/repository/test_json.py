"""config_to_json against the bodies a real Triton 2.51 served for GET /v2/models/{m}/config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository import config_to_json, load_entry_config, scan_model
from tests.unit.repository.conftest import FIXTURES, MakeModel, load_fixture

EXTRA: dict[str, Any] = load_fixture("triton_configs_extra.json")["models"]


def served(make_model: MakeModel, name: str, pbtxt: str | None, versions: tuple[str, ...]) -> str:
    """Load a model the way the server will, and render it as Triton's compact body."""
    model_dir = make_model(name, pbtxt, versions=versions)
    if name == "pyfull":
        (model_dir / "labels.txt").write_text("a\n")
    config = load_entry_config(scan_model(model_dir), known_backends={"python"})
    return json.dumps(config_to_json(config), separators=(",", ":"))


def test_python_model_matches_triton_byte_for_byte(make_model: MakeModel) -> None:
    pbtxt = (FIXTURES / "triton_config_python.pbtxt").read_text()
    expected = (FIXTURES / "triton_config_python.json").read_text()
    assert served(make_model, "triton_python", pbtxt, ("1",)) == expected


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_more_models_match_triton(make_model: MakeModel, name: str) -> None:
    versions = {"pyfull": ("1", "2", "3"), "latest2": ("1", "2", "9", "10")}.get(name, ("1",))
    body = served(make_model, name, EXTRA[name]["config_pbtxt"], versions)
    assert body == EXTRA[name]["served_raw"]


def test_formatting_rules() -> None:
    """Keys in declaration order; defaults printed; unset messages and oneof members absent."""
    config = json.loads((FIXTURES / "triton_config_python.json").read_text())
    assert list(config)[:6] == [
        "name",
        "platform",
        "backend",
        "runtime",
        "version_policy",
        "max_batch_size",
    ]
    assert "sequence_batching" not in config and "response_cache" not in config
    assert config["input"][0]["dims"] == [-1, 4]
    assert "reshape" not in config["input"][0]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 0


def rendered(text: str) -> dict[str, Any]:
    config = mc.ModelConfig()
    text_format.Parse(text, config)
    return config_to_json(config)


def test_int64_fields_triton_fixes_are_numbers() -> None:
    out = rendered(
        'name: "m" version_policy { specific { versions: [ 2 ] } } '
        'input [ { name: "x" dims: [ -1 ] reshape { shape: [ 3 ] } } ] '
        "dynamic_batching { max_queue_delay_microseconds: 7 priority_levels: 2 "
        "default_priority_level: 1 priority_queue_policy { key: 1 value { "
        "default_timeout_microseconds: 9 } } } "
        'model_warmup [ { inputs { key: "x" value { dims: [ 5 ] } } } ]'
    )
    assert out["version_policy"]["specific"]["versions"] == [2]
    assert out["input"][0]["reshape"]["shape"] == [3]
    batching = out["dynamic_batching"]
    assert (batching["max_queue_delay_microseconds"], batching["priority_levels"]) == (7, 2)
    assert batching["priority_queue_policy"] == {
        "1": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": 9,
            "allow_timeout_override": False,
            "max_queue_size": 0,
        }
    }
    assert out["model_warmup"][0]["inputs"]["x"]["dims"] == [5]


def test_int64_fields_triton_leaves_alone_stay_strings() -> None:
    out = rendered(
        'name: "m" sequence_batching { max_sequence_idle_microseconds: 3 state [ { dims: [ 4 ] '
        "initial_state [ { dims: [ 2 ] zero_data: true } ] } ] } "
        "instance_group [ { secondary_devices [ { device_id: 1 } ] } ]"
    )
    state = out["sequence_batching"]["state"][0]
    assert out["sequence_batching"]["max_sequence_idle_microseconds"] == 3
    assert state["dims"] == [4]
    assert state["initial_state"][0]["dims"] == ["2"]  # Triton's own slip, kept
    assert out["instance_group"][0]["secondary_devices"][0]["device_id"] == "1"


def test_ensemble_step_version_is_a_number() -> None:
    out = rendered('name: "e" ensemble_scheduling { step [ { model_version: -1 } ] }')
    assert out["ensemble_scheduling"]["step"][0]["model_version"] == -1


def test_floats_and_bytes() -> None:
    out = rendered(
        'name: "m" sequence_batching { direct { minimum_slot_utilization: 0.1 } } '
        'model_warmup [ { inputs { key: "x" value { input_data_file: "f" } } } ]'
    )
    assert out["sequence_batching"]["direct"]["minimum_slot_utilization"] == 0.1
    assert out["model_warmup"][0]["inputs"]["x"]["input_data_file"] == "f"
    assert "zero_data" not in out["model_warmup"][0]["inputs"]["x"]


def test_empty_config_renders_empty() -> None:
    assert config_to_json(mc.ModelConfig()) == {}


def test_fixture_files_exist() -> None:
    assert Path(FIXTURES / "triton_config_python.json").is_file()
