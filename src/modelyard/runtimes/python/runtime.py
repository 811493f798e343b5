"""A Python-backend model version: its instances' worker processes, dispatch, restarts.

Requests go to the ready instance with the fewest requests in flight. A worker that dies
fails only what it held; a new one is started in the background (with backoff if it keeps
failing) while the other instances keep serving. A request that outlives the execute
timeout means the model hangs: its worker is killed, which frees the instance for the
next request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from modelyard.errors import ModelyardError, Unavailable, Unsupported
from modelyard.runtimes.base import Result
from modelyard.runtimes.python._process import WorkerHooks, WorkerProcess, WorkerSpec
from modelyard.types import Array, InferRequest

log = logging.getLogger("modelyard.python")

# request parameters that belong to the protocol, not to the model
_PROTOCOL_PARAMETERS = frozenset({"binary_data_output", "binary_data", "classification"})

_MAX_BACKOFF = 30.0


class PythonRuntime:
    """Implements the async runtime interface the scheduler uses for process-backed models."""

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        hooks: WorkerHooks,
        execute_timeout: float = 0.0,
    ) -> None:
        self.model_name = specs[0].model_name
        self.decoupled = specs[0].decoupled
        self.workers = [WorkerProcess(spec, hooks, self._exited) for spec in specs]
        self._timeout = execute_timeout or None
        self._closed = False
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restarts: set[asyncio.Task[None]] = set()
        # True: a dynamic batch comes as one request of stacked tensors (a model of the
        # server's own, such as an ONNX model placed in a process), not as Triton's list
        self.stacks_batches = False

    # --- lifecycle (loading thread) ---------------------------------------------------------
    def start(self) -> None:
        """Starts every instance (in parallel when there are several); all or nothing."""
        if len(self.workers) == 1:
            self.workers[0].start()
            return
        errors: list[BaseException] = []

        def run(worker: WorkerProcess) -> None:
            try:
                worker.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.unload()
            raise errors[0]

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None and w.ready]

    def unload(self) -> None:
        """Finalizes every instance (blocking; on a worker thread)."""
        self._closed = True
        loop = self._loop
        for worker in self.workers:
            if loop is not None and loop.is_running() and not loop.is_closed():
                done = threading.Event()

                def stop(w: WorkerProcess = worker, ev: threading.Event = done) -> None:
                    try:
                        w.request_stop()
                    finally:
                        ev.set()

                loop.call_soon_threadsafe(stop)
                done.wait(5)
            else:
                worker.request_stop()
        for worker in self.workers:
            worker.wait_exit(timeout=10)
            if loop is None or not loop.is_running():
                worker._close_resources()
        for task in list(self._restarts):
            task.cancel()

    # --- requests (event loop) --------------------------------------------------------------
    def infer(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        raise Unsupported(
            f"model '{self.model_name}' runs in its own process: use the async interface"
        )

    async def infer_async(
        self, inputs: Mapping[str, Array], outputs: Sequence[str], request: InferRequest
    ) -> Result:
        results = await self.infer_batch([(inputs, outputs, request)])
        return results[0]  # an error in it is raised by the scheduler, after its statistics

    async def infer_batch(
        self, calls: Sequence[tuple[Mapping[str, Array], Sequence[str], InferRequest]]
    ) -> list[Result]:
        """Several requests in one ``execute`` (dynamic batching), one result each."""
        worker = await self._pick()
        specs = [_request_spec(outputs, request) for _, outputs, request in calls]
        call = worker.call(specs, [list(inputs.items()) for inputs, _, _ in calls])
        try:
            return await asyncio.wait_for(call, self._timeout) if self._timeout else await call
        except TimeoutError:
            self._hung(worker)
            raise Unavailable(
                f"model '{self.model_name}' did not answer within {self._timeout:g} s: its "
                "worker was stopped and is being restarted"
            ) from None

    async def stream_async(
        self, inputs: Mapping[str, Array], outputs: Sequence[str], request: InferRequest
    ) -> AsyncIterator[Result]:
        """A decoupled model's responses (each checked for errors by the caller)."""
        worker = await self._pick()
        stream = worker.stream(_request_spec(outputs, request), list(inputs.items()))
        try:
            while True:
                try:
                    nxt = stream.__anext__()
                    item = await (asyncio.wait_for(nxt, self._timeout) if self._timeout else nxt)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self._hung(worker)
                    raise Unavailable(
                        f"model '{self.model_name}' sent no response within "
                        f"{self._timeout:g} s: its worker was stopped and is being restarted"
                    ) from None
                yield item
        finally:
            await stream.aclose()

    async def _pick(self) -> WorkerProcess:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        while True:
            ready = [w for w in self.workers if w.ready]
            if ready:
                return min(ready, key=lambda w: w.inflight)
            if self._closed:
                raise Unavailable(f"model '{self.model_name}' is being unloaded")
            changed = self._event()
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), self._timeout or 60.0)
            except TimeoutError:
                raise Unavailable(
                    f"model '{self.model_name}' has no running instance: its workers are restarting"
                ) from None

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _hung(self, worker: WorkerProcess) -> None:
        log.error(
            "model '%s' (instance %s) exceeded the execute timeout of %g s: killing its worker",
            self.model_name,
            worker.spec.instance_name,
            self._timeout,
        )
        worker.kill()

    # --- restarts ---------------------------------------------------------------------------
    def _exited(self, worker: WorkerProcess) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._restart(worker))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, worker: WorkerProcess) -> None:
        await asyncio.to_thread(worker.wait_exit, 5)
        delay = 0.5
        while not self._closed:
            try:
                await asyncio.to_thread(worker.start)
            except (ModelyardError, OSError) as exc:
                log.error(
                    "model '%s' instance %s failed to restart (next try in %.1f s): %s",
                    self.model_name,
                    worker.spec.instance_name,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            if self._closed:
                worker.request_stop()
                await asyncio.to_thread(worker.wait_exit, 10)
                return
            log.info("model '%s' instance %s restarted", self.model_name, worker.spec.instance_name)
            self._event().set()
            return


def _request_spec(outputs: Sequence[str], request: InferRequest) -> dict[str, Any]:
    spec: dict[str, Any] = {"o": list(outputs)}
    if request.id:
        spec["rid"] = request.id
    params = {k: v for k, v in request.parameters.items() if k not in _PROTOCOL_PARAMETERS}
    if params:
        spec["p"] = params
    timeout = request.parameters.get("timeout")
    if isinstance(timeout, int):
        spec["to"] = timeout
    return spec
