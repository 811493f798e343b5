"""The ``ensemble`` platform: Triton ensembles, run through the server's own models.

An ensemble has no files: its config's ``ensemble_scheduling`` names composing models and
maps their tensors onto the ensemble's (``repository.ensemble``). This runtime executes the
steps for each request through the injected :class:`~modelyard.types.ModelResolver` (the
manager), never importing it: each step is an ordinary request to a composing model, loaded
on demand like any other, validated against that model's config and counted in its own
statistics. The data flow itself is in ``_ensemble_run.py``.

Errors are Triton's: a step that fails fails the ensemble request with the step's status and
message, prefixed ``in ensemble '<name>', ``. An ensemble over a decoupled model is itself
decoupled (the loader marks its config, as Triton does): it answers through
``stream_async``, once per response that completes its outputs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from modelyard.datatypes import config_to_wire
from modelyard.errors import ConfigError, DecoupledModel, ModelyardError, Unsupported
from modelyard.repository import ENSEMBLE_PLATFORM, ensemble_steps
from modelyard.runtimes._ensemble_run import Run, Target, Value, reshape_for
from modelyard.runtimes.base import Result, RuntimeOptions
from modelyard.types import Array, InferRequest, ModelResolver, Tensor

# Triton's answer when a single-response path reaches a decoupled model
_DECOUPLED_REFUSED = "HTTP end point doesn't support models with decoupled transaction policy"


class EnsembleFactory:
    backend = "ensemble"

    def autocomplete(self, config: Any, model_file: Path, options: RuntimeOptions) -> None:
        """An ensemble's config is complete as written (Triton auto-completes nothing)."""

    def load(self, config: Any, model_file: Path, options: RuntimeOptions) -> EnsembleRuntime:
        if config.platform != ENSEMBLE_PLATFORM:  # ``backend: "ensemble"``: not a backend
            raise ConfigError(
                f"unable to find backend library for backend '{config.backend}', try "
                "specifying runtime on the model configuration."
            )
        if options.resolver is None:
            raise ConfigError(
                f"ensemble '{config.name}' cannot run here: its steps need the server's models"
            )
        return EnsembleRuntime(config, options.resolver)


class EnsembleRuntime:
    """One loaded ensemble version. Holds nothing but the step graph: the composing models
    are the manager's, loaded, counted and evicted as models of their own."""

    def __init__(self, config: Any, resolver: ModelResolver) -> None:
        self.model_name: str = config.name
        self.steps = ensemble_steps(config)
        self.decoupled = bool(config.model_transaction_policy.decoupled)
        self._resolver = resolver
        # the manager answers configs too (not part of the ModelResolver protocol): without
        # it, shapes pass between steps unchanged and decoupled steps are not recognised
        self._config_for: Any = getattr(resolver, "config_for", None)
        self._batching = config.max_batch_size > 0
        self._datatypes = {
            t.name: config_to_wire(mc.DataType.Name(t.data_type)) for t in config.input
        }
        self._output_dims = {t.name: tuple(t.dims) for t in config.output}
        self._composing = sorted({step.model for step in self.steps})
        self._target_cache: dict[int, tuple[Any, Target]] = {}  # step -> (its config, target)

    def infer(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        raise Unsupported(
            f"ensemble '{self.model_name}' runs its steps through the server: use the async "
            "interface"
        )

    def unload(self) -> None:
        """Nothing to free: the composing models are the manager's."""

    async def infer_async(
        self, inputs: Mapping[str, Array], outputs: Sequence[str], request: InferRequest
    ) -> Result:
        results = [r async for r in self._run(inputs, outputs, request, decoupled=False)]
        return results[0] if results else Result()

    async def stream_async(
        self, inputs: Mapping[str, Array], outputs: Sequence[str], request: InferRequest
    ) -> AsyncIterator[Result]:
        """A decoupled ensemble's answers, one per completed set of outputs."""
        async for result in self._run(inputs, outputs, request, decoupled=True):
            yield result

    async def _run(
        self,
        inputs: Mapping[str, Array],
        outputs: Sequence[str],
        request: InferRequest,
        decoupled: bool,
    ) -> AsyncIterator[Result]:
        targets = await self._targets()
        if not decoupled:
            for step in self.steps:
                if targets[step.index].decoupled:
                    raise DecoupledModel(
                        f"in ensemble '{self.model_name}', model '{step.model}' of step "
                        f"{step.index} is decoupled, so the ensemble is: "
                        f"{_DECOUPLED_REFUSED}",
                        self.model_name,
                    )
        feed: dict[str, Value] = {}
        for name, datatype in self._datatypes.items():
            arr = inputs.get(name)
            if arr is None:  # an optional input the request left out
                feed[name] = Value(None, 0)
                continue
            batch = int(arr.shape[0]) if self._batching and arr.ndim else 0
            feed[name] = Value(Tensor(name, datatype, list(arr.shape), arr), batch)
        run = Run(self.model_name, self.steps, self._resolver, targets, request, outputs, decoupled)
        # the composing models stay loaded from the first step to the last (not evicted
        # between one step and the next)
        with self._resolver.hold(self._composing):
            async for answer, final in run.answers(feed):
                result = self._result(answer)
                result.final = final
                yield result

    async def _targets(self) -> dict[int, Target]:
        """What each step's model config says now (it may have been reloaded since)."""
        if self._config_for is None:
            return {step.index: Target() for step in self.steps}
        targets = {}
        for step in self.steps:
            try:
                config = await self._config_for(step.model, step.version)
            except ModelyardError:
                targets[step.index] = Target()  # the step's request reports why, in order
                continue
            cached = self._target_cache.get(step.index)
            if cached is None or cached[0] is not config:
                target = Target(
                    batching=config.max_batch_size > 0,
                    decoupled=bool(config.model_transaction_policy.decoupled),
                    dims={t.name: tuple(t.dims) for t in config.input},
                )
                cached = self._target_cache[step.index] = (config, target)
            targets[step.index] = cached[1]
        return targets

    def _result(self, answer: Mapping[str, Value]) -> Result:
        outputs: dict[str, Array] = {}
        parameters: dict[str, Any] = {}
        seen: set[int] = set()
        for name, value in answer.items():
            assert value.tensor is not None
            arr = value.tensor.data
            shape = reshape_for(
                self._output_dims.get(name), self._batching, value.batch, list(arr.shape)
            )
            outputs[name] = arr if shape == list(arr.shape) else arr.reshape(shape)
            if id(value.parameters) not in seen:  # each producing response's parameters once
                seen.add(id(value.parameters))
                parameters.update(value.parameters)
        return Result(outputs, parameters)
