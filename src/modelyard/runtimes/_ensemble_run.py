"""One ensemble request: its steps run as a data-flow graph through the server's models.

A step starts as soon as every ensemble tensor it reads exists; steps that do not depend on
each other run concurrently (one task each); a tensor may feed any number of steps. Tensors
travel between steps as the numpy arrays the models produced, never copied (at most a
reshaped view, where Triton adds or drops a batch dimension between a batching and a plain
model).

Decoupled composing models (several responses per request) are Triton's "iterations": each
response of a decoupled step opens a *scope* below the one the step ran in, holding that
response's tensors; steps downstream run once per scope, and the ensemble answers once per
scope in which all of its requested outputs exist. A scope sees its ancestors' tensors.
Triton's load-time check (``composing_fault``) guarantees that no step mixes tensors of two
different decoupled origins, so every step and every answer has one well-defined scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import Internal, ModelyardError
from modelyard.repository import EnsembleStep
from modelyard.types import (
    InferRequest,
    InferResponse,
    ModelResolver,
    RequestedOutput,
    Tensor,
)

# a scope is the path of (decoupled step index, response index) that led to it; () = the root
Scope = tuple[tuple[int, int], ...]
ConfigFor = Callable[[str, str], Awaitable[Any]]


@dataclass(slots=True)
class Value:
    """An ensemble tensor's value in one scope. ``tensor`` is None where the tensor exists but
    holds no data: an optional ensemble input the request left out, or an output a step's
    response did not carry (Triton then leaves the optional input of the next step out)."""

    tensor: Tensor | None
    batch: int  # batch size of the request that produced it; 0: not a batched tensor
    parameters: Mapping[str, Any] = field(default_factory=dict)  # its response's parameters


@dataclass(frozen=True, slots=True)
class Target:
    """What the ensemble knows of a step's model for this request (from its config)."""

    batching: bool = False
    decoupled: bool = False
    dims: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # input name -> dims


@dataclass(slots=True)
class _Event:
    """What a step's task reports: a response, its error, and (last) that it is done."""

    step: EnsembleStep
    scope: Scope  # where the step ran
    response: InferResponse | None = None
    index: int | None = None  # response number of a decoupled step
    error: BaseException | None = None
    done: asyncio.Task[None] | None = None  # the task, in its last event


