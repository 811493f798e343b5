"""The run: read the mix, measure cold starts, then step the load up until the SLO breaks.

    result = await run_loadtest(Options(url="http://127.0.0.1:8000", slo=Slo(p99_ms=50),
                                        plan=StepPlan(start=10, step=2, factor=True, maximum=5000)))
    result.recommendation.invocations_per_instance_per_minute

Everything happens on one event loop in one thread, so the CPU the process spends is the load
generator's own, measured per step (``time.process_time``) and reported per request. Progress
goes to ``on_event`` (the CLI draws it); nothing here prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np

from modelyard.errors import ModelNotFound, ModelyardError, Unavailable
from modelyard.loadtest._http import Call, Pool, Target
from modelyard.loadtest.plan import (
    StepPlan,
    choose_models,
    constant_arrivals,
    next_level,
    poisson_arrivals,
)
from modelyard.loadtest.policy import Recommendation, Slo, judge, recommend
from modelyard.loadtest.stats import StepResult, summarize
from modelyard.loadtest.workload import (
    MixEntry,
    case_inputs,
    generate_inputs,
    infer_request,
    load_entry_cases,
    model_path,
)
from modelyard.wire.v2 import decode_infer_response

__all__ = ["Event", "LoadTestFailed", "ModelInfo", "Options", "Result", "run_loadtest"]

_TICK = 0.25  # seconds between progress events


class LoadTestFailed(ModelyardError):
    """The run cannot start or go on (a model's first request fails, the server is gone)."""


@dataclass(frozen=True, slots=True)
class Options:
    url: str
    slo: Slo
    plan: StepPlan
    mix: tuple[MixEntry, ...] = ()  # empty: every model of the repository index
    closed_loop: bool = False  # the plan's levels are then concurrencies
    step_seconds: float = 10.0
    warmup_seconds: float = 1.0  # sent at the level but not measured, before each window
    max_requests: int | None = None
    max_seconds: float | None = None
    timeout: float = 30.0
    max_connections: int = 512
    instances: int = 1
    headroom: float = 0.5
    seed: int = 0
    protocol: str = "v2"
    endpoint: str = "loadtest"
    headers: dict[str, str] = field(default_factory=dict)
    batch_size: int = 1
    dim_size: int = 1
    arrivals: str = "poisson"  # or "constant"
    cold_start: str = "auto"  # measure unloaded models; "unload" first; "skip"
    bodies_per_model: int = 4
    verify_tls: bool = True


@dataclass(slots=True)
class ModelInfo:
    name: str
    version: str
    weight: float
    source: str  # "generated" or "cases: <path>"
    bodies: int
    request_bytes: int  # mean size of a whole request
    was_loaded: bool | None = None  # per the repository index, before the first request
    cold_start_ms: float | None = None  # the first request to the unloaded model
    first_ms: float | None = None  # the first request, loaded or not
    warm_ms: float | None = None  # the request right after it
    raws: list[bytes] = field(default_factory=list, repr=False)


@dataclass(frozen=True, slots=True)
class Event:
    """Progress: ``kind`` is "phase", "step", "tick" or "done"."""

    kind: str
    text: str = ""
    step: int = 0
    level: float = 0.0
    elapsed: float = 0.0
    seconds: float = 0.0
    sent: int = 0
    answered: int = 0
    errors: int = 0
    result: StepResult | None = None


@dataclass(slots=True)
class Result:
    options: Options
    target: str
    models: list[ModelInfo]
    steps: list[StepResult]
    recommendation: Recommendation
    stopped_by: str
    warnings: list[str]
    elapsed_s: float
    started_at: float  # time.time()


async def run_loadtest(
    options: Options, on_event: Callable[[Event], None] = lambda e: None
) -> Result:
    target = Target.from_url(options.url)
    started_at, t0 = time.time(), time.perf_counter()
    setup = Pool(target, max_connections=1, timeout=options.timeout, full=True,
                 verify_tls=options.verify_tls)  # fmt: skip
    pool = Pool(
        target,
        max_connections=options.max_connections,
        timeout=options.timeout,
        verify_tls=options.verify_tls,
    )
    rng = np.random.default_rng(options.seed)
    try:
        on_event(Event("phase", f"reading the repository index of {target}"))
        index = await _get_json(setup, "POST", "/v2/repository/index", options.headers, target)
        entries = list(options.mix) or _from_index(index, target)
        models = [await _prepare(setup, e, options, target, index, rng) for e in entries]
        if options.cold_start != "skip":
            for m in models:
                await _first_requests(setup, m, options, target, on_event)
        setup.close()
        steps, stopped_by = await _steps(pool, models, options, rng, t0, on_event)
    finally:
        setup.close()
        pool.close()
    recommendation = recommend(
        steps,
        options.slo,
        instances=options.instances,
        headroom=options.headroom,
        stopped_by=stopped_by,
    )
    warnings = _warnings(steps, options, pool.peak_connections)
    return Result(
        options, str(target), models, steps, recommendation, stopped_by, warnings,
        time.perf_counter() - t0, started_at,
    )  # fmt: skip


async def _get_json(
    pool: Pool, method: str, path: str, headers: dict[str, str], target: Target
) -> Any:
    call = await pool.request(method, path, b"", headers)
    if call.error:
        raise Unavailable(f"cannot reach {target}: {call.error.split(': ', 1)[-1]}")
    if call.status != 200:
        hint = " (send credentials with --header)" if call.status in (401, 403) else ""
        raise LoadTestFailed(
            f"{method} {target}{path}: HTTP {call.status}: {_text(call.body)}{hint}"
        )
    try:
        return json.loads(call.body)
    except ValueError:
        raise LoadTestFailed(f"{method} {target}{path}: the answer is not JSON") from None


def _from_index(index: Any, target: Target) -> list[MixEntry]:
    names = sorted({str(row["name"]) for row in index if isinstance(row, dict) and "name" in row})
    if not names:
        raise LoadTestFailed(
            f"the repository index of {target} lists no model: name one with --model"
        )
    return [MixEntry(name) for name in names]


def _state(index: Any, name: str, version: str) -> str:
    rows = [r for r in index if isinstance(r, dict) and r.get("name") == name]
    if version:
        rows = [r for r in rows if str(r.get("version", "")) == version]
    return "READY" if any(r.get("state") == "READY" for r in rows) else ""


async def _prepare(
    pool: Pool,
    entry: MixEntry,
    options: Options,
    target: Target,
    index: Any,
    rng: np.random.Generator,
) -> ModelInfo:
    call = await pool.request("GET", model_path(entry.name, entry.version), b"", options.headers)
    if call.error:
        raise Unavailable(f"cannot reach {target}: {call.error}")
    if call.status == 404:
        known = sorted({str(r.get("name")) for r in index if isinstance(r, dict)})
        listing = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") or "none"
        raise ModelNotFound(
            f"model '{entry.label}' is not on {target}: {_text(call.body)} (the repository "
            f"index lists: {listing})"
        )
    if call.status != 200:
        raise LoadTestFailed(f"metadata of '{entry.label}': HTTP {call.status}: {_text(call.body)}")
    meta = json.loads(call.body)
    inputs = list(meta.get("inputs") or [])
    outputs = [str(o["name"]) for o in meta.get("outputs") or []]
    if entry.cases is not None:
        bodies = case_inputs(load_entry_cases(entry), inputs)
        source = f"cases: {entry.cases}"
    else:
        bodies = [
            generate_inputs(
                inputs,
                rng,
                batch_size=entry.batch_size or options.batch_size,
                dim_size=entry.dim_size or options.dim_size,
                shapes=entry.shapes,
            )
            for _ in range(options.bodies_per_model)
        ]
        source = "generated"
    raws = [
        infer_request(
            target,
            options.protocol,
            entry.name,
            entry.version,
            tensors,
            outputs,
            options.headers,
            options.endpoint,
        )
        for tensors in bodies
    ]
    return ModelInfo(
        name=entry.name,
        version=entry.version,
        weight=entry.weight,
        source=source,
        bodies=len(raws),
        request_bytes=sum(map(len, raws)) // len(raws),
        was_loaded=_state(index, entry.name, entry.version) == "READY",
        raws=raws,
    )


async def _first_requests(
    pool: Pool, m: ModelInfo, options: Options, target: Target, on_event: Callable[[Event], None]
) -> None:
    """The first request (a cold start when the model was not loaded), then a warm one."""
    if options.cold_start == "unload" and m.was_loaded:
        path = f"/v2/repository/models/{quote(m.name, safe='')}/unload"
        call = await pool.request("POST", path, b"", options.headers)
        if call.status != 200:
            raise LoadTestFailed(
                f"--cold-start unload: unloading '{m.name}' failed: HTTP {call.status}: "
                f"{_text(call.body) or call.error} (the server must allow model control)"
            )
        m.was_loaded = False
    on_event(Event("phase", f"first request to {m.name}" + ("" if m.was_loaded else " (cold)")))
    for attempt in ("first", "warm"):
        call = await pool.call(m.raws[0])
        if call.error or call.status != 200:
            raise LoadTestFailed(
                f"model '{m.name}': the {attempt} request failed: "
                f"{call.error or f'HTTP {call.status}: {_text(call.body)}'} (request shapes: set "
                "--batch-size/--dim-size, or shapes or cases in a --mix file)"
            )
        _check_answer(m, call)
        ms = (call.done - call.sent) * 1e3
        if attempt == "first":
            m.first_ms = ms
            m.cold_start_ms = None if m.was_loaded else ms
        else:
            m.warm_ms = ms


def _check_answer(m: ModelInfo, call: Call) -> None:
    length = call.headers.get("inference-header-content-length")
    if length is None and "json-header-size=" in call.headers.get("content-type", ""):
        length = call.headers["content-type"].rsplit("=", 1)[-1]
    try:
        decode_infer_response(call.body, int(length) if length is not None else None)
    except Exception as err:
        raise LoadTestFailed(f"model '{m.name}': its answer does not decode: {err}") from None


async def _steps(
    pool: Pool,
    models: list[ModelInfo],
    options: Options,
    rng: np.random.Generator,
    t0: float,
    on_event: Callable[[Event], None],
) -> tuple[list[StepResult], str]:
    steps: list[StepResult] = []
    history: list[tuple[float, bool]] = []
    budget = [options.max_requests if options.max_requests is not None else math.inf]
    step_length = options.warmup_seconds + options.step_seconds
    while (level := next_level(options.plan, history)) is not None:
        if budget[0] <= 0:
            return steps, "request-cap"
        if (
            steps
            and options.max_seconds is not None
            and time.perf_counter() - t0 + step_length > options.max_seconds
        ):
            return steps, "time-cap"
        on_event(Event("step", step=len(steps) + 1, level=level, seconds=step_length))
        step = judge(
            await _one_step(pool, models, level, options, rng, budget, on_event), options.slo
        )
        steps.append(step)
        on_event(Event("done", step=len(steps), level=level, result=step))
        if step.verdict == "client":
            return steps, "client"
        history.append((level, step.verdict == "pass"))
        if step.ok == 0 and not any(ok for _, ok in history):
            break  # nothing answers at all: stepping up cannot help
    if budget[0] <= 0:
        return steps, "request-cap"
    return steps, "max-level" if all(ok for _, ok in history) else ""


async def _one_step(
    pool: Pool,
    models: list[ModelInfo],
    level: float,
    options: Options,
    rng: np.random.Generator,
    budget: list[float],
    on_event: Callable[[Event], None],
) -> StepResult:
    loop = asyncio.get_running_loop()
    weights = [m.weight for m in models]
    calls: list[Call] = []
    state = {"answered": 0, "errors": 0, "in_flight": 0}
    first_error = [""]
    drained = asyncio.Event()
    capped = asyncio.Event()  # the request cap was reached
    closed = options.closed_loop
    length = options.warmup_seconds + options.step_seconds
    sending = [True]

    def on_done(call: Call) -> None:
        state["in_flight"] -= 1
        state["answered"] += 1
        if call.error or call.status != 200:
            state["errors"] += 1
            if not first_error[0]:
                first_error[0] = call.error or f"HTTP {call.status}: {_text(call.body)}"
        if closed and sending[0] and budget[0] > 0:
            now = time.perf_counter()
            if now < end:
                submit(now)
        elif state["in_flight"] == 0 and not sending[0]:
            drained.set()

    keys: list[int] = choose_models(weights, 1 << 16, rng).tolist()  # reused cyclically
    raws = [m.raws for m in models]
    counter = [0]

    def submit(at: float) -> None:
        i = counter[0]
        counter[0] += 1
        key = keys[i & 0xFFFF]
        bodies = raws[key]
        call = Call(bodies[i % len(bodies)], at, key)
        call.submitted = time.perf_counter()
        budget[0] -= 1
        if budget[0] <= 0:
            capped.set()
        state["in_flight"] += 1
        calls.append(call)
        pool.submit(call, on_done)

    await pool.warm(int(level) if closed else min(64, math.ceil(level * 0.01) + 2))
    start = time.perf_counter() + 0.005
    end = start + length
    window = [start + options.warmup_seconds, end]
    cpu = [0.0, 0.0]
    ticker = loop.create_task(_ticks(on_event, start, length, state, counter))

    async def meter() -> None:
        await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
        cpu[0] = time.process_time()

    metering = loop.create_task(meter())
    try:
        if closed:
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            for _ in range(int(level)):
                if budget[0] > 0:
                    submit(time.perf_counter())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(capped.wait(), max(0.0, end - time.perf_counter()))
        else:
            make = poisson_arrivals if options.arrivals == "poisson" else None
            offsets = make(level, length, rng) if make else constant_arrivals(level, length)
            await _send_open(offsets + start, submit, budget)
        now = time.perf_counter()
        if now < end:  # the request cap ended the step early
            window[1] = now
        await metering
        cpu[1] = time.process_time()
        sending[0] = False
        if state["in_flight"] > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), timeout=options.timeout + 5)
    finally:
        ticker.cancel()
        metering.cancel()
    return summarize(
        level,
        "closed" if closed else "open",
        calls,
        (window[0], window[1]),
        [m.name for m in models],
        client_cpu_s=max(0.0, cpu[1] - cpu[0]),
        peak_connections=pool.peak_connections,
        first_error=first_error[0],
    )


