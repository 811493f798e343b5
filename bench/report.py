"""Markdown tables from measured cells: absolute figures, ratios, in-process floor."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from loadgen import CellResult

Key = tuple[str, str, str, int]  # server, model, encoding, concurrency
OTHER_CPU_NOTE = 0.15  # cores used by the rest of the machine during a run worth a note


@dataclass
class Results:
    cells: dict[Key, list[CellResult]] = field(default_factory=dict)
    failed: dict[tuple[str, str, str], str] = field(default_factory=dict)  # server, model, enc
    unavailable: dict[str, str] = field(default_factory=dict)  # server -> why
    inprocess: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> figures
    labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def median(self, key: Key) -> CellResult | None:
        runs = self.cells.get(key)
        if not runs:
            return None
        fields = CellResult.__dataclass_fields__
        # text fields come from the run with the median throughput; numbers are medians
        mid = sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]
        vals = {
            f: statistics.median(getattr(r, f) for r in runs)
            if isinstance(getattr(mid, f), (int, float))
            else getattr(mid, f)
            for f in fields
        }
        vals["requests"] = int(vals["requests"])
        vals["server_procs"] = int(vals["server_procs"])
        vals["errors"] = sum(r.errors for r in runs)
        return CellResult(**vals)


def _rps(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _cores(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def _us(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f}"


def render(
    res: Results,
    servers: list[str],
    models: list[str],
    encodings: list[str],
    conc: list[int],
    base: str = "modelyard",
) -> str:
    """The tables; ratios are ``base``'s req/s over every other server's."""
    out: list[str] = []
    # -- absolute figures
    head = ["model", "enc", "server"]
    for c in conc:
        head += [f"c={c} req/s", f"c={c} p50/p99 ms"]
    cs = "/".join(f"c={c}" for c in conc)
    head += [f"client CPU {cs}", f"server CPU cores {cs}", f"server CPU µs/req {cs}"]
    out += ["### Throughput and latency", "", _row(head), _row(["---"] * len(head))]
    for m in models:
        for e in encodings:
            for s in servers:
                if s in res.unavailable:
                    continue
                row = [m, e, res.labels.get(s, s)]
                if (s, m, e) in res.failed and not any((s, m, e, c) in res.cells for c in conc):
                    row += ["n/a", "n/a"] * len(conc) + ["see notes", "", ""]
                    out.append(_row(row))
                    continue
                cpu, cores, per_req = [], [], []
                for c in conc:
                    r = res.median((s, m, e, c))
                    if r is None:
                        row += ["-", "-"]
                        cpu.append("-")
                        cores.append("-")
                        per_req.append("-")
                        continue
                    flag = " (!errors)" if r.errors else ""
                    row += [_rps(r.rps) + flag, f"{_ms(r.p50_ms)} / {_ms(r.p99_ms)}"]
                    cpu.append(f"{r.client_cpu_share:.0%}")
                    cores.append(_cores(r.server_cpu_share))
                    per_req.append(_us(r.server_us_per_req))
                row += [" / ".join(cpu), " / ".join(cores), " / ".join(per_req)]
                out.append(_row(row))
    # -- ratios
    if base in servers and base not in res.unavailable:
        peers = [s for s in servers if s != base and s not in res.unavailable]
        if peers:
            name = res.labels.get(base, base)
            head = ["model", "enc", f"{name} req/s ÷"] + [f"c={c}" for c in conc]
            out += [
                "",
                f"### Ratios ({name} req/s ÷ peer req/s; >1 means {name} is faster)",
                "",
                _row(head),
                _row(["---"] * len(head)),
            ]
            for m in models:
                for e in encodings:
                    for p in peers:
                        row = [m, e, res.labels.get(p, p)]
                        for c in conc:
                            a = res.median((base, m, e, c))
                            b = res.median((p, m, e, c))
                            row.append(f"{a.rps / b.rps:.2f}x" if a and b and b.rps else "-")
                        if any(x != "-" for x in row[3:]):
                            out.append(_row(row))
    # -- in-process
    if res.inprocess and base == "modelyard":
        head = [
            "model",
            "session.run p50 µs",
            "JSON decode+run+encode µs",
            "binary decode+run+encode µs",
            "modelyard c=1 p50 ms (json / binary)",
            "modelyard overhead over session.run, ms (json / binary)",
            "over the floor's c=1 p50, ms (json / binary)",
        ]
        out += [
            "",
            "### In-process onnxruntime (1 thread) and modelyard's overhead at c=1",
            "",
            _row(head),
            _row(["---"] * len(head)),
        ]
        for m in models:
            ip = res.inprocess.get(m)
            if ip is None:
                continue
            lat, over, over_floor = [], [], []
            for e in ("json", "binary"):
                r = res.median(("modelyard", m, e, 1))
                lat.append(_ms(r.p50_ms) if r else "-")
                over.append(f"{r.p50_ms - ip['run_us'] / 1000:.3f}" if r else "-")
                # the loopback round trip and the two wake-ups, which no server avoids: the
                # floor pays them too, answering a constant
                f = res.median(("floor", m, e, 1))
                over_floor.append(f"{r.p50_ms - f.p50_ms:.3f}" if r and f else "-")
            figures = [f"{ip[k]:.1f}" for k in ("run_us", "json_us", "binary_us")]
            out.append(
                _row([m, *figures, " / ".join(lat), " / ".join(over), " / ".join(over_floor)])
            )
    # -- notes
    notes = list(res.notes)
    busy = [
        f"{res.labels.get(k[0], k[0])} {k[1]} {k[2]} c={k[3]} run {i + 1}: {r.other_cpu_share:.2f}"
        for k, runs in res.cells.items()
        for i, r in enumerate(runs)
        if r.other_cpu_share > OTHER_CPU_NOTE
    ]
    if busy:
        notes.append(
            "other processes on the machine used CPU during some runs (cores beside the server "
            "and the client; those runs may be low): " + "; ".join(busy)
        )
    for s, why in res.unavailable.items():
        notes.append(f"{res.labels.get(s, s)} not measured: {why}")
    for (s, m, e), why in res.failed.items():
        notes.append(f"{res.labels.get(s, s)}, {m}, {e}: not measured: {why}")
    if notes:
        out += ["", "Notes:", *(f"- {n}" for n in notes)]
    return "\n".join(out) + "\n"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def aims(res: Results, base: str, models: list[str], encodings: list[str], conc: list[int]) -> str:
    """Issue 17's aims, cell by cell: modelyard ÷ Triton (req/s, and p99 at the highest
    concurrency), ÷ MLServer and ÷ the floor, each marked met or short. Empty when ``base``
    or every peer is missing."""
    peers = {
        "triton": ("Triton", 1.0, 1),
        "mlserver": ("MLServer", 5.0, 16),
        "floor": ("floor", 0.6, 16),
    }
    rows = []
    for model in models:
        for enc in encodings:
            for c in conc:
                mine = res.median((base, model, enc, c))
                if mine is None:
                    continue
                for peer, (label, aim, from_c) in peers.items():
                    theirs = res.median((peer, model, enc, c))
                    if theirs is None or c < from_c or not theirs.rps:
                        continue
                    ratio = mine.rps / theirs.rps
                    mark = "met" if ratio >= aim else "**short**"
                    rows.append(
                        _row(
                            [
                                model,
                                enc,
                                str(c),
                                f"÷ {label}",
                                f"{ratio:.2f}x",
                                f">= {aim:g}x",
                                mark,
                            ]
                        )
                    )
                    if peer == "triton" and c == max(conc):
                        ok = mine.p99_ms <= theirs.p99_ms
                        rows.append(
                            _row(
                                [
                                    model,
                                    enc,
                                    str(c),
                                    "p99 vs Triton",
                                    f"{mine.p99_ms:.2f} / {theirs.p99_ms:.2f} ms",
                                    "<= Triton's",
                                    "met" if ok else "**short**",
                                ]
                            )
                        )
    # the server's overhead at c=1 over the model's own in-process run, with the floor's
    # c=1 p50 beside it: the loopback round trip and wake-ups it is bounded by
    for model in models:
        ip = res.inprocess.get(model)
        for enc in encodings:
            mine = res.median((base, model, enc, 1))
            if ip is None or mine is None or 1 not in conc:
                continue
            over = mine.p50_ms - ip["run_us"] / 1000
            floor = res.median(("floor", model, enc, 1))
            beside = f" (floor's own p50 {floor.p50_ms:.2f} ms)" if floor else ""
            rows.append(
                _row(
                    [
                        model,
                        enc,
                        "1",
                        "p50 over in-process session.run",
                        f"{over:.3f} ms{beside}",
                        "< 0.1 ms",
                        "met" if over < 0.1 else "**short**",
                    ]
                )
            )
    if not rows:
        return ""
    head = _row(["model", "enc", "c", "against", "measured", "aim", ""])
    sep = _row(["---"] * 7)
    return "### Aims (issue 17), this run\n\n" + "\n".join([head, sep, *rows]) + "\n"
