"""One model instance's worker process, seen from the server.

The server spawns ``python -m modelyard_worker`` with the model environment's interpreter,
hands it one end of a Unix socket pair and two shared-memory arenas (memfd: anonymous,
freed when both sides close it, and not limited by the size of ``/dev/shm``), and waits
for ``initialize`` to finish on the loading thread. After that the socket belongs to the
event loop: requests, responses, BLS calls, logs and metric updates are frames on it (see
``worker_lib/modelyard_worker/_wire.py``). A worker that exits fails exactly the requests
it held; the owner (:mod:`.runtime`) restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import socket
import subprocess
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard._procfs import tree_rss
from modelyard.errors import (
    AlreadyExists,
    ConfigError,
    Internal,
    InvalidArgument,
    ModelTooLarge,
    ModelyardError,
    NotFound,
    Unavailable,
    Unsupported,
)
from modelyard.runtimes import children
from modelyard.runtimes.base import Result
from modelyard.runtimes.python.worker_lib.modelyard_worker._wire import (
    INLINE,
    Arena,
    FrameReader,
    Outgoing,
    arena_offsets,
    tensors_of,
)
from modelyard.types import Array

log = logging.getLogger("modelyard.python")

WORKER_LIB = Path(__file__).parent / "worker_lib"

# TritonError codes (pb_utils.TritonError.*) -> the server's error types, with the statuses
# Triton's HTTP front end gives them (UNKNOWN, ALREADY_EXISTS and CANCELLED answer 400 there)
_ERRORS: dict[int, type[ModelyardError]] = {
    0: InvalidArgument,
    2: NotFound,
    3: InvalidArgument,
    4: Unavailable,
    5: Unsupported,
    6: InvalidArgument,
    7: InvalidArgument,
}
_LOG_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.DEBUG)


def model_error(message: str, code: int) -> ModelyardError:
    """A model's own error (``TritonError``) as the server's typed error, marked as the
    model's (``from_model``): some answers depend on who failed (the generate extension)."""
    error = _ERRORS.get(code, Internal)(message)
    error.from_model = True
    return error


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything needed to (re)start one instance."""

    model_name: str
    instance_name: str
    model_file: Path
    args: Mapping[str, str]
    config_json: str
    decoupled: bool
    python: Path
    env: Mapping[str, str]
    own_interpreter: bool  # True for the server's interpreter: keep its PYTHONPATH
    arena_bytes: int = 32 * 2**20
    arena_threshold: int = 64 * 2**10
    start_timeout: float = 300.0  # --model-load-timeout: initialize / auto_complete_config
    memory_limit: int = 0  # bytes a worker may reach while it starts (the budget); 0: none


class WorkerHooks:
    """What a worker may ask of the server while it runs (the runtime fills these in)."""

    bls: Callable[
        [dict[str, Any], list[tuple[str, str, Array]], WorkerProcess], Coroutine[Any, Any, None]
    ]
    metric_family: Callable[[str, str, str], None]
    metric: Callable[[str, dict[str, str], list[float] | None, object], Any]
    metric_update: Callable[[Any, str, float], None]
    release_metrics: Callable[[object], None]

    def __init__(self) -> None:
        self.bls = _no_bls
        self.metric_family = lambda *_: None
        self.metric = lambda *_: None
        self.metric_update = lambda *_: None
        self.release_metrics = lambda *_: None


async def _no_bls(msg: dict[str, Any], tensors: Any, worker: WorkerProcess) -> None:
    await worker.send_bls_reply(msg["id"], Unavailable("BLS is not available here"), None, True)


def start_worker_process(
    spec: WorkerSpec, mode: str, extra: Mapping[str, Any] | None = None
) -> tuple[subprocess.Popen[bytes], socket.socket, Arena, Arena]:
    """Spawns the process and sends it the ``init`` frame; returns before it answers."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    arenas: list[Arena] = []
    fds: list[int] = []
    try:
        for label in ("in", "out"):
            fd = os.memfd_create(f"modelyard-{spec.instance_name}-{label}", 0)
            os.ftruncate(fd, spec.arena_bytes)
            fds.append(fd)
            arenas.append(Arena(mmap.mmap(fd, spec.arena_bytes), spec.arena_threshold))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(spec.env)
        path = str(WORKER_LIB)
        if spec.own_interpreter and os.environ.get("PYTHONPATH"):
            path += os.pathsep + os.environ["PYTHONPATH"]
        env["PYTHONPATH"] = path
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            str(spec.python),
            "-m",
            "modelyard_worker",
            "--fd",
            str(child.fileno()),
            "--arena-in",
            str(fds[0]),
            "--arena-out",
            str(fds[1]),
            "--arena-threshold",
            str(spec.arena_threshold),
            "--instance",  # for ps and top: which model this process serves
            spec.instance_name,
            "--parent-pid",  # it dies with this process (PR_SET_PDEATHSIG, a watchdog)
            str(os.getpid()),
        ]
        try:
            proc = children.spawn(
                cmd, pass_fds=(child.fileno(), *fds), env=env, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise ConfigError(
                f"failed to start the Python worker of model '{spec.model_name}' with "
                f"{spec.python}: {exc}"
            ) from None
    except BaseException:
        parent.close()
        for arena in arenas:
            arena.close()
        raise
    finally:
        child.close()
        for fd in fds:
            os.close(fd)
    msg: dict[str, Any] = {
        "op": "init",
        "mode": mode,
        "name": spec.model_name,
        "instance": spec.instance_name,
        "model_file": str(spec.model_file),
        "args": dict(spec.args),
        "config": spec.config_json,
        "decoupled": spec.decoupled,
    }
    msg.update(extra or {})
    parent.sendall(b"".join(Outgoing(msg).frame()))
    # the server writes to "in" and reads "out"
    return proc, parent, arenas[0], arenas[1]


def read_until(
    sock: socket.socket,
    reader: FrameReader,
    ops: set[str],
    deadline: float,
    on_frame: Callable[[dict[str, Any], bytearray], None],
    check: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Blocking read (on a loading thread) until a frame whose op is in ``ops``; raises
    :class:`_TimedOut` at ``deadline`` and :class:`_Exited` when the worker goes away.

    ``check`` runs every ``_CHECK_EVERY`` seconds while the worker is silent (it raises to
    give up: the worker's memory passed the budget).
    """
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TimedOut()
        sock.settimeout(min(left, _CHECK_EVERY) if check is not None else left)
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            if check is not None:
                check()
            continue
        except OSError:
            data = b""
        if not data:
            raise _Exited()
        for msg, payload in reader.feed(data):
            if msg["op"] in ops:
                return msg
            on_frame(msg, payload)


_CHECK_EVERY = 0.05  # seconds between memory checks of a starting worker


class _Exited(Exception):
    """The worker closed its end before answering."""


class _TimedOut(Exception):
    """The worker did not answer before the load timeout."""


def _load_timeout(spec: WorkerSpec, step: str) -> Unavailable:
    return Unavailable(
        f"failed to load '{spec.model_name}': {step} did not finish within the model load "
        f"timeout of {spec.start_timeout:g} s (--model-load-timeout); its Python worker "
        f"(instance {spec.instance_name}) was killed"
    )


class WorkerProcess:
    """A started instance: call it with requests; it reports its own death."""

    _ids = itertools.count(1)

    def __init__(
        self, spec: WorkerSpec, hooks: WorkerHooks, on_exit: Callable[[WorkerProcess], None]
    ) -> None:
        self.spec = spec
        self.hooks = hooks
        self._on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader = FrameReader()
        self._early: list[tuple[dict[str, Any], bytearray]] = []
        self._arena_in: Arena | None = None
        self._arena_out: Arena | None = None
        self._transport: asyncio.Transport | None = None
        self._attaching: asyncio.Future[None] | None = None
        self._calls: dict[int, tuple[asyncio.Future[list[Result]], list[int]]] = {}
        self._streams: dict[int, list[asyncio.Queue[Result | None]]] = {}
        self._next = itertools.count(1)
        self._consumed: list[int] = []
        self._flush_scheduled = False
        self._metric_keys: dict[int, Any] = {}
        self._family_names: dict[int, str] = {}
        self.inflight = 0
        self.ready = False
        self.stopping = False
        self.async_model = False
        self.generation = next(self._ids)

    # --- start (loading thread) -------------------------------------------------------------
    def start(self) -> None:
        """Spawns and initialises the instance; raises ConfigError with the model's reason."""
        spec = self.spec
        self._reader = FrameReader()
        self._early = []
        self._metric_keys = {}
        self._family_names = {}
        proc, sock, arena_in, arena_out = start_worker_process(spec, "serve")
        self.proc, self._sock = proc, sock
        self._arena_in, self._arena_out = arena_in, arena_out
        try:
            msg = read_until(
                sock,
                self._reader,
                {"ready", "init_err"},
                time.monotonic() + spec.start_timeout,
                self._early_frame,
                self._check_memory if spec.memory_limit else None,
            )
        except _Exited:
            code = _wait(proc, 5)
            self._close_resources()
            raise ConfigError(
                f"failed to load '{spec.model_name}': its Python worker exited with code "
                f"{code} before initialize finished (its output is in the server log)"
            ) from None
        except _TimedOut:
            self.kill()
            _wait(proc, 5)
            self._close_resources()
            log.error("%s", _load_timeout(spec, "initialize"))
            raise _load_timeout(spec, "initialize") from None
        except BaseException:
            self.kill()
            _wait(proc, 5)  # reaped: no zombie, and its memory is back before we answer
            self._close_resources()
            raise
        if msg["op"] == "init_err":
            _wait(proc, 5)
            self._close_resources()
            raise ConfigError(f"Failed to initialize Python stub: {msg['e'].rstrip()}")
        self.async_model = bool(msg.get("async"))
        sock.settimeout(None)
        sock.setblocking(False)
        self.ready = True
        log.debug(
            "model '%s' instance %s ready (pid %s)", spec.model_name, spec.instance_name, proc.pid
        )

    def _check_memory(self) -> None:
        """A worker whose initialize passes the whole memory budget can never be served:
        stop it there (rather than let it take all it asks for) and say so with figures."""
        spec, proc = self.spec, self.proc
        assert proc is not None
        rss = tree_rss(proc.pid) or 0  # 0 once it is gone
        if rss > spec.memory_limit:
            raise ModelTooLarge(
                f"failed to load '{spec.model_name}': its Python worker processes reached "
                f"{rss} bytes ({rss / 2**20:.1f} MiB) of resident memory during initialize, "
                f"more than the whole memory budget of {spec.memory_limit} bytes "
                f"({spec.memory_limit / 2**20:.1f} MiB) (--memory-budget)",
                needed=rss,
            )

    def _early_frame(self, msg: dict[str, Any], payload: bytearray) -> None:
        op = msg["op"]
        if op in ("log", "mf", "m", "mv"):
            self._handle_side_frame(msg)
        elif op in ("bls", "ctl"):
            # during initialize the server has no event loop side for this worker yet: say
            # so at once rather than leave the model waiting until the start timeout
            reply = Outgoing({"op": "bls_r", "id": msg["id"], "final": True})
            reply.msg["e"] = [
                "calling other models (BLS, model control) from initialize is not supported "
                "by modelyard: make the call from execute",
                5,  # UNSUPPORTED
            ]
            assert self._sock is not None
            self._sock.sendall(b"".join(reply.frame()))
        else:
            self._early.append((msg, payload))

    # --- the event loop side ---------------------------------------------------------------
    async def _attach(self) -> None:
        if self._transport is not None:
            return
        if self._attaching is None:
            loop = asyncio.get_running_loop()
            self._attaching = loop.create_future()
            assert self._sock is not None
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: _Protocol(self), self._sock
                )
            except BaseException as exc:
                self._attaching.set_exception(exc)
                self._attaching = None
                raise
            self._transport = transport
            self._attaching.set_result(None)
            for msg, payload in self._early:
                self._frame(msg, payload)
            self._early = []
        else:
            await asyncio.shield(self._attaching)

    def _write(self, out: Outgoing, tensors: Sequence[tuple[str, Array]] = ()) -> list[int]:
        """Sends a frame; returns the arena offsets its tensors occupy."""
        assert self._transport is not None
        for name, arr in tensors:
            out.add(name, arr, self._arena_in)
        if self._consumed:
            out.msg["f"] = self._consumed
            self._consumed = []
        # written at once, not coalesced per loop iteration: measured, the worker starting
        # on the first request while the loop parses the next beats fewer writes (64k vs
        # 38k round trips/s at 16 in flight)
        self._transport.writelines(out.frame())
        return [spec[4] for spec in out.specs if spec[4] != INLINE]

    async def call(
        self, requests: list[dict[str, Any]], tensors: list[list[tuple[str, Array]]]
    ) -> list[Result]:
        """Runs one ``execute`` over these requests (each: outputs ``o``, request id ``rid``,
        parameters ``p``); returns one result per request."""
        await self._attach()
        if not self.ready:
            raise Unavailable(f"model '{self.spec.model_name}' instance is restarting")
        exec_id = next(self._next)
        flat: list[tuple[str, Array]] = []
        for spec, items in zip(requests, tensors, strict=True):
            spec["n"] = len(items)
            flat.extend(items)
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        used = self._write(Outgoing({"op": "exec", "id": exec_id, "reqs": requests}), flat)
        self._calls[exec_id] = (future, used)
        self.inflight += 1
        try:
            return await future
        finally:
            self.inflight -= 1
            self._calls.pop(exec_id, None)

    async def stream(
        self, request: dict[str, Any], tensors: list[tuple[str, Array]]
    ) -> AsyncGenerator[Result, None]:
        """A decoupled model's responses to one request, until its final flag."""
        await self._attach()
        if not self.ready:
            raise Unavailable(f"model '{self.spec.model_name}' instance is restarting")
        exec_id = next(self._next)
        request["n"] = len(tensors)
        queue: asyncio.Queue[Result | None] = asyncio.Queue()
        self._streams[exec_id] = [queue]
        used = self._write(Outgoing({"op": "exec", "id": exec_id, "reqs": [request]}), tensors)
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        self._calls[exec_id] = (future, used)
        self.inflight += 1
        final = False
        try:
            while True:
                item = await queue.get()
                if item is None:
                    final = True
                    return
                yield item
        finally:
            self.inflight -= 1
            self._streams.pop(exec_id, None)
            if not final:
                # the consumer left before the final flag (client gone): tell the model, as
                # Triton does, also when its execute has returned and a thread of its own
                # sends the responses (the usual decoupled pattern)
                self._cancel(exec_id)

    def _cancel(self, exec_id: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._write(Outgoing({"op": "cancel", "id": exec_id}))

    def _frame(self, msg: dict[str, Any], payload: bytearray) -> None:
        freed = msg.get("f")
        if freed and self._arena_in is not None:
            for off in freed:
                self._arena_in.free(off)
        op = msg["op"]
        if op == "resp":
            entry = self._calls.get(msg["id"])
            tensors = tensors_of(msg, payload, self._arena_out, copy=True)
            self._consume(arena_offsets(msg))
            if entry is None:
                return
            future, used = entry
            self._free_inputs(used)
            results: list[Result] = []
            pos = 0
            for spec in msg["rs"]:
                n = spec["n"]
                error = spec.get("e")
                result = Result(parameters=spec.get("p") or {})
                if error is not None:
                    result.error = model_error(error[0], error[1])
                    result.failed_execution = bool(spec.get("x"))
                for name, _, arr in tensors[pos : pos + n]:
                    result.outputs[name] = arr
                pos += n
                results.append(result)
            if not future.done():
                future.set_result(results)
        elif op == "stream":
            tensors = tensors_of(msg, payload, self._arena_out, copy=True)
            self._consume(arena_offsets(msg))
            queues = self._streams.get(msg["id"])
            if queues is None:
                return
            queue = queues[0]
            final = bool(msg.get("final"))
            if not msg.get("none"):  # a response (outputs or none), the final flag with it or not
                result = Result({name: arr for name, _, arr in tensors}, msg.get("p") or {})
                error = msg.get("e")
                if error is not None:
                    result.error = model_error(error[0], error[1])
                result.final = final
                queue.put_nowait(result)
            if final:
                queue.put_nowait(None)
        elif op == "done":
            entry = self._calls.pop(msg["id"], None)
            if entry is not None:
                self._free_inputs(entry[1])
                if not entry[0].done():
                    entry[0].set_result([])
        elif op in ("bls", "ctl"):
            tensors = tensors_of(msg, payload, self._arena_out, copy=True)
            self._consume(arena_offsets(msg))
            task = asyncio.get_running_loop().create_task(self.hooks.bls(msg, tensors, self))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
        elif op == "free":
            pass
        else:
            self._handle_side_frame(msg)

    def _free_inputs(self, used: list[int]) -> None:
        # the worker is done with a request's inputs once it answered it
        if self._arena_in is not None:
            for off in used:
                self._arena_in.free(off)

    def _consume(self, offsets: list[int]) -> None:
        if not offsets:
            return
        self._consumed.extend(offsets)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._consumed and self._transport is not None and not self._transport.is_closing():
            self._write(Outgoing({"op": "free"}))

    def _handle_side_frame(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "log":
            level = _LOG_LEVELS[int(msg.get("l", 0)) % 4]
            logging.getLogger(f"modelyard.model.{self.spec.model_name}").log(
                level, "%s] %s", msg.get("w", "model.py"), msg.get("m", "")
            )
        elif op == "mf":
            kind = ("counter", "gauge", "histogram")[int(msg["kind"])]
            self._family_names[msg["id"]] = msg["name"]
            try:
                self.hooks.metric_family(msg["name"], msg.get("desc", ""), kind)
            except ValueError as exc:
                log.warning("model '%s': %s", self.spec.model_name, exc)
        elif op == "m":
            family = self._family_names.get(msg["fam"])
            if family is not None:
                self._metric_keys[msg["id"]] = self.hooks.metric(
                    family, msg.get("labels") or {}, msg.get("buckets"), self
                )
        elif op == "mv":
            key = self._metric_keys.get(msg["id"])
            if key is not None:
                self.hooks.metric_update(key, msg["how"], float(msg["v"]))

    async def send_bls_reply(
        self,
        call_id: int,
        error: ModelyardError | None,
        outputs: Sequence[tuple[str, Array]] | None,
        final: bool,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        msg: dict[str, Any] = {"op": "bls_r", "id": call_id, "final": final}
        if error is not None:
            msg["e"] = [str(error), _code_of(error)]
        if parameters:
            msg["p"] = dict(parameters)
        self._write(Outgoing(msg), outputs or ())

    def connection_lost(self) -> None:
        """The socket closed: the process is gone or going. Fail what it held, naming the
        cause (its exit status, reaped off the event loop first)."""
        was_ready = self.ready
        self.ready = False
        self._transport = None
        task = asyncio.get_running_loop().create_task(self._after_exit(was_ready))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _after_exit(self, was_ready: bool) -> None:
        code = None
        if self.proc is not None:
            code = await asyncio.to_thread(_wait, self.proc, 2.0)
        if self.stopping:
            reason = "was unloaded"
        elif code is None:
            reason = "closed its connection"
        elif code < 0:
            reason = f"was killed by signal {-code}"
        else:
            reason = f"exited with code {code}"
        error_text = (
            f"the Python worker of model '{self.spec.model_name}' (instance "
            f"{self.spec.instance_name}) {reason} while executing the request"
        )
        for future, _ in list(self._calls.values()):
            if not future.done():
                future.set_exception(Unavailable(error_text + "; it is being restarted"))
        self._calls.clear()
        for queues in self._streams.values():
            for queue in queues:
                queue.put_nowait(Result(error=Unavailable(error_text)))
                queue.put_nowait(None)
        self._streams.clear()
        self.hooks.release_metrics(self)
        self._close_resources()
        if was_ready and not self.stopping:
            log.error("%s", error_text.replace(" while executing the request", ""))
            self._on_exit(self)

    def _close_resources(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._attaching = None
        for arena in (self._arena_in, self._arena_out):
            if arena is not None:
                with contextlib.suppress(BufferError, ValueError):
                    arena.close()
        self._arena_in = self._arena_out = None

    # --- stopping -----------------------------------------------------------------------
    def request_stop(self) -> None:
        """Asks for ``finalize`` (event loop thread)."""
        self.stopping = True
        if self._transport is not None and not self._transport.is_closing():
            self._write(Outgoing({"op": "fin"}))
        elif self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.setblocking(True)
                self._sock.sendall(b"".join(Outgoing({"op": "fin"}).frame()))

    def wait_exit(self, timeout: float) -> int | None:
        """Waits for the process to end (blocking); kills it after ``timeout``."""
        if self.proc is None:
            return None
        code = _wait(self.proc, timeout)
        if code is None:
            self.kill()
            code = _wait(self.proc, 5)
        return code

    def kill(self) -> None:
        """SIGKILL the worker and its process group (whatever the model started)."""
        if self.proc is not None:
            children.kill_group(self.proc)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _code_of(error: ModelyardError) -> int:
    """The TritonError code a model sees for a server error (BLS)."""
    for code, cls in (
        (2, NotFound),
        (3, InvalidArgument),
        (4, Unavailable),
        (5, Unsupported),
        (6, AlreadyExists),
    ):
        if isinstance(error, cls):
            return code
    return 1  # INTERNAL


_BACKGROUND: set[asyncio.Task[None]] = set()


class _Protocol(asyncio.Protocol):
    def __init__(self, worker: WorkerProcess) -> None:
        self._worker = worker
        self._reader = worker._reader

    def data_received(self, data: bytes) -> None:
        for msg, payload in self._reader.feed(data):
            try:
                self._worker._frame(msg, payload)
            except Exception:  # a bad frame must not kill the connection's other calls
                log.exception("model '%s': bad frame from worker", self._worker.spec.model_name)

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker.connection_lost()


def run_autocomplete(spec: WorkerSpec) -> dict[str, Any]:
    """Runs the model's static ``auto_complete_config`` in a short-lived worker."""
    proc, sock, arena_in, arena_out = start_worker_process(spec, "auto")
    timed_out = False
    try:
        msg = read_until(
            sock,
            FrameReader(),
            {"auto", "init_err"},
            time.monotonic() + spec.start_timeout,
            lambda *_: None,
        )
    except _Exited:
        raise ConfigError(
            f"failed to load '{spec.model_name}': its Python worker exited with code "
            f"{_wait(proc, 5)} during auto_complete_config (its output is in the server log)"
        ) from None
    except _TimedOut:
        timed_out = True
        raise _load_timeout(spec, "auto_complete_config") from None
    finally:
        if timed_out:
            children.kill_group(proc)
        sock.close()
        arena_in.close()
        arena_out.close()
        if _wait(proc, 10) is None:
            children.kill_group(proc)
            _wait(proc, 5)
    if msg["op"] == "init_err":
        raise ConfigError(f"Failed to initialize Python stub: {msg['e'].rstrip()}")
    config = msg["config"]
    assert isinstance(config, dict)
    return config
