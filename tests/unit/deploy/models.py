"""Model folders for the deploy tests, written as users write them (Python backend: no
model files to build)."""

from __future__ import annotations

from pathlib import Path

PY_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "{inp}", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "{out}", data_type: TYPE_FP32, dims: [ 4 ] }} ]
"""

MODEL_PY = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"


def python_model(
    repo: Path, name: str, *, versions: tuple[int, ...] = (1,), inp: str = "X", out: str = "Y"
) -> Path:
    folder = repo / name
    for version in versions:
        (folder / str(version)).mkdir(parents=True, exist_ok=True)
        (folder / str(version) / "model.py").write_text(MODEL_PY)
    (folder / "config.pbtxt").write_text(PY_CONFIG.format(name=name, inp=inp, out=out))
    return folder


ENSEMBLE = """name: "pipeline"
platform: "ensemble"
max_batch_size: 0
input [ { name: "RAW", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "RESULT", data_type: TYPE_FP32, dims: [ 4 ] } ]
ensemble_scheduling {
  step [
    { model_name: "pre" model_version: -1
      input_map { key: "X" value: "RAW" } output_map { key: "Y" value: "mid" } },
    { model_name: "net" model_version: 2
      input_map { key: "X" value: "mid" } output_map { key: "Y" value: "RESULT" } }
  ]
}
"""


def ensemble(repo: Path) -> Path:
    python_model(repo, "pre")
    python_model(repo, "net", versions=(1, 2, 3))
    folder = repo / "pipeline"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(ENSEMBLE)
    return folder


CHAIN = """name: "{name}"
platform: "ensemble"
max_batch_size: 0
input [ {{ name: "RAW", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "RESULT", data_type: TYPE_FP32, dims: [ 4 ] }} ]
ensemble_scheduling {{ step [ {steps} ] }}
"""


def chain(repo: Path, name: str, steps: list[tuple[str, int]]) -> Path:
    """An ensemble running ``steps`` (model, version) one after the other: models X -> Y
    (``python_model``'s), or ensembles RAW -> RESULT (chains themselves)."""
    tensors = ["RAW", *(f"t{i}" for i in range(1, len(steps))), "RESULT"]
    text = ", ".join(
        f'{{ model_name: "{model}" model_version: {version} '
        f'input_map {{ key: "{keys[0]}" value: "{tensors[i]}" }} '
        f'output_map {{ key: "{keys[1]}" value: "{tensors[i + 1]}" }} }}'
        for i, (model, version) in enumerate(steps)
        for keys in [("RAW", "RESULT") if _is_ensemble(repo / model) else ("X", "Y")]
    )
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(CHAIN.format(name=name, steps=text))
    return folder


def _is_ensemble(folder: Path) -> bool:
    return 'platform: "ensemble"' in (folder / "config.pbtxt").read_text()
