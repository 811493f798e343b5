"""The data plane over a real manager and real models: ONNX add_sub, a broken model, and a
decoupled Python model; no transport in sight."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from modelyard.dataplane import (
    EXTENSIONS,
    DataPlane,
    DataPlaneOptions,
    ModelMetadata,
    TensorMetadata,
)
from modelyard.errors import (
    InvalidArgument,
    ModelNotFound,
    PermissionDenied,
    Unavailable,
    VersionNotFound,
)
from modelyard.manager.manager import ManagerOptions, ModelManager
from modelyard.scheduling.signature import Signature
from modelyard.types import InferRequest, Tensor
from tests.factories.onnx_models import add_sub, write_model

T = TypeVar("T")

ADD_SUB = """name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
output [
  { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "OUTPUT1", data_type: TYPE_FP32, dims: [ 16 ] }
]
"""
REPEAT = Path(__file__).parents[2] / "integration" / "ensemble_models" / "repeat"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write_model(root, "add_sub", add_sub([-1, 16]), ADD_SUB)
    write_model(root, "broken", b"not an onnx model", 'platform: "onnxruntime_onnx"')
    return root


def _plane(
    repo: Path,
    mode: str = "on-demand",
    *,
    strict: bool = False,
    files: bool = False,
) -> DataPlane:
    manager = ModelManager(
        ManagerOptions(
            repository=str(repo),
            control_mode=mode,
            load_wait_timeout=60.0,
            repository_poll_secs=0,
            memory_budget=None,
            eviction_policy="gdsf",
            cache_max_bytes=2**30,
            cache_dir=repo.parent / "cache",
            memory_watch_secs=0,
        )
    )
    options = DataPlaneOptions(control_mode=mode, strict_readiness=strict, allow_load_files=files)
    return DataPlane(manager, options)


def _run(plane: DataPlane, body: Callable[[DataPlane], Awaitable[T]]) -> T:
    async def main() -> T:
        await plane.manager.start()
        try:
            return await body(plane)
        finally:
            await plane.manager.shutdown()

    return asyncio.run(main())


def _add_sub_request(signature: Signature, seen: list[Signature]) -> InferRequest:
    seen.append(signature)
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    return InferRequest(
        "add_sub",
        inputs=[Tensor("INPUT0", "FP32", [1, 16], x), Tensor("INPUT1", "FP32", [1, 16], x)],
    )


def test_readiness_follows_the_drain(repo: Path) -> None:
    plane = _plane(repo)
    assert plane.live() and plane.ready()
    plane.begin_drain()
    assert plane.draining and not plane.ready() and plane.live()


def test_strict_readiness_wants_every_model_ready(repo: Path) -> None:
    async def check(plane: DataPlane) -> tuple[bool, bool]:
        return plane.ready(), await plane.model_ready("broken")

    assert _run(_plane(repo, "none", strict=True), check) == (False, False)  # broken failed
    assert _run(_plane(repo, "none"), check) == (True, False)


def test_server_metadata() -> None:
    from modelyard import __version__

    meta = DataPlane(
        None, DataPlaneOptions(control_mode="none", strict_readiness=False, allow_load_files=False)
    ).server_metadata()  # type: ignore[arg-type]
    assert (meta.name, meta.version, meta.extensions) == ("modelyard", __version__, EXTENSIONS)


def test_model_metadata_and_config_without_loading(repo: Path) -> None:
    async def body(plane: DataPlane) -> tuple[ModelMetadata, Any, list[dict[str, str]]]:
        meta = await plane.model_metadata("add_sub")
        config = await plane.model_config("add_sub", "1")
        return meta, config, plane.repository_index(ready_only=True)

    meta, config, ready = _run(_plane(repo), body)
    shape = [-1, 16]
    assert meta == ModelMetadata(
        "add_sub",
        ["1"],
        "onnxruntime_onnx",
        [TensorMetadata("INPUT0", "FP32", shape), TensorMetadata("INPUT1", "FP32", shape)],
        [TensorMetadata("OUTPUT0", "FP32", shape), TensorMetadata("OUTPUT1", "FP32", shape)],
    )
    assert config.name == "add_sub" and config.max_batch_size == 8
    assert ready == []  # answered from the config: nothing was loaded


def test_infer_finds_the_model_before_decoding(repo: Path) -> None:
    """Triton reports an unknown model before a malformed body: decode is never called."""
    seen: list[Signature] = []

    async def body(plane: DataPlane) -> Any:
        for name, version, error in (
            ("absent", "", ModelNotFound),
            ("add_sub", "7", VersionNotFound),
            ("..", "", InvalidArgument),
        ):
            with pytest.raises(error):
                await plane.infer(name, version, lambda sig: _add_sub_request(sig, seen))
        assert seen == []
        return await plane.infer("add_sub", "", lambda sig: _add_sub_request(sig, seen))

    request, response = _run(_plane(repo), body)
    assert [s.model for s in seen] == ["add_sub"] and seen[0].max_batch_size == 8
    assert request.model_name == "add_sub"
    out = {t.name: t.data for t in response.outputs}
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    np.testing.assert_array_equal(out["OUTPUT0"], x + x)
    np.testing.assert_array_equal(out["OUTPUT1"], x - x)


def test_a_bad_body_is_the_decoders_error_and_counts_nowhere(repo: Path) -> None:
    def bad(sig: Signature) -> InferRequest:
        raise InvalidArgument("malformed")

    async def body(plane: DataPlane) -> list[dict[str, Any]]:
        with pytest.raises(InvalidArgument, match="malformed"):
            await plane.infer("add_sub", "", bad)
        await plane.infer("add_sub", "", lambda sig: _add_sub_request(sig, []))
        return [s.as_json() for s in plane.model_statistics("add_sub")]

    (stats,) = _run(_plane(repo), body)
    assert stats["name"] == "add_sub" and stats["version"] == "1"
    assert stats["inference_count"] == 1
    assert stats["inference_stats"]["fail"]["count"] == 0


def test_statistics_texts_are_tritons(repo: Path) -> None:
    async def body(plane: DataPlane) -> None:
        with pytest.raises(InvalidArgument, match=r"^requested model 'absent' is not available$"):
            plane.model_statistics("absent")
        await plane.infer("add_sub", "", lambda sig: _add_sub_request(sig, []))
        with pytest.raises(
            InvalidArgument,
            match=r"^requested model version is not available for model 'add_sub'$",
        ):
            plane.model_statistics("add_sub", "2")
        assert [s.version for s in plane.model_statistics("add_sub", "1")] == ["1"]
        assert "add_sub" in [s.name for s in plane.model_statistics()]

    _run(_plane(repo), body)


def test_load_and_unload_follow_the_control_mode(repo: Path) -> None:
    async def refused(plane: DataPlane) -> None:
        with pytest.raises(Unavailable, match="not allowed if polling is enabled"):
            await plane.load("add_sub")
        with pytest.raises(Unavailable, match="not allowed if polling is enabled"):
            await plane.unload("add_sub")

    _run(_plane(repo, "none"), refused)

    async def explicit(plane: DataPlane) -> list[list[dict[str, str]]]:
        seen = [plane.repository_index(ready_only=True)]
        await plane.load("add_sub")
        seen.append(plane.repository_index(ready_only=True))
        await plane.unload("add_sub")
        seen.append(plane.repository_index(ready_only=True))
        return seen

    before, loaded, after = _run(_plane(repo, "explicit"), explicit)
    assert before == after == []
    assert loaded == [{"name": "add_sub", "version": "1", "state": "READY"}]


def _env_config(path: str) -> str:
    return json.dumps({"parameters": {"EXECUTION_ENV_PATH": {"string_value": path}}})


@pytest.mark.parametrize(
    ("config", "with_files", "refused"),
    [
        ("{}", True, True),
        (None, True, True),
        (_env_config("/opt/envs/any.tar.gz"), False, True),
        (_env_config("  /abs/with/space"), False, True),
        (_env_config("$$TRITON_MODEL_DIRECTORY/env.tar.gz"), False, False),  # confined
        (_env_config("env.tar.gz"), False, False),  # relative: confined to the model
        ('{"max_batch_size": 2}', False, False),
        ("{not json", False, False),  # the load reports it
        ('{"parameters": []}', False, False),
        (None, False, False),
    ],
)
def test_what_needs_allow_model_load_files(
    config: str | None, with_files: bool, refused: bool
) -> None:
    closed = DataPlane(
        None,
        DataPlaneOptions(control_mode="explicit", strict_readiness=False, allow_load_files=False),
    )  # type: ignore[arg-type]
    opened = DataPlane(
        None,
        DataPlaneOptions(control_mode="explicit", strict_readiness=False, allow_load_files=True),
    )  # type: ignore[arg-type]
    opened.check_load("m", config, with_files)
    if refused:
        with pytest.raises(PermissionDenied, match="--allow-model-load-files=true"):
            closed.check_load("m", config, with_files)
    else:
        closed.check_load("m", config, with_files)


def test_load_refuses_files_and_bad_names_before_touching_the_manager(repo: Path) -> None:
    async def body(plane: DataPlane) -> None:
        with pytest.raises(PermissionDenied, match="'file:' parameters"):
            await plane.load("new", "{}", {"1/model.onnx": b"x"})
        with pytest.raises(InvalidArgument, match="path traversal"):
            await plane.load("..", '{"max_batch_size": 2}')
        assert "new" not in plane.manager.models

    _run(_plane(repo, "explicit"), body)


def test_load_with_files_when_allowed(repo: Path) -> None:
    config = json.dumps({"platform": "onnxruntime_onnx", "max_batch_size": 0})

    async def body(plane: DataPlane) -> list[dict[str, str]]:
        await plane.load("sent", config, {"1/model.onnx": add_sub()})
        _, response = await plane.infer("sent", "", _flat_request)
        assert response.outputs[0].name == "OUTPUT0"
        np.testing.assert_array_equal(response.outputs[0].data, np.full(16, 2, np.float32))
        return plane.repository_index(ready_only=True)

    rows = _run(_plane(repo, "explicit", files=True), body)
    assert {"name": "sent", "version": "1", "state": "READY"} in rows


def _flat_request(signature: Signature) -> InferRequest:
    x = np.ones(16, dtype=np.float32)
    return InferRequest(
        signature.model,
        inputs=[Tensor("INPUT0", "FP32", [16], x), Tensor("INPUT1", "FP32", [16], x)],
    )


def _repeat(n: int) -> Callable[[Signature], InferRequest]:
    def decode(signature: Signature) -> InferRequest:
        assert signature.inputs["N"].datatype == "INT32"
        return InferRequest("repeat", inputs=[Tensor("N", "INT32", [1], np.array([n], np.int32))])

    return decode


def test_a_decoupled_model_streams_several_responses(repo: Path) -> None:
    shutil.copytree(REPEAT, repo / "repeat")

    async def collect(stream: AsyncIterator[Any]) -> list[float]:
        return [float(r.outputs[0].data.flat[0]) for r in [r async for r in stream]]

    async def body(plane: DataPlane) -> tuple[list[float], list[float], int]:
        three = await collect(plane.stream("repeat", "", _repeat(3)))
        # a plain model streams its one response
        one = await collect(plane.stream("add_sub", "", lambda sig: _add_sub_request(sig, [])))
        with pytest.raises(ModelNotFound):  # raised from the iterator, at its first step
            await collect(plane.stream("absent", "", _repeat(1)))
        request, responses = await plane.open_stream("repeat", "", _repeat(2))
        assert request.model_name == "repeat"
        first = await anext(responses)
        await responses.aclose()  # a client gone after the first response
        with pytest.raises(Exception, match="decoupled"):  # one response cannot carry several
            await plane.infer("repeat", "", _repeat(1))
        return three, one, int(first.outputs[0].data[0])

    three, one, first = _run(_plane(repo), body)
    assert three == [0.0, 1.0, 2.0]
    assert one == [0.0]
    assert first == 0
