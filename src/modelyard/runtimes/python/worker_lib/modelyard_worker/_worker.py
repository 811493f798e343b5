"""The worker: one model instance in its own process, talking to the server over a socket.

Reading: for a plain ``execute``, whichever thread needs a frame reads the socket itself
("leader reads"): the idle main thread blocks in ``recv`` and runs the request it gets on
the same thread, with no hand-off (a thread switch costs more than a small model); a
thread waiting for a BLS reply reads until its reply arrives, queueing anything else for
its owner, and wakes the other waiters when it stops so one of them takes over. For
``async def execute`` a reader thread feeds the asyncio loop instead. Writes from any
thread go through one lock. Nothing spins: every wait is a blocking read, lock or queue.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import inspect
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from modelyard_worker._wire import Arena, FrameReader, Outgoing, arena_offsets, tensors_of

_WAKE = object()  # "stop waiting and try to read the socket yourself"
_OWN_FILES = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))),)


class _Reply:
    """Where the reader thread puts a BLS call's responses (one, or a decoupled stream)."""

    __slots__ = ("arrived", "future", "items", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, streaming: bool = False
    ) -> None:
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.loop = loop
        self.future: asyncio.Future[Any] | None = (
            loop.create_future() if loop and not streaming else None
        )
        # a stream's items always land in the thread-safe queue (a model may iterate the
        # awaited result with a plain `for`, which blocks); `async for` waits on the event
        self.arrived: asyncio.Event | None = asyncio.Event() if loop and streaming else None

    def deliver(self, item: Any) -> None:
        if self.future is not None:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(_resolve, self.future, item)
            return
        self.items.put(item)
        if self.arrived is not None:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self.arrived.set)


def _resolve(future: asyncio.Future[Any], item: Any) -> None:
    if not future.done():
        future.set_result(item)


