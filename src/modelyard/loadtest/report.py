"""A run as a JSON document (schema ``modelyard.loadtest/v1``, docs/loadtest.md) and as a
plot: ``.html``/``.svg`` drawn here with no dependency, ``.png`` through matplotlib (the
``plot`` extra). The plot is the throughput-latency curve: answered requests per second
against p50 and p99 latency, the SLO line, the max sustainable rate and the target.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidArgument, MissingDependency
from modelyard.loadtest.engine import Result
from modelyard.loadtest.stats import Quantiles, StepResult

__all__ = ["SCHEMA", "document", "render_html", "render_svg", "write_json", "write_plot"]

SCHEMA = "modelyard.loadtest/v1"
INVOCATIONS_QUERY = "sum(rate(nv_inference_request_success[1m]))"


def _finite(value: float | None, digits: int = 3) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _quantiles(q: Quantiles) -> dict[str, Any]:
    return {
        "count": q.count,
        **{k: _finite(getattr(q, k)) for k in ("p50", "p90", "p99", "max", "mean")},
    }


def _step(s: StepResult) -> dict[str, Any]:
    return {
        "level": s.level,
        "verdict": s.verdict,
        "reason": s.reason,
        "window_s": _finite(s.window_s),
        "offered_rps": _finite(s.offered_rps),
        "throughput_rps": _finite(s.throughput_rps),
        "answered_rps": _finite(s.answered_rps),
        "backlog_growth": s.backlog_growth,
        "requests": s.requests,
        "ok": s.ok,
        "errors": s.errors,
        "error_rate": _finite(s.error_rate, 5),
        "errors_by_kind": s.errors_by_kind,
        "first_error": s.first_error,
        "sent_total": s.sent_total,
        "ok_total": s.ok_total,
        "latency_ms": _quantiles(s.latency_ms),
        "send_lag_ms": _quantiles(s.send_lag_ms),
        "unlagged_latency_ms": _quantiles(s.unlagged_ms),
        "client": {
            "cpu_s": _finite(s.client_cpu_s, 4),
            "cpu_share": _finite(s.client_cpu_share),
            "cpu_us_per_request": _finite(s.client_cpu_us_per_request, 1),
            "peak_connections": s.peak_connections,
        },
        "per_model": {
            name: {
                "requests": m.requests,
                "errors": m.errors,
                "latency_ms": _quantiles(m.latency_ms),
            }
            for name, m in s.per_model.items()
        },
    }


def document(result: Result) -> dict[str, Any]:
    """The run as JSON-ready values (NaN and infinities become null)."""
    from modelyard import __version__

    o, r = result.options, result.recommendation
    rec: dict[str, Any] = {
        **{k: (_finite(v) if isinstance(v, float) else v) for k, v in _fields(r).items()},
        "rule": r.rule,
    }
    target_minute = r.invocations_per_instance_per_minute
    rec["sagemaker"] = {
        "metric": "SageMakerVariantInvocationsPerInstance",
        "target_value": target_minute,
    }
    rec["keda"] = {
        "query": INVOCATIONS_QUERY,
        "metric_type": "AverageValue",
        "threshold": _finite(r.target_rps_per_instance),
    }
    return {
        "schema": SCHEMA,
        "modelyard_version": __version__,
        "started_at": datetime.fromtimestamp(result.started_at, UTC).isoformat(timespec="seconds"),
        "elapsed_s": _finite(result.elapsed_s, 2),
        "target": result.target,
        "protocol": o.protocol,
        "mode": "closed" if o.closed_loop else "open",
        "level_unit": "connections" if o.closed_loop else "requests/s",
        "arrivals": None if o.closed_loop else o.arrivals,
        "slo": {
            "p99_ms": o.slo.p99_ms,
            "max_error_rate": o.slo.max_error_rate,
            "min_throughput_ratio": o.slo.min_throughput_ratio,
            "max_send_lag_ms": o.slo.lag_limit_ms,
        },
        "settings": {
            "start": o.plan.start,
            "step": o.plan.step,
            "step_is_factor": o.plan.factor,
            "max": o.plan.maximum,
            "refine": o.plan.refine,
            "step_seconds": o.step_seconds,
            "warmup_seconds": o.warmup_seconds,
            "max_requests": o.max_requests,
            "max_seconds": o.max_seconds,
            "timeout_s": o.timeout,
            "max_connections": o.max_connections,
            "instances": o.instances,
            "headroom": o.headroom,
            "seed": o.seed,
            "batch_size": o.batch_size,
            "dim_size": o.dim_size,
            "cold_start": o.cold_start,
        },
        "models": [
            {
                "name": m.name,
                "version": m.version,
                "weight": m.weight,
                "source": m.source,
                "bodies": m.bodies,
                "request_bytes": m.request_bytes,
                "was_loaded": m.was_loaded,
                "cold_start_ms": _finite(m.cold_start_ms),
                "first_request_ms": _finite(m.first_ms),
                "warm_request_ms": _finite(m.warm_ms),
            }
            for m in result.models
        ],
        "curve": [_step(s) for s in result.steps],
        "recommendation": rec,
        "stopped_by": result.stopped_by,
        "warnings": result.warnings,
        "client": {
            "python": platform.python_version(),
            "event_loop": "uvloop" if "uvloop" in sys.modules else "asyncio",
            "cpu_count": os.cpu_count(),
        },
    }


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def write_plot(doc: dict[str, Any], path: Path) -> None:
    """By suffix: ``.png`` (matplotlib), ``.html``/``.htm`` (a page with the SVG), ``.svg``."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        _write_png(doc, path)
    elif suffix in (".html", ".htm"):
        path.write_text(render_html(doc))
    elif suffix == ".svg":
        path.write_text(render_svg(doc))
    else:
        raise InvalidArgument(f"--plot {path}: the name must end in .png, .html or .svg")