async def _send_open(
    at: np.ndarray[Any, Any], submit: Callable[[float], None], budget: list[float]
) -> None:
    """Hand each call over at its time: those due within half a millisecond go together, so a
    coarse timer costs at most that much earliness (counted from the real send) and never
    lateness the client could hide."""
    n, i = len(at), 0
    times = at.tolist()
    while i < n and budget[0] > 0:
        now = time.perf_counter()
        while i < n and times[i] <= now + 0.0005 and budget[0] > 0:
            submit(times[i])
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, times[i] - time.perf_counter() - 0.0005))
    if i >= n:  # the schedule is done; the step ends at its end, not at the last arrival
        return


async def _ticks(
    on_event: Callable[[Event], None],
    start: float,
    length: float,
    state: dict[str, int],
    counter: list[int],
) -> None:
    while True:
        await asyncio.sleep(_TICK)
        on_event(
            Event(
                "tick",
                elapsed=min(length, max(0.0, time.perf_counter() - start)),
                seconds=length,
                sent=counter[0],
                answered=state["answered"],
                errors=state["errors"],
            )
        )


def _warnings(steps: list[StepResult], options: Options, peak: int) -> list[str]:
    out = []
    busy = [s for s in steps if s.client_cpu_share > 0.8]
    if busy:
        s = busy[0]
        out.append(
            f"the load generator used {s.client_cpu_share:.2f} of a core at level {s.level:g} "
            f"({s.client_cpu_us_per_request:.0f} µs of CPU per request): one Python thread "
            "saturates near 1.0, so from there on the client may be the bottleneck, not the "
            "server. Run it on another machine, or several of them."
        )
    behind = [s for s in steps if s.verdict == "client"]
    if behind:
        out.append(f"step at level {behind[0].level:g}: {behind[0].reason}")
    if peak >= options.max_connections:
        out.append(
            f"the connection pool reached --max-connections ({options.max_connections}): calls "
            "waited for a free connection, and that wait counts in their latency"
        )
    return out


def _text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except ValueError:
        pass
    return body[:300].decode(errors="replace").strip()