class Worker:
    def __init__(
        self, sock: socket.socket, arena_in: Arena | None, arena_out: Arena | None
    ) -> None:
        self.sock = sock
        self.arena_in = arena_in  # the server writes, we read
        self.arena_out = arena_out  # we write, the server reads
        self._send_lock = threading.Lock()
        self._consumed: list[int] = []  # server-arena regions we are done with
        self._replies: dict[int, _Reply] = {}
        self._next_id = 1
        self._execs: queue.SimpleQueue[Any] = queue.SimpleQueue()  # threaded mode
        self._pending: collections.deque[Any] = collections.deque()  # leader-reads mode
        self._read_lock = threading.Lock()
        self._frames = FrameReader()
        self._inbox = bytearray(1 << 18)
        self._inbox_view = memoryview(self._inbox)
        self._waiting: set[_Reply] = set()
        self.threaded = False  # True: a reader thread reads (async models)
        # under load, answers to a queue of quick requests leave in one write
        self._hold_output = False
        self._outbox: list[Any] = []
        self._outbox_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancelled: set[int] = set()
        self._metric_ids = 0
        self.model: Any = None
        self.pb: Any = None
        self.model_name = ""
        self.instance_name = ""
        self.decoupled = False

    # --- sending ---------------------------------------------------------------------
    def send(self, out: Outgoing, tensors: Sequence[tuple[Any, ...]] | None = None) -> None:
        with self._send_lock:
            if tensors:
                for item in tensors:  # (name, array) or (name, array, datatype)
                    out.add(item[0], item[1], self.arena_out, *item[2:])
            if self._consumed:
                out.msg["f"] = self._consumed
                self._consumed = []
            parts = out.frame()
            if self._hold_output and out.size < 4096:
                # more requests are queued: answer them together, a moment later
                self._outbox.extend(parts)
                self._outbox_bytes += sum(len(p) for p in parts)
                if self._outbox_bytes < 1 << 16:
                    return
                parts = self._take_outbox()
            elif self._outbox:
                parts = self._take_outbox() + parts
            if out.size < 4096:
                self.sock.sendall(b"".join(parts))
            else:
                self._sendmsg(parts)

    def _take_outbox(self) -> list[Any]:
        parts, self._outbox, self._outbox_bytes = self._outbox, [], 0
        return parts

    def flush(self) -> None:
        """Sends the answers held back while a queue of requests was being worked off."""
        with self._send_lock:
            if self._outbox:
                self.sock.sendall(b"".join(self._take_outbox()))

    def _sendmsg(self, parts: list[Any]) -> None:
        views = [memoryview(p).cast("B") for p in parts]
        while views:
            sent = self.sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def send_msg(self, msg: dict[str, Any]) -> None:
        self.send(Outgoing(msg))

    # --- reading ------------------------------------------------------------------------
    def read_forever(self) -> None:
        """The reader thread of threaded mode."""
        while True:
            self._read_once()

    def _read_once(self) -> None:
        """One blocking read, its frames dispatched (caller holds the read role)."""
        try:
            # into a buffer kept for the purpose: recv(256 KiB) would allocate (and, past
            # malloc's mmap threshold, map and unmap) that much on every call
            n = self.sock.recv_into(self._inbox)
        except OSError:
            n = 0
        if not n:
            # the server closed the connection (it is gone, or done with us): stop at
            # once, even if the model is stuck in execute. (Not PR_SET_PDEATHSIG: Linux
            # ties that to the thread that spawned us, and the server spawns from
            # short-lived threads.)
            os._exit(0)
        for msg, payload in self._frames.feed(self._inbox_view[:n]):
            self._dispatch(msg, payload)

    def _release_reading(self) -> None:
        self._read_lock.release()
        for reply in list(self._waiting):
            reply.items.put(_WAKE)

    def _wait(self, reply: _Reply) -> Any:
        """The next item for ``reply``, reading the socket ourselves if nobody else is."""
        if self.threaded:
            return reply.items.get()
        self._waiting.add(reply)
        try:
            while True:
                try:
                    item = reply.items.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if item is not _WAKE:
                        return item
                    continue
                if self._read_lock.acquire(blocking=False):
                    self._waiting.discard(reply)
                    try:
                        while reply.items.empty():
                            self._read_once()
                    finally:
                        self._release_reading()
                        self._waiting.add(reply)
                    continue
                item = reply.items.get()  # the reader hands it over, or wakes us
                if item is not _WAKE:
                    return item
        finally:
            self._waiting.discard(reply)

    def _dispatch(self, msg: dict[str, Any], payload: bytearray) -> None:
        freed = msg.get("f")
        if freed and self.arena_out is not None:
            with self._send_lock:
                for off in freed:
                    self.arena_out.free(off)
        op = msg["op"]
        if op == "exec":
            item = (msg, payload)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._start_async, item)
            elif self.threaded:
                self._execs.put(item)
            else:
                self._pending.append(item)
        elif op == "bls_r":
            tensors = tensors_of(msg, payload, self.arena_in, copy=True)
            self._consume(arena_offsets(msg))
            reply = self._replies.get(msg["id"])
            if reply is not None:
                if msg.get("final", True):
                    self._replies.pop(msg["id"], None)
                reply.deliver((msg, tensors))
        elif op == "cancel":
            self._cancelled.add(msg["id"])
        elif op == "fin":
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._execs.put, None)
                self._loop.call_soon_threadsafe(self._loop.stop)
            elif self.threaded:
                self._execs.put(None)
            else:
                self._pending.append(None)

    def _consume(self, offsets: list[int]) -> None:
        if offsets:
            with self._send_lock:
                self._consumed.extend(offsets)
            if threading.current_thread() is not threading.main_thread():
                # nothing may be sent soon: tell the server now so its arena does not fill
                self.send_msg({"op": "free"})

    # --- model execution ----------------------------------------------------------------
    def run_sync(self) -> None:
        pending = self._pending
        lock = self._read_lock
        while True:
            while not pending:
                self.flush()
                # another thread may be reading for its BLS reply: it queues our requests
                # in `pending`, so look again now and then instead of waiting it out
                if lock.acquire(timeout=0.05):
                    try:
                        if not pending:
                            self._read_once()
                    finally:
                        self._release_reading()
            item = pending.popleft()
            if item is None:
                self.flush()
                return
            started = time.perf_counter()
            # hold the answer back only while more requests wait and this one was quick:
            # a slow model's answers go out at once
            self._hold_output = bool(pending)
            self._execute(*item)
            self._hold_output = False
            if not pending or time.perf_counter() - started > 0.0002:
                self.flush()

    def run_async(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        # frames that arrived before the loop existed
        while True:
            try:
                item = self._execs.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return
            loop.call_soon(self._start_async, item)
        loop.run_forever()

    def _start_async(self, item: tuple[dict[str, Any], bytearray]) -> None:
        assert self._loop is not None
        self._loop.create_task(self._execute_async(*item))

    def _requests(self, msg: dict[str, Any], payload: bytearray) -> list[Any]:
        pb = self.pb
        tensors = tensors_of(msg, payload, self.arena_in)
        requests = []
        pos = 0
        for index, spec in enumerate(msg["reqs"]):
            n = spec["n"]
            inputs = [pb.Tensor._received(*t) for t in tensors[pos : pos + n]]
            pos += n
            req = pb.InferenceRequest(
                model_name=self.model_name,
                inputs=inputs,
                requested_output_names=spec["o"],
                request_id=spec.get("rid", ""),
                correlation_id=spec.get("corr", 0),
                flags=spec.get("fl", 0),
                timeout=spec.get("to", 0),
                parameters=spec.get("p") or {},
            )
            req._exec_id = msg["id"]
            req._index = index
            requests.append(req)
        return requests

    def _execute(self, msg: dict[str, Any], payload: bytearray) -> None:
        requests = self._requests(msg, payload)
        try:
            result = self.model.execute(requests)
        except BaseException as exc:
            self._finish(msg, requests, None, exc)
            return
        self._finish(msg, requests, result, None)

    async def _execute_async(self, msg: dict[str, Any], payload: bytearray) -> None:
        requests = self._requests(msg, payload)
        try:
            result = self.model.execute(requests)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            self._finish(msg, requests, None, exc)
            return
        self._finish(msg, requests, result, None)

    def _finish(
        self, msg: dict[str, Any], requests: list[Any], result: Any, exc: BaseException | None
    ) -> None:
        exec_id = msg["id"]
        self._cancelled.discard(exec_id)
        consumed = arena_offsets(msg)
        if consumed:
            with self._send_lock:
                self._consumed.extend(consumed)
        if self.decoupled:
            if exc is not None:
                error = [
                    f"Failed to process the request(s) for model '{self.instance_name}', "
                    f"message: {self._error_text(exc)}",
                    1,
                ]
                for index in range(len(requests)):
                    self.send_stream_raw(exec_id, index, None, error, final=True)
            elif result is not None:
                error = [
                    "Python model '"
                    + self.instance_name
                    + "' is using the decoupled mode and the execute function must return None.",
                    1,
                ]
                for index in range(len(requests)):
                    self.send_stream_raw(exec_id, index, None, error, final=True)
            self.send_msg({"op": "done", "id": exec_id})
            return
        out = Outgoing({"op": "resp", "id": exec_id})
        specs: list[dict[str, Any]] = []
        tensors: list[tuple[Any, ...]] = []
        problem = self._check_result(requests, result, exc)
        if problem is not None:
            # "x": the execution itself failed (Triton counts these requests as failures;
            # an error *response* counts as a success in its statistics)
            specs = [{"n": 0, "e": problem, "x": 1} for _ in requests]
        else:
            for req, response in zip(requests, result):
                spec, outs = self._response_parts(req, response)
                specs.append(spec)
                tensors.extend(outs)
        out.msg["rs"] = specs
        self.send(out, tensors)

    def _check_result(
        self, requests: list[Any], result: Any, exc: BaseException | None
    ) -> list[Any] | None:
        pb = self.pb
        prefix = f"Failed to process the request(s) for model '{self.instance_name}', message: "
        if exc is not None:
            return [prefix + self._error_text(exc), pb.TritonError.INTERNAL]
        if result is None:
            result = []
        if not isinstance(result, (list, tuple)):
            return [
                prefix + f"Expected a list in the execute return, found type '{type(result)}'.",
                pb.TritonError.INTERNAL,
            ]
        if len(result) != len(requests):
            return [
                prefix + "Number of InferenceResponse objects do not match the number of "
                f"InferenceRequest objects. InferenceRequest(s) size is:{len(requests)}, and "
                f"InferenceResponse(s) size is:{len(result)}\n",
                pb.TritonError.INTERNAL,
            ]
        for response in result:
            if not isinstance(response, pb.InferenceResponse):
                return [
                    prefix + "Expected an 'InferenceResponse' object in the execute function "
                    f"return list, found type '{type(response)}'.",
                    pb.TritonError.INTERNAL,
                ]
        return None

    def _response_parts(
        self, req: Any, response: Any
    ) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        if response is None:
            return {"n": 0}, []
        if response.has_error():
            err = response.error()
            return {"n": 0, "e": [err.message(), err.code()]}, []
        wanted = req.requested_output_names()
        outs = [t._wire() for t in response.output_tensors() if not wanted or t.name() in wanted]
        spec: dict[str, Any] = {"n": len(outs)}
        if response._parameters:
            spec["p"] = response._parameters
        return spec, outs

    def _error_text(self, exc: BaseException) -> str:
        """Triton's form: the exception, then the Python frames innermost first."""
        lines = [f"{type(exc).__name__}: {exc}", "", "At:"]
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if not frame.filename.startswith(_OWN_FILES):  # the model's frames only
                lines.append(f"  {frame.filename}({frame.lineno}): {frame.name}")
        return "\n".join(lines) + "\n"

    # --- decoupled responses --------------------------------------------------------------
    def send_stream(self, exec_id: int, index: int, response: Any, final: bool) -> None:
        if response is None:  # the final flag alone (``send(flags=FINAL)``): no response
            self.send(
                Outgoing({"op": "stream", "id": exec_id, "r": index, "final": final, "none": 1})
            )
            return
        if response.has_error():
            err = response.error()
            self.send_stream_raw(exec_id, index, None, [err.message(), err.code()], final)
            return
        outs = [t._wire() for t in response.output_tensors()]
        self.send_stream_raw(exec_id, index, outs, None, final, response._parameters)

    def send_stream_raw(
        self,
        exec_id: int,
        index: int,
        outs: list[tuple[Any, ...]] | None,
        error: list[Any] | None,
        final: bool,
        params: dict[str, Any] | None = None,
    ) -> None:
        msg: dict[str, Any] = {"op": "stream", "id": exec_id, "r": index, "final": final}
        if error is not None:
            msg["e"] = error
        if params:
            msg["p"] = params
        self.send(Outgoing(msg), outs)

    def is_cancelled(self, exec_id: int, index: int) -> bool:
        return exec_id in self._cancelled

    # --- BLS ------------------------------------------------------------------------------
    def _bls_frame(self, request: Any, decoupled: bool, reply: _Reply) -> int:
        with self._send_lock:
            call_id = self._next_id
            self._next_id += 1
        self._replies[call_id] = reply
        msg: dict[str, Any] = {
            "op": "bls",
            "id": call_id,
            "model": request._model_name,
            "ver": request._model_version,
            "o": request._requested,
            "dec": bool(decoupled),
        }
        if request._parameters:
            msg["p"] = request._parameters
        if request._request_id:
            msg["rid"] = request._request_id
        if request._timeout:
            msg["to"] = request._timeout
        self.send(Outgoing(msg), [t._wire() for t in request._inputs])
        return call_id

    def _response_of(self, item: tuple[dict[str, Any], list[Any]]) -> Any:
        pb = self.pb
        msg, tensors = item
        error = msg.get("e")
        if error is not None:
            return pb.InferenceResponse(error=pb.TritonError(error[0], error[1]))
        return pb.InferenceResponse(
            [pb.Tensor._received(*t) for t in tensors], parameters=msg.get("p")
        )

    def bls(self, request: Any, decoupled: bool) -> Any:
        reply = _Reply()
        self._bls_frame(request, decoupled, reply)
        if not decoupled:
            return self._response_of(self._wait(reply))
        return self._bls_stream(reply)

    def _bls_stream(self, reply: _Reply) -> Iterator[Any]:
        while True:
            msg, tensors = self._wait(reply)
            # the final flag alone arrives as an empty response, as Triton hands it out
            yield self._response_of((msg, tensors))
            if msg.get("final", True):
                return

    async def bls_async(self, request: Any, decoupled: bool) -> Any:
        loop = asyncio.get_running_loop()
        reply = _Reply(loop, streaming=decoupled)
        self._bls_frame(request, decoupled, reply)
        if not decoupled:
            assert reply.future is not None
            return self._response_of(await reply.future)
        return _AsyncStream(self, reply)

    # --- model control (pb_utils.load_model and friends) ------------------------------------
    def control(self, action: str, **fields: Any) -> dict[str, Any]:
        reply = _Reply()
        with self._send_lock:
            call_id = self._next_id
            self._next_id += 1
        self._replies[call_id] = reply
        msg: dict[str, Any] = {"op": "ctl", "id": call_id, "action": action}
        msg.update(fields)
        self.send_msg(msg)
        answer, _ = self._wait(reply)
        error = answer.get("e")
        if error is not None:
            raise self.pb.TritonModelException(error[0])
        return answer.get("p") or {}

    # --- logging and metrics --------------------------------------------------------------
    def log(self, level: int, message: str, where: str) -> None:
        self.send_msg({"op": "log", "l": level, "m": message, "w": where})

    def _new_metric_id(self) -> int:
        with self._send_lock:
            self._metric_ids += 1
            return self._metric_ids

    def metric_family(self, name: str, description: str, kind: int) -> int:
        fid = self._new_metric_id()
        self.send_msg({"op": "mf", "id": fid, "name": name, "desc": description, "kind": kind})
        return fid

    def metric(self, family: int, labels: dict[str, str], buckets: list[float] | None) -> int:
        mid = self._new_metric_id()
        self.send_msg({"op": "m", "id": mid, "fam": family, "labels": labels, "buckets": buckets})
        return mid

    def metric_update(self, metric: int, how: str, value: float) -> None:
        self.send_msg({"op": "mv", "id": metric, "how": how, "v": value})


class _AsyncStream:
    """What ``await request.async_exec(decoupled=True)`` returns: the responses, for a
    plain ``for`` (as in Triton: it blocks until each arrives) or ``async for``."""

    def __init__(self, worker: Worker, reply: _Reply) -> None:
        self._worker = worker
        self._reply = reply
        self._done = False

    def _next_item(self, item: Any) -> Any:
        msg, tensors = item
        if msg.get("final", True):
            self._done = True  # the final flag alone arrives as an empty response
        return self._worker._response_of((msg, tensors))

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        arrived = self._reply.arrived
        assert arrived is not None
        while True:
            try:
                item = self._reply.items.get_nowait()
            except queue.Empty:
                arrived.clear()
                if self._reply.items.empty():
                    await arrived.wait()
                continue
            return self._next_item(item)

    def __iter__(self) -> _AsyncStream:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        return self._next_item(self._worker._wait(self._reply))


def import_model(model_file: str) -> Any:
    """Imports ``model.py`` as Triton does: its folder first on ``sys.path`` (so sibling
    modules import), under the module name ``model``."""
    folder = os.path.dirname(os.path.abspath(model_file))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("model", model_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {model_file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "TritonPythonModel"):
        raise AttributeError(f"{model_file} defines no class TritonPythonModel")
    return module.TritonPythonModel


def is_async_model(cls: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(cls, "execute", None))


def error_message(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
