"""Builds the example's generated files: the ONNX network (seeded weights) and the wheel of
the internal package the pre-processing step pins in its requirements.txt.

usage: python examples/screen_detection_pipeline/build.py [OUT_DIR]   (needs onnx)

Both are committed; a test rebuilds them into a temporary folder and compares bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SIDE = 32  # the network's input: 3 x 32 x 32
CHANNELS = 8


def network() -> bytes:
    """Conv(3->8, 3x3) -> ReLU -> global average pool -> Gemm(8->5): box (4) + score (1)."""
    rng = np.random.default_rng(2026)
    w = (rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.2).astype(np.float32)
    b = np.zeros(CHANNELS, dtype=np.float32)
    fc = (rng.standard_normal((CHANNELS, 5)) * 0.5).astype(np.float32)
    fc_b = np.array([0.1, 0.1, 0.9, 0.9, 0.0], dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["IMAGE", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["RAW"]),
    ]
    graph = helper.make_graph(
        nodes,
        "screen_detection_inferencer",
        [helper.make_tensor_value_info("IMAGE", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("RAW", TensorProto.FLOAT, ["batch", 5])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(fc, "fc"),
            numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.producer_name = "modelyard-example"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def wheel(source: Path, name: str, version: str) -> tuple[str, bytes]:
    """A pure-Python wheel of ``source/<name>``, byte-for-byte stable (fixed zip times)."""
    dist = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((source / name).rglob("*.py")):
        files[f"{name}/{path.relative_to(source / name).as_posix()}"] = path.read_bytes()
    files[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
        "Summary: image preparation shared by the screen detection models\n"
    ).encode()
    files[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: modelyard-example\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


def build(out: Path) -> None:
    model = out / "repository" / "screen_detection_inferencer" / "1" / "model.onnx"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(network())
    name, data = wheel(HERE / "packages", "screen_preprocessing", "1.0.0")
    (out / "wheels").mkdir(parents=True, exist_ok=True)
    (out / "wheels" / name).write_bytes(data)


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
