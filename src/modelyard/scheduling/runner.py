"""Runs validated requests on one loaded model version and keeps its statistics.

Where a model executes is decided per call from what it has cost so far:

* a model whose executions average under ``inline_ns`` (default 200 µs) runs on the event
  loop thread. Handing an execution to a worker thread costs the loop a wake-up each way,
  and the worker then waits for the GIL while the loop is busy (up to the interpreter's
  5 ms switch interval): measured, a worker thread lost to inline execution at every model
  cost from 18 to 140 µs at c=1, and matched or beat it only at c >= 16 from about 140 µs;
* anything slower runs on the model's own worker threads (one per instance in the
  ``instance_group``), where onnxruntime releases the GIL and uses another core while the
  event loop keeps parsing HTTP, and the loop is never blocked for long by one model.

Measurements behind the threshold are in ``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.datatypes import wire_datatype
from modelyard.errors import DecoupledModel, InvalidArgument, ModelyardError
from modelyard.scheduling.batcher import Batcher, Job
from modelyard.scheduling.batching import policy_from_config
from modelyard.scheduling.signature import (
    Signature,
    deduce_raw_input,
    runtime_shape,
    signature_of,
    validate_inputs,
)
from modelyard.scheduling.stats import ModelStats
from modelyard.types import Array, InferRequest, InferResponse, Runtime, Tensor

DEFAULT_INLINE_NS = 200_000
# Triton's answer when plain /infer reaches a decoupled model (several responses cannot
# travel in one HTTP response): use generate_stream, gRPC streaming or BLS instead
DECOUPLED_REFUSED = "HTTP end point doesn't support models with decoupled transaction policy"
_EWMA_WEIGHT = 0.1


def instance_count(config: Any) -> int:
    """Total instances over all instance groups (Triton's default is one)."""
    return max(1, sum(max(1, int(g.count)) for g in config.instance_group))


class ModelRunner:
    """One model version, ready to serve: signature, runtime, executor and statistics."""

    def __init__(
        self,
        config: Any,
        version: str,
        runtime: Runtime,
        model_dir: Path | None = None,
        inline_ns: int = DEFAULT_INLINE_NS,
        stats: ModelStats | None = None,
    ) -> None:
        self.config = config
        self.name: str = config.name
        self.version = version
        self.runtime = runtime
        self.signature: Signature = signature_of(config, model_dir)
        self.model_dir = model_dir
        # the manager passes the version's lasting statistics, so they survive reloads
        self.stats = stats if stats is not None else ModelStats(self.name, version)
        self._instances = instance_count(config)
        self._executor = ThreadPoolExecutor(
            max_workers=self._instances, thread_name_prefix=f"model-{self.name}"
        )
        self._inline_ns = inline_ns
        # a cost the runtime measured at load (the ONNX runtime times its runs to choose its
        # threads) places the first requests; unknown: start on a worker thread, the safe side
        measured = getattr(runtime, "cost_ns", None)
        self._ewma_ns = float(measured) if isinstance(measured, int) else float(inline_ns) * 2
        # that cost is a prior, from zero-filled inputs: the first real execution replaces
        # it (zeros can mean no work at all, as for an ONNX Loop whose trip count is an input)
        self._measured = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # process-backed runtimes (Python models) are awaited; their outputs carry the
        # datatype the model produced, as Triton's Python backend sends them
        self._async: Any = getattr(runtime, "infer_async", None)
        self.decoupled = bool(config.model_transaction_policy.decoupled)
        # dynamic batching: requests queue and run together (scheduling/batching.py)
        self._policy = None if self.decoupled else policy_from_config(config)
        self._batcher: Batcher | None = None
        # Python models take a batch as a list of requests (Triton); this parameter makes
        # it one request of stacked tensors instead, as do the server's own process models
        self._stacked = _flag(config, "modelyard.stacked_batch") or bool(
            getattr(runtime, "stacks_batches", False)
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        if self.decoupled:
            raise DecoupledModel(DECOUPLED_REFUSED, self.name)
        start = time.perf_counter_ns()
        # as in Triton, a request refused by validation never counts in the statistics
        batch, wanted, feed = self._prepare(request)
        if self._policy is not None:
            with self._in_flight():
                return await self._queued(request, start, batch, wanted, feed)
        # the in-flight count inline, not through _in_flight(): a generator-based context
        # manager costs ~1 µs, and this is the path every request takes
        self.inflight += 1
        self._idle.clear()
        try:
            response, timings = await self._execute(request, start, batch, wanted, feed)
        except Exception as exc:
            if not (isinstance(exc, ModelyardError) and exc.stats_recorded):
                self.stats.record_failure(time.perf_counter_ns() - start)
            raise
        finally:
            self.inflight -= 1
            if not self.inflight:
                self._idle.set()
        self.stats.record_success(*timings)
        return response

    def _cost(self, sample: int) -> None:
        """One more execution's cost, the CPU time of the thread that ran it, into the running
        average (the first one replaces the prior measured at load).

        CPU time on both placements, never wall time: a run on the event loop that the kernel
        preempted (a 3 ms time slice lost on a busy 2-core machine) would read as hundreds of
        times the model's cost and send a cheap model to worker threads, where every execution
        then waits milliseconds for the GIL; a run on a worker counts no time spent waiting
        for the GIL. A genuinely heavy execution counts in full, so a model whose cost depends
        on its input (an ONNX Loop whose trip count is a request's value) leaves the loop after
        the first long one. Reading a thread's CPU clock costs about 0.6 µs.
        """
        if self._measured:
            self._ewma_ns += _EWMA_WEIGHT * (sample - self._ewma_ns)
        else:
            self._ewma_ns = float(sample)
            self._measured = True

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Counts a request in flight; ``drained()`` waits for the count to reach zero."""
        self.inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if not self.inflight:
                self._idle.set()

    # -- dynamic batching ------------------------------------------------------------------
    async def _queued(
        self,
        request: InferRequest,
        start: int,
        batch: int,
        wanted: list[tuple[str, int]],
        feed: dict[str, Array],
    ) -> InferResponse:
        if self._batcher is None:
            assert self._policy is not None
            self._batcher = Batcher(self._policy, self._instances, self._run_batch)
        try:
            return await self._batcher.submit(request, wanted, feed, batch, start)
        except Exception as exc:
            if not (isinstance(exc, ModelyardError) and exc.stats_recorded):
                self.stats.record_failure(time.perf_counter_ns() - start)
            raise

    async def _run_batch(self, jobs: list[Job]) -> None:
        """One execution for a batch of queued requests; each gets its slice back."""
        assert self._batcher is not None
        batcher = self._batcher
        t0 = time.perf_counter_ns()
        total = sum(j.size for j in jobs)
        names: list[str] = []
        for job in jobs:
            for name, _ in job.wanted:
                if name not in names:
                    names.append(name)
        try:
            if self._async is not None and not self._stacked:
                t_in = time.perf_counter_ns()
                results = await self.runtime.infer_batch(  # type: ignore[attr-defined]
                    [(j.feed, [n for n, _ in j.wanted], j.request) for j in jobs]
                )
                t_infer = time.perf_counter_ns()
                per_job = [(r.outputs, r.parameters, r.error) for r in results]
            else:
                merged = _merge([j.feed for j in jobs])
                t_in = time.perf_counter_ns()
                if self._async is not None:
                    result = await self._async(merged, names, jobs[0].request)
                    if result.error is not None:
                        raise result.error
                    outputs = result.outputs
                elif self._ewma_ns < self._inline_ns:
                    cpu = time.thread_time_ns()
                    outputs = self.runtime.infer(merged, names)
                    self._cost(time.thread_time_ns() - cpu)
                else:
                    loop = asyncio.get_running_loop()
                    outputs, _, _, cost = await loop.run_in_executor(
                        self._executor, self._timed_infer, merged, names
                    )
                    self._cost(cost)
                t_infer = time.perf_counter_ns()
                per_job = []
                offset = 0
                for job in jobs:
                    sliced = {k: v[offset : offset + job.size] for k, v in outputs.items()}
                    per_job.append((sliced, {}, None))
                    offset += job.size
        except Exception as exc:
            for job in jobs:
                batcher.finish(job, exc)
            return
        responses: list[InferResponse | BaseException] = []
        for job, (outs, params, error) in zip(jobs, per_job, strict=True):
            if error is not None:
                responses.append(error)
                continue
            try:
                responses.append(self._response(job.request, outs, params, job.wanted, job.size))
            except Exception as exc:
                responses.append(exc)
        done = time.perf_counter_ns()
        self.stats.record_execution(total, t_in - t0, t_infer - t_in, done - t_infer)
        for job, outcome in zip(jobs, responses, strict=True):
            if not isinstance(outcome, BaseException):
                self.stats.record_request(
                    job.size,
                    done - job.start_ns,
                    job.queued_ns,
                    t_in - t0,
                    t_infer - t_in,
                    done - t_infer,
                )
            batcher.finish(job, outcome)

    async def warm_up(self) -> None:
        """Runs the config's ``model_warmup`` samples (Triton runs them before a model
        reports ready; a sample that fails fails the load)."""
        from modelyard.scheduling.warmup import warmup_requests

        for request, count in warmup_requests(self.config, self.signature, self.model_dir):
            for _ in range(count):
                await self.infer(request)

    def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """A decoupled model's responses to one request (zero or more), as they come; a
        plain model's single response.

        The request is validated here, before the first response is awaited, so a caller
        can answer a malformed request differently from a model's own error. Statistics
        count the request once, when its last response is out.
        """
        if not self.decoupled or self._async is None:
            return self._single(request)
        start = time.perf_counter_ns()
        batch, wanted, feed = self._prepare(request)
        return self._stream(request, start, batch, wanted, feed)

    async def _single(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        response = await self.infer(request)
        response.final = True  # a plain model's one response carries the final flag
        yield response

    async def _stream(
        self,
        request: InferRequest,
        start: int,
        batch: int,
        wanted: list[tuple[str, int]],
        feed: dict[str, Array],
    ) -> AsyncIterator[InferResponse]:
        names = [n for n, _ in wanted]
        t_input = time.perf_counter_ns()
        with self._in_flight():
            try:
                async for result in self.runtime.stream_async(feed, names, request):  # type: ignore[attr-defined]
                    if result.error is not None:
                        raise result.error
                    response = self._response(
                        request, result.outputs, result.parameters, wanted, batch
                    )
                    response.final = result.final
                    yield response
            except BaseException:
                self.stats.record_failure(time.perf_counter_ns() - start)
                raise
        done = time.perf_counter_ns()
        self.stats.record_success(
            batch if self.signature.batched else 1,
            done - start,
            0,
            t_input - start,
            done - t_input,
            0,
        )

    def _response(
        self,
        request: InferRequest,
        results: Mapping[str, Array],
        parameters: Mapping[str, Any],
        wanted: list[tuple[str, int]],
        batch: int,
    ) -> InferResponse:
        outputs = [
            self._output(name, results[name], class_count, batch)
            for name, class_count in wanted
            if name in results
        ]
        return InferResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=outputs,
            id=request.id,
            parameters=dict(parameters),
        )

    def _prepare(
        self, request: InferRequest
    ) -> tuple[int, list[tuple[str, int]], dict[str, Array]]:
        """Validate against the config and build the runtime's feed (reshapes applied)."""
        sig = self.signature
        if len(request.inputs) == 1 and request.inputs[0].parameters.get("raw_input"):
            request.inputs = [deduce_raw_input(sig, request.inputs[0], request.id)]
        batch = validate_inputs(sig, request.inputs, request.id)
        wanted = self._requested(request)
        feed: dict[str, Array] = {}
        for t in request.inputs:
            spec = sig.inputs[t.name]
            arr = t.data
            if not arr.flags.aligned:  # binary tensors are views at any offset of the body
                arr = arr.copy()
            shape = runtime_shape(spec, t.shape, sig.batched)
            if shape is not None:
                arr = arr.reshape(shape)
            feed[t.name] = arr
        return batch, wanted, feed

    async def _execute(
        self,
        request: InferRequest,
        start: int,
        batch: int,
        wanted: list[tuple[str, int]],
        feed: dict[str, Array],
    ) -> tuple[InferResponse, tuple[int, int, int, int, int, int]]:
        sig = self.signature
        names = [n for n, _ in wanted]
        t_input = time.perf_counter_ns()
        if self._async is not None:
            result = await self._async(feed, names, request)
            t_infer = time.perf_counter_ns()
            size = batch if sig.batched else 1
            if result.error is not None:
                # as Triton counts them: an error response is a successful request, an
                # execution that raised is a failed one that still executed
                done = time.perf_counter_ns()
                if result.failed_execution:
                    self.stats.record_failed_execution(
                        size, done - start, t_input - start, t_infer - t_input, done - t_infer
                    )
                else:
                    self.stats.record_success(
                        size, done - start, 0, t_input - start, t_infer - t_input, done - t_infer
                    )
                result.error.stats_recorded = True
                raise result.error
            response = self._response(request, result.outputs, result.parameters, wanted, batch)
            done = time.perf_counter_ns()
            return response, (
                size,
                done - start,
                0,
                t_input - start,
                t_infer - t_input,
                done - t_infer,
            )
        if self._ewma_ns < self._inline_ns:
            cpu = time.thread_time_ns()
            results = self.runtime.infer(feed, names)
            cost = time.thread_time_ns() - cpu
            t_begin = t_input
            t_infer = time.perf_counter_ns()
        else:
            loop = asyncio.get_running_loop()
            results, t_begin, t_infer, cost = await loop.run_in_executor(
                self._executor, self._timed_infer, feed, names
            )
        self._cost(cost)
        outputs = [
            self._output(name, results[name], class_count, batch) for name, class_count in wanted
        ]
        done = time.perf_counter_ns()
        response = InferResponse(
            model_name=self.name, model_version=self.version, outputs=outputs, id=request.id
        )
        timings = (
            batch if sig.batched else 1,
            done - start,
            t_begin - t_input,  # queue: waiting for a free instance
            t_input - start,
            t_infer - t_begin,
            done - t_infer,
        )
        return response, timings

    async def drained(self) -> None:
        """Returns once no request is executing on this model."""
        await self._idle.wait()

    def _timed_infer(
        self, feed: dict[str, Array], names: list[str]
    ) -> tuple[dict[str, Array], int, int, int]:
        """Runs on a worker thread; the cost it reports is this thread's CPU time.

        Wall time on a worker includes waiting to get the GIL back from the busy event loop
        (up to the 5 ms switch interval), which would make every model look slow and keep it
        off the loop for good; CPU time is what the execution itself costs.
        """
        begin = time.perf_counter_ns()
        cpu = time.thread_time_ns()
        results = self.runtime.infer(feed, names)
        cost = time.thread_time_ns() - cpu
        return results, begin, time.perf_counter_ns(), cost

    def _requested(self, request: InferRequest) -> list[tuple[str, int]]:
        sig = self.signature
        if request.outputs is None:
            return [(name, 0) for name in sig.outputs]
        wanted: list[tuple[str, int]] = []
        seen: set[str] = set()
        for out in request.outputs:
            if out.name not in sig.outputs:
                raise InvalidArgument(
                    f"unexpected inference output '{out.name}' for model '{sig.model}'"
                )
            if out.name not in seen:  # Triton answers a repeated output once
                seen.add(out.name)
                wanted.append((out.name, out.class_count))
        return wanted

    def _output(self, name: str, arr: Array, class_count: int, batch: int) -> Tensor:
        spec = self.signature.outputs[name]
        batched = self.signature.batched
        if spec.reshape is not None and -1 not in spec.dims:
            arr = arr.reshape([batch, *spec.dims] if batched else list(spec.dims))
        if class_count > 0:
            from modelyard.wire.classification import classify

            arr = classify(arr, class_count, spec.labels, batched)
            return Tensor(name, "BYTES", list(arr.shape), arr)
        if self._async is not None:
            if arr.dtype.kind in "OSU":
                return Tensor(name, "BYTES", list(arr.shape), arr)
            return Tensor(name, wire_datatype(arr.dtype), list(arr.shape), arr)
        return Tensor(name, spec.datatype, list(arr.shape), _as_dtype(arr, spec.datatype))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        self.runtime.unload()


def _as_dtype(arr: Array, datatype: str) -> Array:
    if datatype == "BYTES":
        return arr
    from modelyard.datatypes import numpy_dtype

    dtype = numpy_dtype(datatype)
    return arr if arr.dtype == dtype else np.asarray(arr, dtype=dtype)


def _merge(feeds: list[dict[str, Array]]) -> dict[str, Array]:
    if len(feeds) == 1:
        return feeds[0]
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def _flag(config: Any, key: str) -> bool:
    if key not in config.parameters:
        return False
    return str(config.parameters[key].string_value).strip().lower() in ("1", "true", "yes", "on")
