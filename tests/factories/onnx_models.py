"""Real ONNX models built with ``onnx.helper``: shared by tests, the benchmark and the demo.

Each builder returns serialized model bytes; ``write_model`` puts them into a Triton layout.
Weights come from a seeded generator so files are byte-for-byte reproducible.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# onnxruntime 1.17+ reads IR 9 / opset 17; keep files loadable by older runtimes users have
_OPSET = [helper.make_opsetid("", 17)]
_IR_VERSION = 9


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=_OPSET, producer_name="modelyard-tests")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def add_sub(
    dims: list[int | str] | None = None,
    elem_type: int = TensorProto.FLOAT,
    input_names: tuple[str, str] = ("INPUT0", "INPUT1"),
    output_names: tuple[str, str] = ("OUTPUT0", "OUTPUT1"),
) -> bytes:
    """Triton's classic ``simple`` model: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    shape: list[int | str] = dims if dims is not None else [16]
    inputs = [helper.make_tensor_value_info(n, elem_type, shape) for n in input_names]
    outputs = [helper.make_tensor_value_info(n, elem_type, shape) for n in output_names]
    nodes = [
        helper.make_node("Add", list(input_names), [output_names[0]]),
        helper.make_node("Sub", list(input_names), [output_names[1]]),
    ]
    return _model(helper.make_graph(nodes, "add_sub", inputs, outputs))


def mlp(sizes: tuple[int, ...] = (64, 256, 256, 10), seed: int = 0) -> bytes:
    """A ReLU MLP with a dynamic batch dimension: INPUT [-1, 64] -> OUTPUT [-1, 10]."""
    rng = np.random.default_rng(seed)
    initializers = []
    nodes = []
    prev = "INPUT"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        last = i == len(sizes) - 2
        gemm_out = "OUTPUT" if last else f"H{i}"
        nodes.append(
            helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [gemm_out if last else f"G{i}"])
        )
        if not last:
            nodes.append(helper.make_node("Relu", [f"G{i}"], [gemm_out]))
        prev = gemm_out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializer=initializers,
    )
    return _model(graph)


def identity(elem_type: int, dims: list[int | str], name: str = "identity") -> bytes:
    """INPUT0 -> OUTPUT0 unchanged, for any element type (strings included)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        name,
        [helper.make_tensor_value_info("INPUT0", elem_type, dims)],
        [helper.make_tensor_value_info("OUTPUT0", elem_type, dims)],
    )
    return _model(graph)


def write_model(
    repo: Path,
    name: str,
    model: bytes,
    config: str | None,
    version: int = 1,
    filename: str = "model.onnx",
) -> Path:
    """Write ``repo/name/version/filename`` and, when given, ``repo/name/config.pbtxt``."""
    folder = repo / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    (folder / str(version) / filename).write_bytes(model)
    if config is not None:
        (folder / "config.pbtxt").write_text(config)
    return folder


def slow(size: int = 256) -> bytes:
    """Compute-bound for as long as the request asks: TRIPS (INT64 [1, 1]) matmul rounds.

    A real model whose duration the test controls, for drain and concurrency tests; each
    round is a [size, size] @ [size, size] product (~1-2 ms at 256 on one core).
    """
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    x0 = np.eye(size, dtype=np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_in", "W"], ["mm"]),
            helper.make_node("Tanh", ["mm"], ["x_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    nodes = [
        helper.make_node("Squeeze", ["TRIPS"], ["M"]),
        helper.make_node("Loop", ["M", "COND", "X0"], ["XN"], body=body),
        helper.make_node("ReduceSum", ["XN"], ["SUM"], keepdims=0),
        helper.make_node("Reshape", ["SUM", "ONE"], ["OUTPUT"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("TRIPS", TensorProto.INT64, [1, 1])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, [1])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(x0, "X0"),
            numpy_helper.from_array(np.array(True), "COND"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "ONE"),
        ],
    )
    return _model(graph)


def reshape_to(size: int) -> bytes:
    """INPUT0 FP32 [-1] reshaped to [size]: fails at execution unless given ``size`` elements."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["INPUT0", "SHAPE"], ["OUTPUT0"])],
        "reshape_to",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [-1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [size])],
        initializer=[numpy_helper.from_array(np.array([size], dtype=np.int64), "SHAPE")],
    )
    return _model(graph)


def working_memory(repeats: int = 8192, seed: int = 0) -> bytes:
    """INPUT [-1, 64] -> OUTPUT [-1, 1] through a [batch, 64 * repeats] intermediate.

    Small files, large working memory: onnxruntime's arena keeps the intermediate after the
    first run, so the model costs far more than twice its files (the size the manager
    predicts before measuring), as real models with large activations do. ``repeats`` of
    8192 is a 2 MiB intermediate per batch item: about 34 MiB resident at batch 4 (the
    auto-completed max_batch_size), as the server warms it up.
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((64, 64)) / 8).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["INPUT", "W"], ["H"]),
            helper.make_node("Tile", ["H", "REPEATS"], ["WIDE"]),
            helper.make_node("Relu", ["WIDE"], ["POS"]),
            helper.make_node("ReduceSum", ["POS", "AXIS"], ["OUTPUT"], keepdims=1),
        ],
        "working_memory",
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.array([1, repeats], dtype=np.int64), "REPEATS"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "AXIS"),
        ],
    )
    return _model(graph)
