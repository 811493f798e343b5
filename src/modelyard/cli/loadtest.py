"""``modelyard loadtest --url URL --p99-ms MS``: step the load up until the SLO breaks, and print
the autoscaling target (docs/loadtest.md). Parses, draws progress and tables; the run itself is
``modelyard.loadtest``."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from modelyard.cli._ui import console, err_console, fail

if TYPE_CHECKING:
    from modelyard.loadtest import Event, Result

EXIT_SLO_UNMET = 3  # the run worked, but no step met the SLO (docs/loadtest.md)


def loadtest(
    url: Annotated[
        str,
        typer.Option(
            "--url", help="The server or router: http(s)://host:port, with a path prefix if any."
        ),
    ],
    p99_ms: Annotated[
        float, typer.Option("--p99-ms", help="The latency SLO: p99 in milliseconds.")
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="NAME[:VERSION][=WEIGHT] in the mix (repeat) (default: every model the "
            "repository index lists, equal weights).",
            show_default=False,
        ),
    ] = None,
    mix: Annotated[
        Path | None,
        typer.Option(
            "--mix", help="A model-mix file (YAML/JSON): weights, shapes, recorded cases."
        ),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", min=0.1, help="Seconds each step is measured.")
    ] = 10.0,
    warmup: Annotated[
        float,
        typer.Option("--warmup", min=0.0, help="Seconds at each level before it is measured."),
    ] = 1.0,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="One open-loop level only (requests/s), no stepping."),
    ] = None,
    start_rate: Annotated[
        float, typer.Option("--start-rate", help="First level (requests/s).")
    ] = 10.0,
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            help="Next level: +N adds N, xF multiplies by F (default: x1.5; closed loop x2).",
            show_default=False,
        ),
    ] = None,
    max_rate: Annotated[
        float, typer.Option("--max-rate", help="Highest level (requests/s).")
    ] = 20000.0,
    refine: Annotated[
        int,
        typer.Option(
            "--refine", min=0, help="Bisection steps between the last pass and first failure."
        ),
    ] = 2,
    closed_loop: Annotated[
        bool,
        typer.Option(
            "--closed-loop",
            help="Levels are connections each with one request in flight (1, 2, 4, ... "
            "--max-concurrency) instead of an arrival rate.",
        ),
    ] = False,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", min=1, help="One closed-loop level only: N connections."),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", min=1, help="Highest closed-loop level.")
    ] = 256,
    arrivals: Annotated[
        str, typer.Option("--arrivals", help="Open loop: poisson (bursty, as users) or constant.")
    ] = "poisson",
    max_requests: Annotated[
        int | None,
        typer.Option("--max-requests", min=1, help="Stop after this many requests in all."),
    ] = None,
    max_time: Annotated[
        float | None,
        typer.Option(
            "--max-time", min=1.0, help="Stop before a step would end past this many seconds."
        ),
    ] = None,
    max_error_rate: Annotated[
        float, typer.Option("--max-error-rate", help="A step with more failed requests fails.")
    ] = 0.01,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.01, help="Seconds a request may take.")
    ] = 30.0,
    max_connections: Annotated[
        int, typer.Option("--max-connections", min=1, help="Open-loop connection cap.")
    ] = 512,
    instances: Annotated[
        int, typer.Option("--instances", min=1, help="Servers behind --url (a router's fleet).")
    ] = 1,
    headroom: Annotated[
        float,
        typer.Option(
            "--headroom", help="Spare capacity kept by the target: 0.5 scales out at half the max."
        ),
    ] = 0.5,
    seed: Annotated[
        int, typer.Option("--seed", help="Seeds arrivals, the mix draw and generated data.")
    ] = 0,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol", help="v2 (KServe v2 infer) or sagemaker (invoke_endpoint's API)."
        ),
    ] = "v2",
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="SageMaker endpoint name in the invocation path.")
    ] = "loadtest",
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header", help="'Name: value' sent with every request (repeat), e.g. a token."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Generated bodies: a leading -1 dimension.")
    ] = 1,
    dim_size: Annotated[
        int, typer.Option("--dim-size", min=1, help="Generated bodies: every other -1 dimension.")
    ] = 1,
    cold_start: Annotated[
        str,
        typer.Option(
            "--cold-start",
            help="auto: time the first request of models not loaded; unload: unload every model "
            "first (changes the server); skip.",
        ),
    ] = "auto",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify https certificates.")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the run as JSON here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the curve: x.png, x.html or x.svg.")
    ] = None,
) -> None:
    """Find the request rate the server holds within a p99 SLO, and the autoscaling target."""
    from modelyard.errors import ModelyardError
    from modelyard.loadtest import (
        Options,
        Slo,
        StepPlan,
        load_mix_file,
        parse_model_option,
        run_loadtest,
    )
    from modelyard.loadtest.report import document, write_json, write_plot

    try:
        if arrivals not in ("poisson", "constant"):
            fail(f"--arrivals {arrivals!r}: expected poisson or constant", 2)
        if cold_start not in ("auto", "unload", "skip"):
            fail(f"--cold-start {cold_start!r}: expected auto, unload or skip", 2)
        if protocol not in ("v2", "sagemaker"):
            fail(f"--protocol {protocol!r}: expected v2 or sagemaker", 2)
        if plot is not None and plot.suffix.lower() not in (".png", ".html", ".htm", ".svg"):
            fail(f"--plot {plot}: the name must end in .png, .html or .svg", 2)
        entries = [parse_model_option(m) for m in model or []]
        if mix is not None:
            entries += load_mix_file(mix)
        closed = closed_loop or concurrency is not None
        if closed and rate is not None:
            fail("--rate is an open-loop level; --closed-loop/--concurrency count connections", 2)
        increment, factor = StepPlan.parse_step(step) if step else (2.0 if closed else 1.5, True)
        if closed:
            first = float(concurrency or 1)
            plan = StepPlan(
                first,
                increment,
                float(concurrency or max_concurrency),
                factor,
                refine,
                integer=True,
            )
        else:
            plan = StepPlan(rate or start_rate, increment, rate or max_rate, factor, refine)
        options = Options(
            url=url,
            slo=Slo(p99_ms, max_error_rate),
            plan=plan,
            mix=tuple(entries),
            closed_loop=closed,
            step_seconds=duration,
            warmup_seconds=warmup,
            max_requests=max_requests,
            max_seconds=max_time,
            timeout=timeout,
            max_connections=max_connections,
            instances=instances,
            headroom=headroom,
            seed=seed,
            protocol=protocol,
            endpoint=endpoint,
            headers=_headers(header or []),
            batch_size=batch_size,
            dim_size=dim_size,
            arrivals=arrivals,
            cold_start=cold_start,
            verify_tls=not insecure,
        )
        from modelyard.loadtest._http import Target

        Target.from_url(url)  # a bad URL is a usage error before anything starts
        if not 0 <= headroom < 1:
            fail("--headroom is a fraction in [0, 1): 0.3 keeps 30% spare", 2)
    except ModelyardError as err:  # the options, the mix: nothing was sent yet
        fail(str(err), 2)
    try:
        with _Progress(closed) as progress:
            result = _run(run_loadtest(options, progress.on_event))
    except ModelyardError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    doc = document(result)
    _print(result)
    if json_path is not None:
        write_json(doc, json_path)
        console.print(f"JSON: {escape(str(json_path))}")
    if plot is not None:
        try:
            write_plot(doc, plot)
        except ModelyardError as err:
            fail(str(err))
        console.print(f"plot: {escape(str(plot))}")
    if result.recommendation.invocations_per_instance_per_minute is None:
        raise typer.Exit(EXIT_SLO_UNMET)


def _headers(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            fail(f"--header {value!r}: expected 'Name: value'", 2)
        out[name.strip()] = text.strip()
    return out


def _run(coro: Any) -> Result:
    try:
        import uvloop
    except ImportError:  # still correct, at a higher CPU cost per request
        return asyncio.run(coro)  # type: ignore[no-any-return]
    return uvloop.run(coro)  # type: ignore[no-any-return]


class _Progress:
    """A rich bar per step: where the step is, what was sent and answered."""

    def __init__(self, closed: bool) -> None:
        self.unit = "conn" if closed else "req/s"
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @property
    def on_event(self) -> Callable[[Event], None]:
        return self._event

    def _event(self, e: Event) -> None:
        p = self.progress
        if e.kind == "phase":
            p.console.print(f"[dim]{escape(e.text)}[/]")
        elif e.kind == "step":
            self.task = p.add_task(
                f"step {e.step}: {e.level:g} {self.unit}", total=e.seconds, counts=""
            )
        elif e.kind == "tick" and self.task is not None:
            p.update(
                self.task,
                completed=e.elapsed,
                counts=f"sent {e.sent}  answered {e.answered}  errors {e.errors}",
            )
        elif e.kind == "done" and self.task is not None and e.result is not None:
            s = e.result
            mark = "[green]pass[/]" if s.verdict == "pass" else f"[red]{s.verdict}[/]"
            p.update(
                self.task,
                completed=e.seconds or p.tasks[-1].total or 0,
                counts=f"{s.throughput_rps:.1f}/s  p99 {_ms(s.latency_ms.p99)}  {mark}",
            )
            self.task = None


def _ms(value: float) -> str:
    return (
        "-" if not math.isfinite(value) else f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"
    )


def _num(value: float, digits: int = 2) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}" if value < 100 or digits == 0 else f"{value:.0f}"


def _print(result: Result) -> None:
    o = result.options
    models = Table(title="Models", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("model", "weight", "bodies", "source", "loaded before", "cold start", "warm"):
        models.add_column(col, justify="left" if col in ("model", "source") else "right")
    for m in result.models:
        models.add_row(
            m.name + (f":{m.version}" if m.version else ""),
            f"{m.weight:g}",
            str(m.bodies),
            m.source,
            "-" if m.was_loaded is None else "yes" if m.was_loaded else "no",
            _ms(m.cold_start_ms) if m.cold_start_ms is not None else "-",
            _ms(m.warm_ms) if m.warm_ms is not None else "-",
        )
    console.print(models)
    unit = "conns" if o.closed_loop else "rate"
    mode = "closed" if o.closed_loop else "open"
    curve = Table(
        title=f"Throughput and latency ({mode} loop, ms)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in (unit, "sent/s", "ok/s", "p50", "p99", "max", "err", "lag99", "µs/req",
                "verdict"):  # fmt: skip
        curve.add_column(col, justify="left" if col == "verdict" else "right")
    for s in result.steps:
        colour = "green" if s.verdict == "pass" else "red"
        curve.add_row(
            f"{s.level:g}",
            _num(s.offered_rps, 1),
            _num(s.throughput_rps, 1),
            *(_num(v) for v in (s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.max)),
            f"{s.error_rate:.1%}",
            _num(s.send_lag_ms.p99),
            _num(s.client_cpu_us_per_request, 0),
            f"[{colour}]{s.verdict}[/]",
        )
    console.print(curve)
    console.print(
        "[dim]µs/req: the load generator's own CPU per request; lag: how late it sent.[/]"
    )
    for s in result.steps:
        if s.reason:
            console.print(f"  {s.level:g} {unit}: [red]{s.verdict}[/] {escape(s.reason)}")
    r = result.recommendation
    if r.invocations_per_instance_per_minute is None:
        err_console.print(f"[red]no recommendation:[/] {escape(r.note)}")
    else:
        assert (
            r.max_sustainable_rps_per_instance is not None and r.target_rps_per_instance is not None
        )
        bound = "" if r.bound == "measured" else " [yellow](a lower bound)[/]"
        console.print(
            f"\n[bold]max sustainable:[/] {r.max_sustainable_rps_per_instance:.1f} req/s per "
            f"instance{bound} at p99 {_ms(r.p99_ms_at_max or math.nan)} (SLO {o.slo.p99_ms:g} ms, "
            f"{r.instances} instance{'s' if r.instances > 1 else ''}): {escape(r.note)}\n"
            f"[bold]autoscaling target:[/] [bold green]{r.invocations_per_instance_per_minute}[/] "
            f"invocations per instance per minute ({r.target_rps_per_instance:.2f}/s) with "
            f"{r.headroom:.0%} headroom\n"
            f"  SageMaker: SageMakerVariantInvocationsPerInstance target value "
            f"{r.invocations_per_instance_per_minute}\n"
            f"  KEDA/HPA: {r.target_rps_per_instance:.2f} per replica on "
            "sum(rate(nv_inference_request_success[1m]))"
        )
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}")
