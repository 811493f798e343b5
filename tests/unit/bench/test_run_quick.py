"""bench/run.py's --quick mode, its aims verdict and its machine record (the code the
documented figures come from, imported as the script sees its siblings)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

import machine  # noqa: E402
import run  # noqa: E402
from loadgen import CellResult  # noqa: E402
from report import Results, aims  # noqa: E402


def _cell(rps: float, p99: float = 1.0) -> CellResult:
    return CellResult(
        rps=rps,
        p50_ms=0.5,
        p99_ms=p99,
        requests=int(rps),
        errors=0,
        client_cpu_share=0.2,
        client_us_per_req=20.0,
    )


def test_quick_sets_the_short_timings_and_the_peers() -> None:
    args = run.parse_args(["--quick"])
    assert args.peers and args.duration == 2.0 and args.warmup == 0.5
    assert args.repeats == 1 and args.retry_busy == 1
    assert args.encodings == ["json", "binary"] and args.concurrency == [1, 16, 64]


def test_quick_keeps_timings_given_beside_it() -> None:
    args = run.parse_args(["--quick", "--duration", "7", "--repeats=3"])
    assert args.duration == 7.0 and args.repeats == 3 and args.warmup == 0.5


def test_aims_mark_each_cell_met_or_short() -> None:
    res = Results()
    res.cells = {
        ("modelyard", "mlp", "binary", 1): [_cell(3000)],
        ("triton", "mlp", "binary", 1): [_cell(2000)],
        ("modelyard", "mlp", "binary", 64): [_cell(5000, p99=30.0)],
        ("triton", "mlp", "binary", 64): [_cell(6000, p99=20.0)],
        ("floor", "mlp", "binary", 64): [_cell(10000)],
        ("floor", "mlp", "binary", 1): [_cell(4000)],
    }
    text = aims(res, "modelyard", ["mlp"], ["binary"], [1, 64])
    lines = text.splitlines()
    assert "| mlp | binary | 1 | ÷ Triton | 1.50x | >= 1x | met |" in lines
    assert "| mlp | binary | 64 | ÷ Triton | 0.83x | >= 1x | **short** |" in lines
    assert (
        "| mlp | binary | 64 | p99 vs Triton | 30.00 / 20.00 ms | <= Triton's | **short** |"
        in lines
    )
    assert "| mlp | binary | 64 | ÷ floor | 0.50x | >= 0.6x | **short** |" in lines
    # the floor aim starts at c=16
    assert not any("| 1 | ÷ floor" in line for line in lines)


def test_aims_give_the_c1_overhead_with_the_floor_beside_it() -> None:
    res = Results()
    res.cells = {
        ("modelyard", "mlp", "binary", 1): [_cell(3000)],  # p50 0.5 ms
        ("floor", "mlp", "binary", 1): [_cell(4000)],
    }
    res.inprocess = {"mlp": {"run_us": 20.0, "json_us": 30.0, "binary_us": 25.0}}
    lines = aims(res, "modelyard", ["mlp"], ["binary"], [1]).splitlines()
    assert (
        "| mlp | binary | 1 | p50 over in-process session.run | 0.480 ms (floor's own p50 "
        "0.50 ms) | < 0.1 ms | **short** |" in lines
    )


def test_no_peers_no_verdict() -> None:
    res = Results()
    res.cells = {("modelyard", "mlp", "binary", 1): [_cell(3000)]}
    assert aims(res, "modelyard", ["mlp"], ["binary"], [1]) == ""


def test_the_machine_record_names_cores_idle_driver_load_and_steal() -> None:
    m = machine.Machine()
    sum(range(100_000))
    m.finish()
    text = m.markdown()
    for what in ("usable cores", "idle driver", "load (1 min)", "steal time", "onnxruntime"):
        assert what in text
    assert m.steal_share is not None and 0.0 <= m.steal_share <= 1.0