class Run:
    """Drives one request; :meth:`answers` yields each complete set of requested outputs."""

    def __init__(
        self,
        name: str,
        steps: Sequence[EnsembleStep],
        resolver: ModelResolver,
        targets: Mapping[int, Target],
        request: InferRequest,
        wanted: Sequence[str],
        decoupled: bool,
    ) -> None:
        self.name = name
        self.decoupled = decoupled
        self.steps = steps
        self.resolver = resolver
        self.targets = targets
        self.request = request
        self.wanted = list(wanted)
        self.values: dict[Scope, dict[str, Value]] = {(): {}}
        self.consumers: dict[str, list[EnsembleStep]] = {}
        for step in steps:
            for _, tensor in step.inputs:
                self.consumers.setdefault(tensor, []).append(step)
        self.children: dict[Scope, list[Scope]] = {(): []}
        self.batches: dict[tuple[Scope, int], int] = {}  # (scope, step) -> its request's batch
        self.answered: set[Scope] = set()
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.ready: list[tuple[EnsembleStep, Scope, InferRequest, bool]] = []  # not started
        self.tasks: set[asyncio.Task[None]] = set()
        self.error: BaseException | None = None

    async def answers(
        self, inputs: Mapping[str, Value]
    ) -> AsyncIterator[tuple[dict[str, Value], bool]]:
        """Yields the requested outputs: for a decoupled ensemble once per scope in which all
        of them exist, as soon as they do; otherwise once, when every step is done. Raises the
        first step error, framed as Triton frames it, once the steps in flight are done.

        Each answer comes with its final flag, as Triton's ensemble sends it: an answer made
        when no step is left running or waiting to start is the last and carries the flag;
        otherwise the flag comes alone, after the answers, when the last step ends."""
        self.values[()].update(inputs)
        try:
            self._schedule((), list(inputs))
            while self.ready or self.tasks:
                event = await self._next_event()
                scope = self._consume(event)
                if scope is not None and self.decoupled and self.error is None:
                    complete = self._complete_scopes(scope)
                    last = not self.ready and not self.tasks
                    for i, found in enumerate(complete, 1):
                        yield self._outputs(found), last and i == len(complete)
            if self.error is not None:
                raise self.error
            if not self.decoupled:
                yield self._outputs(()), True
        finally:
            for task in self.tasks:  # only when the caller went away: cancel what still runs
                task.cancel()

    async def _next_event(self) -> _Event:
        """The next step event. A lone ready step with nothing else in flight (the links of a
        chain) runs right here: a task and a queue round trip per step would cost more than
        the bookkeeping of a whole request."""
        if self.error is not None:
            self.ready.clear()  # nothing new starts after an error
        elif len(self.ready) == 1 and not self.tasks and not self.ready[0][3]:
            step, scope, request, _ = self.ready.pop()
            try:
                return _Event(step, scope, await self.resolver.infer(request))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the step's error, framed by the ensemble
                return _Event(step, scope, error=exc)
        for step, scope, request, decoupled in self.ready:
            self.tasks.add(asyncio.create_task(self._call(step, scope, request, decoupled)))
        self.ready.clear()
        return await self.events.get()

    # -- bookkeeping ------------------------------------------------------------------------
    def _visible(self, scope: Scope, tensor: str) -> tuple[Scope, Value] | None:
        """The value of ``tensor`` seen from ``scope`` (its own or an ancestor's) and where."""
        for depth in range(len(scope), -1, -1):
            value = self.values.get(scope[:depth], {}).get(tensor)
            if value is not None:
                return scope[:depth], value
        return None

    def _consume(self, event: _Event) -> Scope | None:
        """Apply one step event; returns the scope that received tensors, if any."""
        if event.done is not None:
            self.tasks.discard(event.done)
        if event.error is not None:
            if self.error is None:
                self.error = _in_ensemble(self.name, event.error)
            return None
        if event.response is None or self.error is not None:
            return None
        scope = event.scope
        if event.index is not None:  # a decoupled step's response opens a scope of its own
            scope = (*scope, (event.step.index, event.index))
            self.children[event.scope].append(scope)
            self.children[scope] = []
        store = self.values.setdefault(scope, {})
        produced = {t.name: t for t in event.response.outputs}
        batch = self.batches[(event.scope, event.step.index)]
        parameters = event.response.parameters
        for key, tensor in event.step.outputs:
            out = produced.get(key)
            renamed = None if out is None else Tensor(tensor, out.datatype, out.shape, out.data)
            store[tensor] = Value(renamed, batch, parameters)
        self._schedule(scope, [tensor for _, tensor in event.step.outputs])
        return scope

    def _below(self, scope: Scope) -> list[Scope]:
        """``scope`` and every scope opened below it."""
        found, todo = [], [scope]
        while todo:
            current = todo.pop()
            found.append(current)
            todo.extend(self.children.get(current, ()))
        return found

    def _schedule(self, scope: Scope, tensors: Sequence[str]) -> None:
        """Start every step that reads one of ``tensors`` and now has all of its inputs."""
        if self.error is not None:
            return
        scopes = self._below(scope)
        for step in {s.index: s for t in tensors for s in self.consumers.get(t, ())}.values():
            for candidate in scopes:
                found = [self._visible(candidate, tensor) for _, tensor in step.inputs]
                if any(f is None for f in found):
                    continue
                home = max((f[0] for f in found if f is not None), key=len)
                if (home, step.index) in self.batches:
                    continue  # started already
                feed = {key: f[1] for (key, _), f in zip(step.inputs, found, strict=True) if f}
                self._start(step, home, feed)

    def _start(self, step: EnsembleStep, scope: Scope, feed: Mapping[str, Value]) -> None:
        target = self.targets.get(step.index, Target())
        inputs: list[Tensor] = []
        for key, value in feed.items():
            if value.tensor is None:
                continue  # an optional input left out upstream: left out here too
            t = value.tensor
            shape = reshape_for(target.dims.get(key), target.batching, value.batch, t.shape)
            data = t.data if shape == t.shape else t.data.reshape(shape)
            inputs.append(Tensor(key, t.datatype, shape, data))
        # Triton's BatchSize() of the step's request, which its outputs carry: 0 when plain
        batch = inputs[0].shape[0] if target.batching and inputs and inputs[0].shape else 0
        self.batches[(scope, step.index)] = batch
        request = InferRequest(
            model_name=step.model,
            model_version=step.version,
            id=self.request.id,
            inputs=inputs,
            outputs=[RequestedOutput(key) for key, _ in step.outputs],
            parameters=dict(self.request.parameters),
        )
        self.ready.append((step, scope, request, target.decoupled))

    async def _call(
        self, step: EnsembleStep, scope: Scope, request: InferRequest, decoupled: bool
    ) -> None:
        put, me = self.events.put_nowait, asyncio.current_task()
        try:
            if decoupled:
                index = 0
                last: _Event | None = None
                async for response in self.resolver.stream(request):
                    event = _Event(step, scope, response, index)
                    index += 1
                    if response.final:  # the stream ends with it: one event, and done
                        last = event
                        continue
                    put(event)
                if last is None:  # the final flag came alone
                    last = _Event(step, scope)
                last.done = me
                put(last)
            else:
                put(_Event(step, scope, await self.resolver.infer(request), done=me))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the step's error, framed by the ensemble in answers()
            put(_Event(step, scope, error=exc, done=me))

    def _complete_scopes(self, scope: Scope) -> list[Scope]:
        """Scopes at or below ``scope`` that hold every requested output, not answered yet."""
        done = []
        for candidate in self._below(scope):
            if candidate in self.answered:
                continue
            if all(self._visible(candidate, name) is not None for name in self.wanted):
                self.answered.add(candidate)
                done.append(candidate)
        return done

    def _outputs(self, scope: Scope) -> dict[str, Value]:
        outputs = {}
        for name in self.wanted:
            found = self._visible(scope, name)
            if found is not None and found[1].tensor is not None:
                outputs[name] = found[1]
        return outputs


