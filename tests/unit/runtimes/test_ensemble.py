"""The ensemble runtime over a fake resolver: wiring, concurrency, versions, errors, decoupled
steps, batch reshapes, and the ensemble's own statistics through the real ModelRunner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.errors import (
    ConfigError,
    DecoupledModel,
    InvalidArgument,
    ModelNotFound,
    ModelyardError,
    Unsupported,
)
from modelyard.runtimes._ensemble_run import reshape_for
from modelyard.runtimes.base import RuntimeOptions, factory_for
from modelyard.runtimes.ensemble import EnsembleFactory, EnsembleRuntime
from modelyard.scheduling.runner import ModelRunner
from modelyard.types import Array, InferRequest, InferResponse, RequestedOutput, Tensor

Fn = Callable[[dict[str, Array]], Any]  # inputs -> outputs, or a list of outputs (decoupled)


def _config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def plain(
    name: str,
    inputs: list[str],
    outputs: list[str],
    *,
    batch: int = 0,
    dims: str = "-1",
    decoupled: bool = False,
) -> mc.ModelConfig:
    def io(names: list[str]) -> str:
        return ", ".join(f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ {dims} ] }}' for n in names)

    text = f'name: "{name}" max_batch_size: {batch} input [ {io(inputs)} ] output [ {io(outputs)} ]'
    if decoupled:
        text += " model_transaction_policy { decoupled: true }"
    return _config(text)


def ensemble(
    steps: list[tuple[str, int, dict[str, str], dict[str, str]]],
    inputs: list[str],
    outputs: list[str],
    *,
    batch: int = 0,
    dims: str = "-1",
    extra: str = "",
) -> mc.ModelConfig:
    def io(names: list[str]) -> str:
        return ", ".join(f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ {dims} ] }}' for n in names)

    text = f'name: "e" platform: "ensemble" max_batch_size: {batch} {extra} '
    text += f"input [ {io(inputs)} ] output [ {io(outputs)} ] ensemble_scheduling {{ step [ "
    parts = []
    for model, version, imap, omap in steps:
        maps = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in imap.items())
        maps += " " + " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in omap.items())
        parts.append(f'{{ model_name: "{model}" model_version: {version} {maps} }}')
    return _config(text + ", ".join(parts) + " ] }")


@dataclass
class FakeResolver:
    """Composing models as functions; records every request it ran, in order."""

    models: dict[tuple[str, str], Fn] = field(default_factory=dict)
    configs: dict[str, mc.ModelConfig] = field(default_factory=dict)
    requests: list[InferRequest] = field(default_factory=list)
    delays: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def hold(self, names: Iterable[str]) -> Iterator[None]:
        names = list(names)
        self.held += names
        self.log.append(f"hold {','.join(names)}")
        try:
            yield
        finally:
            for name in names:
                self.held.remove(name)
            self.log.append("release")

    def add(self, config: mc.ModelConfig, fn: Fn, version: str = "") -> None:
        self.configs[config.name] = config
        self.models[(config.name, version)] = fn

    def _fn(self, request: InferRequest) -> Fn:
        key = (request.model_name, request.model_version)
        if key not in self.models:
            raise ModelNotFound(request.model_name)
        return self.models[key]

    async def _run(self, request: InferRequest) -> Any:
        self.requests.append(request)
        fn = self._fn(request)
        self.log.append(f"start {request.model_name}")
        await asyncio.sleep(self.delays.get(request.model_name, 0))
        result = fn({t.name: t.data for t in request.inputs})
        self.log.append(f"end {request.model_name}")
        return result

    def _response(self, request: InferRequest, outputs: dict[str, Array]) -> InferResponse:
        tensors = [Tensor(n, "FP32", list(a.shape), a) for n, a in outputs.items()]
        return InferResponse(
            request.model_name,
            request.model_version or "1",
            tensors,
            parameters={f"from_{request.model_name}": True},
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        config = self.configs.get(request.model_name)
        if config is not None and config.model_transaction_policy.decoupled:
            raise DecoupledModel("decoupled", request.model_name)
        return self._response(request, await self._run(request))

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        for outputs in await self._run(request):
            yield self._response(request, outputs)

    async def config_for(self, name: str, version: str = "") -> mc.ModelConfig:
        if name not in self.configs:
            raise ModelNotFound(name)
        return self.configs[name]


def runtime(config: mc.ModelConfig, resolver: FakeResolver) -> EnsembleRuntime:
    return EnsembleFactory().load(config, None, RuntimeOptions(resolver=resolver))  # type: ignore[arg-type]


def run(
    rt: EnsembleRuntime,
    inputs: dict[str, Array],
    outputs: list[str] | None = None,
    request: InferRequest | None = None,
) -> dict[str, Array]:
    wanted = outputs if outputs is not None else list(rt._output_dims)
    result = asyncio.run(rt.infer_async(inputs, wanted, request or InferRequest("e")))
    return result.outputs


X = np.array([1.0, 2.0, 3.0], dtype=np.float32)


def fanout(resolver: FakeResolver) -> EnsembleRuntime:
    """S = scale_v1(X) feeds T = scale(S) and (SUM, DIFF) = add_sub(S, X)."""
    resolver.add(plain("scale", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"] * 2}, "1")
    resolver.add(plain("scale", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"] * 10})
    resolver.add(
        plain("add_sub", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"]),
        lambda i: {"OUTPUT0": i["INPUT0"] + i["INPUT1"], "OUTPUT1": i["INPUT0"] - i["INPUT1"]},
    )
    config = ensemble(
        [
            ("scale", 1, {"INPUT": "X"}, {"OUTPUT": "S"}),
            ("scale", -1, {"INPUT": "S"}, {"OUTPUT": "T"}),
            ("add_sub", -1, {"INPUT0": "S", "INPUT1": "X"}, {"OUTPUT0": "SUM", "OUTPUT1": "DIFF"}),
        ],
        ["X"],
        ["T", "SUM", "DIFF"],
    )
    return runtime(config, resolver)


def test_a_tensor_feeds_two_steps_and_versions_are_pinned_or_newest() -> None:
    resolver = FakeResolver()
    out = run(fanout(resolver), {"X": X})
    np.testing.assert_array_equal(out["T"], X * 20)
    np.testing.assert_array_equal(out["SUM"], X * 3)
    np.testing.assert_array_equal(out["DIFF"], X)
    asked = [(r.model_name, r.model_version) for r in resolver.requests]
    assert asked[0] == ("scale", "1") and sorted(asked[1:]) == [("add_sub", ""), ("scale", "")]
    add_sub = next(r for r in resolver.requests if r.model_name == "add_sub")
    assert [t.name for t in add_sub.inputs] == ["INPUT0", "INPUT1"]  # the model's own names
    assert add_sub.outputs == [RequestedOutput("OUTPUT0"), RequestedOutput("OUTPUT1")]


def test_composing_models_are_held_from_the_first_step_to_the_last() -> None:
    resolver = FakeResolver()
    run(fanout(resolver), {"X": X})
    assert resolver.log[0] == "hold add_sub,scale" and resolver.log[-1] == "release"
    assert resolver.held == []


def test_only_the_requested_outputs_come_back_but_every_step_runs() -> None:
    resolver = FakeResolver()
    out = run(fanout(resolver), {"X": X}, ["SUM"])
    assert list(out) == ["SUM"]
    assert len(resolver.requests) == 3


def test_intermediate_tensors_are_the_producers_arrays() -> None:
    resolver = FakeResolver()
    produced: list[Array] = []

    def scale(i: dict[str, Array]) -> dict[str, Array]:
        produced.append(i["INPUT"] * 2)
        return {"OUTPUT": produced[-1]}

    rt = fanout(resolver)
    resolver.models[("scale", "1")] = scale
    run(rt, {"X": X})
    (s,) = produced
    consumers = [
        r
        for r in resolver.requests
        if r.model_name in ("add_sub", "scale") and r.model_version == ""
    ]
    fed = [t.data for r in consumers for t in r.inputs if t.name in ("INPUT", "INPUT0")]
    assert len(fed) == 2 and all(a is s for a in fed)
    assert next(t.data for t in resolver.requests[0].inputs) is X  # the request's own array


def test_independent_steps_run_concurrently_and_a_step_starts_once_its_inputs_exist() -> None:
    resolver = FakeResolver(delays={"slow": 0.2})
    resolver.add(plain("slow", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"]})
    resolver.add(plain("fast", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"] + 1})
    resolver.add(plain("after", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"] * 2})
    config = ensemble(
        [
            ("slow", -1, {"INPUT": "X"}, {"OUTPUT": "A"}),
            ("fast", -1, {"INPUT": "X"}, {"OUTPUT": "B"}),
            ("after", -1, {"INPUT": "B"}, {"OUTPUT": "C"}),
        ],
        ["X"],
        ["A", "C"],
    )
    out = run(runtime(config, resolver), {"X": X})
    np.testing.assert_array_equal(out["C"], (X + 1) * 2)
    # 'after' ran to its end while 'slow' (started first) was still running
    assert resolver.log.index("end after") < resolver.log.index("end slow")
    assert resolver.log[1:3] == ["start slow", "start fast"]


def test_request_id_and_parameters_reach_every_step_and_responses_parameters_merge() -> None:
    resolver = FakeResolver()
    request = InferRequest("e", id="r-7", parameters={"tenant": "acme"})
    rt = fanout(resolver)
    result = asyncio.run(rt.infer_async({"X": X}, ["T", "SUM"], request))
    assert {r.id for r in resolver.requests} == {"r-7"}
    assert all(r.parameters == {"tenant": "acme"} for r in resolver.requests)
    assert result.parameters == {"from_scale": True, "from_add_sub": True}


def test_a_failing_step_fails_the_request_named_as_triton_names_it() -> None:
    resolver = FakeResolver(delays={"slow": 0.05})

    def fail(i: dict[str, Array]) -> dict[str, Array]:
        raise InvalidArgument("check: negative input")

    resolver.add(plain("check", ["INPUT"], ["OUTPUT"]), fail)
    resolver.add(plain("slow", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"]})
    resolver.add(plain("next", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"]})
    config = ensemble(
        [
            ("check", -1, {"INPUT": "X"}, {"OUTPUT": "A"}),
            ("slow", -1, {"INPUT": "X"}, {"OUTPUT": "B"}),
            ("next", -1, {"INPUT": "B"}, {"OUTPUT": "C"}),
        ],
        ["X"],
        ["A", "C"],
    )
    with pytest.raises(InvalidArgument) as info:
        run(runtime(config, resolver), {"X": X})
    assert str(info.value) == "in ensemble 'e', check: negative input"
    # the step in flight finished; nothing started after the error
    assert "end slow" in resolver.log and "start next" not in resolver.log


def test_a_missing_composing_model_is_a_step_error() -> None:
    resolver = FakeResolver()
    config = ensemble([("nosuch", -1, {"INPUT": "X"}, {"OUTPUT": "Y"})], ["X"], ["Y"])
    with pytest.raises(ModelNotFound, match="in ensemble 'e', Request for unknown model: 'nosuch'"):
        run(runtime(config, resolver), {"X": X})


def test_an_unexpected_exception_becomes_an_internal_error() -> None:
    resolver = FakeResolver()
    resolver.add(plain("m", ["INPUT"], ["OUTPUT"]), lambda i: 1 / 0)
    config = ensemble([("m", -1, {"INPUT": "X"}, {"OUTPUT": "Y"})], ["X"], ["Y"])
    with pytest.raises(ModelyardError, match="in ensemble 'e', division by zero"):
        run(runtime(config, resolver), {"X": X})


def test_cancelling_the_request_cancels_the_steps_in_flight() -> None:
    resolver = FakeResolver(delays={"m": 10})
    resolver.add(plain("m", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"]})
    rt = runtime(ensemble([("m", -1, {"INPUT": "X"}, {"OUTPUT": "Y"})], ["X"], ["Y"]), resolver)

    async def main() -> int:
        task = asyncio.create_task(rt.infer_async({"X": X}, ["Y"], InferRequest("e")))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return sum(1 for t in asyncio.all_tasks() if t is not asyncio.current_task())

    assert asyncio.run(main()) == 0
    assert resolver.held == []


def decoupled_pipeline(resolver: FakeResolver, declared: bool = True) -> EnsembleRuntime:
    resolver.add(
        plain("repeat", ["N"], ["OUT"], decoupled=True),
        lambda i: [{"OUT": np.array([k], dtype=np.float32)} for k in range(int(i["N"][0]))],
    )
    resolver.add(plain("scale", ["INPUT"], ["OUTPUT"]), lambda i: {"OUTPUT": i["INPUT"] * 2})
    resolver.add(
        plain("add_sub", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"]),
        lambda i: {"OUTPUT0": i["INPUT0"] + i["INPUT1"], "OUTPUT1": i["INPUT0"] - i["INPUT1"]},
    )
    config = ensemble(
        [
            ("repeat", -1, {"N": "N"}, {"OUT": "R"}),
            ("scale", -1, {"INPUT": "R"}, {"OUTPUT": "S"}),
            ("add_sub", -1, {"INPUT0": "S", "INPUT1": "R"}, {"OUTPUT0": "Y", "OUTPUT1": "Z"}),
        ],
        ["N"],
        ["Y", "Z"],
        extra="model_transaction_policy { decoupled: true }" if declared else "",
    )
    return runtime(config, resolver)


def test_a_decoupled_step_runs_what_follows_once_per_response() -> None:
    resolver = FakeResolver()
    rt = decoupled_pipeline(resolver)

    async def main() -> list[dict[str, Array]]:
        n = np.array([3], dtype=np.float32)
        return [r.outputs async for r in rt.stream_async({"N": n}, ["Y", "Z"], InferRequest("e"))]

    answers = asyncio.run(main())
    got = sorted((float(a["Y"][0]), float(a["Z"][0])) for a in answers)
    assert got == [(0.0, 0.0), (3.0, 1.0), (6.0, 2.0)]  # Y = 2R + R, Z = 2R - R
    assert [r.model_name for r in resolver.requests].count("add_sub") == 3


def test_no_response_from_a_decoupled_step_is_no_answer() -> None:
    resolver = FakeResolver()
    rt = decoupled_pipeline(resolver)

    async def main() -> list[Any]:
        n = np.array([0], dtype=np.float32)
        return [r async for r in rt.stream_async({"N": n}, ["Y"], InferRequest("e"))]

    assert asyncio.run(main()) == []


def test_a_plain_ensemble_over_a_decoupled_model_refuses_single_answers() -> None:
    resolver = FakeResolver()
    rt = decoupled_pipeline(resolver, declared=False)
    with pytest.raises(DecoupledModel, match="model 'repeat' of step 0 is decoupled"):
        run(rt, {"N": np.array([2], dtype=np.float32)})
    assert resolver.requests == []


def test_an_optional_input_left_out_is_left_out_of_the_step() -> None:
    resolver = FakeResolver()
    config = ensemble([("m", -1, {"INPUT": "X", "EXTRA": "E"}, {"OUTPUT": "Y"})], ["X", "E"], ["Y"])
    resolver.add(
        plain("m", ["INPUT", "EXTRA"], ["OUTPUT"]),
        lambda i: {"OUTPUT": i["INPUT"] + i.get("EXTRA", 0)},
    )
    out = run(runtime(config, resolver), {"X": X})
    np.testing.assert_array_equal(out["Y"], X)
    assert [t.name for t in resolver.requests[0].inputs] == ["INPUT"]


def test_batch_dimension_is_added_and_dropped_between_plain_and_batching_models() -> None:
    """A batching ensemble (dims [3]) over a plain model taking [1, 3] and back."""
    resolver = FakeResolver()
    resolver.add(plain("flat", ["INPUT"], ["OUTPUT"], dims="3"), lambda i: {"OUTPUT": i["INPUT"]})
    resolver.add(
        plain("batched", ["INPUT"], ["OUTPUT"], batch=4, dims="3"),
        lambda i: {"OUTPUT": i["INPUT"] * 2},
    )
    config = ensemble(
        [
            ("batched", -1, {"INPUT": "X"}, {"OUTPUT": "B"}),
            ("flat", -1, {"INPUT": "B"}, {"OUTPUT": "Y"}),
        ],
        ["X"],
        ["Y"],
        batch=4,
        dims="3",
    )
    out = run(runtime(config, resolver), {"X": X.reshape(1, 3)})
    assert [list(t.shape) for r in resolver.requests for t in r.inputs] == [[1, 3], [3]]
    assert out["Y"].shape == (1, 3)  # the ensemble's own batch dimension is back


def test_reshape_for_follows_tritons_rules() -> None:
    assert reshape_for([3], True, 0, [3]) == [1, 3]  # plain -> batching: batch of 1 added
    assert reshape_for([3], True, 0, [2, 3]) == [2, 3]  # already batched: unchanged
    assert reshape_for([3], False, 1, [1, 3]) == [3]  # batch 1 -> plain: batch dropped
    assert reshape_for([-1, 3], False, 1, [1, 3]) == [1, 3]  # fits as it is
    assert reshape_for([3], False, 2, [2, 3]) == [2, 3]  # batch 2 cannot be dropped
    assert reshape_for(None, True, 0, [3]) == [3]  # unknown model: unchanged
    assert reshape_for([3], True, 2, [2, 3]) == [2, 3]  # same batching: unchanged


def test_the_ensemble_counts_each_request_once_in_its_own_statistics() -> None:
    resolver = FakeResolver()
    fanout(resolver)
    econfig = ensemble([("scale", 1, {"INPUT": "X"}, {"OUTPUT": "Y"})], ["X"], ["Y"])
    runner = ModelRunner(econfig, "1", runtime(econfig, resolver))

    async def main() -> None:
        x = Tensor("X", "FP32", [3], X)
        response = await runner.infer(InferRequest("e", inputs=[x]))
        assert response.outputs[0].name == "Y" and response.outputs[0].datatype == "FP32"
        resolver.models[("scale", "1")] = lambda i: 1 / 0
        with pytest.raises(ModelyardError):
            await runner.infer(InferRequest("e", inputs=[x]))

    asyncio.run(main())
    stats = runner.stats
    assert (stats.inference_count, stats.execution_count) == (1, 1)
    assert stats.durations["success"].count == 1 and stats.durations["fail"].count == 1


def test_factory_and_sync_interface() -> None:
    config = ensemble([("m", -1, {"INPUT": "X"}, {"OUTPUT": "Y"})], ["X"], ["Y"])
    assert isinstance(factory_for(config), EnsembleFactory)
    assert EnsembleFactory().autocomplete(config, None, RuntimeOptions()) is None  # type: ignore[arg-type,func-returns-value]
    with pytest.raises(ConfigError, match="its steps need the server's models"):
        EnsembleFactory().load(config, None, RuntimeOptions())  # type: ignore[arg-type]
    rt = runtime(config, FakeResolver())
    with pytest.raises(Unsupported):
        rt.infer({"X": X}, ["Y"])
    rt.unload()
    not_ensemble = _config('name: "m" backend: "ensemble"')
    with pytest.raises(ConfigError, match="unable to find backend library for backend 'ensemble'"):
        EnsembleFactory().load(not_ensemble, None, RuntimeOptions(resolver=FakeResolver()))  # type: ignore[arg-type]