def _points(doc: dict[str, Any]) -> list[tuple[float, float, float, str]]:
    """(throughput, p50, p99, verdict) of every step with answers, by throughput."""
    out = []
    for s in doc["curve"]:
        lat = s["latency_ms"]
        if s["throughput_rps"] is not None and lat["p99"] is not None:
            out.append((s["throughput_rps"], lat["p50"], lat["p99"], s["verdict"]))
    return sorted(out)


def _title(doc: dict[str, Any]) -> tuple[str, str]:
    """(what was measured, what it recommends): two lines over the plot."""
    rec = doc["recommendation"]
    mode = "closed loop" if doc["mode"] == "closed" else f"open loop, {doc['arrivals']}"
    first = f"{doc['target']} ({mode}), p99 SLO {doc['slo']['p99_ms']:g} ms"
    if rec["invocations_per_instance_per_minute"] is None:
        return first, "no step met the SLO: no recommendation"
    bound = "" if rec["bound"] == "measured" else " (lower bound)"
    return first, (
        f"max {rec['max_sustainable_rps_per_instance']:.1f} req/s per instance{bound}; target "
        f"{rec['invocations_per_instance_per_minute']} invocations/instance/min "
        f"({rec['headroom']:.0%} headroom)"
    )


def render_svg(doc: dict[str, Any], width: int = 760, height: int = 420) -> str:
    pts = _points(doc)
    slo = float(doc["slo"]["p99_ms"])
    rec = doc["recommendation"]
    left, right, top, bottom = 64, 20, 48, 52
    pw, ph = width - left - right, height - top - bottom
    xmax = float(max([p[0] for p in pts] + [rec["max_sustainable_rps"] or 0.0, 1.0])) * 1.08
    ymax = float(max([p[2] for p in pts] + [slo])) * 1.15
    ymax = min(ymax, slo * 6) if pts else ymax  # a runaway last step must not flatten the rest

    def x(v: float) -> float:
        return left + pw * v / xmax

    def y(v: float) -> float:
        return top + ph * (1 - min(v, ymax) / ymax)

    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="12">{e(_title(doc)[0])}</text>',
        f'<text x="{left}" y="32" font-size="13" font-weight="bold">{e(_title(doc)[1])}</text>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>',
    ]
    for i in range(6):
        xv, yv = xmax * i / 5, ymax * i / 5
        parts.append(
            f'<text x="{x(xv):.1f}" y="{top + ph + 16}" text-anchor="middle">{xv:.0f}</text>'
        )
        parts.append(f'<text x="{left - 6}" y="{y(yv) + 4:.1f}" text-anchor="end">{yv:.0f}</text>')
        parts.append(
            f'<line x1="{left}" y1="{y(yv):.1f}" x2="{left + pw}" y2="{y(yv):.1f}" stroke="#eee"/>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">'
        "throughput (answered requests/s)</text>"
        f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        "latency (ms)</text>"
        f'<line x1="{left}" y1="{y(slo):.1f}" x2="{left + pw}" y2="{y(slo):.1f}" stroke="#d62728" '
        f'stroke-dasharray="6 4"/><text x="{left + pw - 4}" y="{y(slo) - 5:.1f}" '
        f'text-anchor="end" fill="#d62728">p99 SLO {slo:g} ms</text>'
    )
    for index, colour, name in ((1, "#1f77b4", "p50"), (2, "#ff7f0e", "p99")):
        ys = [p[1] if index == 1 else p[2] for p in pts]
        line = " ".join(f"{x(p[0]):.1f},{y(v):.1f}" for p, v in zip(pts, ys, strict=True))
        if line:
            parts.append(
                f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for p, v in zip(pts, ys, strict=True):
            fill = colour if p[3] == "pass" else "white"
            parts.append(
                f'<circle cx="{x(p[0]):.1f}" cy="{y(v):.1f}" r="3.5" fill="{fill}" '
                f'stroke="{colour}"><title>{name} {v:.2f} ms at {p[0]:.1f}/s '
                f"({p[3]})</title></circle>"
            )
    for value, colour, label in (
        (rec["max_sustainable_rps"], "#2ca02c", "max sustainable"),
        (rec["target_rps_per_instance"] and rec["target_rps_per_instance"] * rec["instances"],
         "#9467bd", "target"),
    ):  # fmt: skip
        if value:
            parts.append(
                f'<line x1="{x(value):.1f}" y1="{top}" x2="{x(value):.1f}" y2="{top + ph}" '
                f'stroke="{colour}" stroke-dasharray="3 3"/><text x="{x(value) + 4:.1f}" '
                f'y="{top + 12}" fill="{colour}">{label} {value:.1f}/s</text>'
            )
    parts.append(
        f'<text x="{left + 8}" y="{top + 14}" fill="#1f77b4">● p50</text>'
        f'<text x="{left + 8}" y="{top + 30}" fill="#ff7f0e">● p99</text>'
        f'<text x="{left + 8}" y="{top + 46}" fill="#666">(hollow: the step failed)</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(doc: dict[str, Any]) -> str:
    """One self-contained page: the plot, the curve as a table, the recommendation."""
    e = html.escape
    rows = []
    for s in doc["curve"]:
        lat = s["latency_ms"]
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{e(str(v))}</td>"
                for v in (
                    f"{s['level']:g}",
                    _num(s["offered_rps"]),
                    _num(s["throughput_rps"]),
                    _num(lat["p50"], 2),
                    _num(lat["p99"], 2),
                    f"{s['error_rate']:.2%}" if s["error_rate"] is not None else "-",
                    _num(s["client"]["cpu_us_per_request"], 0),
                    s["verdict"],
                    s["reason"],
                )
            )
            + "</tr>"
        )
    cold = [
        f"<li>{e(m['name'])}: {_num(m['cold_start_ms'], 1)} ms cold, "
        f"{_num(m['warm_request_ms'], 2)} ms warm</li>"
        for m in doc["models"]
        if m["cold_start_ms"] is not None
    ]
    rec = doc["recommendation"]
    unit = e(doc["level_unit"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelyard loadtest: {e(doc["target"])}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:last-child{{text-align:left}}
pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>modelyard loadtest</h1>
<p>{e(_title(doc)[0])}<br><b>{e(_title(doc)[1])}</b></p>
{render_svg(doc)}
<h2>Recommendation</h2>
<p>{e(rec["note"])}. Rule: {e(rec["rule"])}.</p>
<pre>{e(json.dumps(rec, indent=2))}</pre>
<h2>Curve</h2>
<table><tr><th>level ({unit})</th><th>offered/s</th><th>answered/s</th><th>p50 ms</th>
<th>p99 ms</th><th>errors</th><th>client µs/req</th><th>verdict</th><th>reason</th></tr>
{"".join(rows)}</table>
<h2>Cold starts</h2><ul>{"".join(cold) or "<li>none measured (every model was loaded)</li>"}</ul>
<p>{"<br>".join(e(w) for w in doc["warnings"])}</p>
<p><small>{e(doc["schema"])} · modelyard {e(doc["modelyard_version"])} · {e(doc["started_at"])}</small></p>
</body></html>
"""


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _write_png(doc: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency(
            "matplotlib (for --plot x.png; x.html needs nothing)", "plot"
        ) from None
    pts = _points(doc)
    slo = float(doc["slo"]["p99_ms"])
    rec = doc["recommendation"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], "o-", label="p50")
        ax.plot(xs, [p[2] for p in pts], "o-", label="p99")
        ax.axhline(slo, color="tab:red", linestyle="--", label=f"p99 SLO {slo:g} ms")
        if rec["max_sustainable_rps"]:
            ax.axvline(rec["max_sustainable_rps"], color="tab:green", linestyle=":",
                       label=f"max sustainable {rec['max_sustainable_rps']:.1f}/s")  # fmt: skip
            target = rec["target_rps_per_instance"] * rec["instances"]
            ax.axvline(target, color="tab:purple", linestyle=":", label=f"target {target:.1f}/s")
        top = max([p[2] for p in pts] + [slo]) * 1.15
        ax.set_ylim(0, min(top, slo * 6))
        ax.set_xlim(left=0)
        ax.set_xlabel("throughput (answered requests/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title("\n".join(_title(doc)), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