def reshape_for(
    dims: Sequence[int] | None, batching: bool, batch: int, shape: list[int]
) -> list[int]:
    """Triton's ``ReshapeTensorDims``: the shape a tensor takes on its way into a model (or
    out of the ensemble) whose batching differs from the model that produced it.

    A plain tensor going to a batching model gains a batch dimension of 1 when its shape is
    the model's dims; a batched tensor of batch 1 going to a plain model whose dims it does
    not fit loses its batch dimension. ``dims`` None: the model is unknown, shapes pass as
    they are.
    """
    if dims is None or batching == (batch != 0):
        return shape
    if batching:
        return [1, *shape] if _fits(dims, shape) else shape
    if not _fits(dims, shape) and batch == 1:
        return shape[1:]
    return shape


def _fits(dims: Sequence[int], shape: Sequence[int]) -> bool:
    return len(dims) == len(shape) and all(
        d == s or d == -1 or s == -1 for d, s in zip(dims, shape, strict=True)
    )


def _in_ensemble(name: str, exc: BaseException) -> ModelyardError:
    """Triton's framing of a step's error: ``in ensemble '<name>', <message>``, same status."""
    if not isinstance(exc, ModelyardError):
        return Internal(f"in ensemble '{name}', {exc}")
    message = f"in ensemble '{name}', {exc.message}"
    error = exc.__class__.__new__(exc.__class__)
    state = {k: v for k, v in vars(exc).items() if k != "stats_recorded"}
    error.__dict__.update(state)  # its own statistics were recorded; the ensemble's are not
    Exception.__init__(error, message)
    error.message = message
    error.__cause__ = exc  # logs show the step's own error beneath
    return error
