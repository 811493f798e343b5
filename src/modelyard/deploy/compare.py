"""Expected against actual outputs: a pure comparison that explains every difference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelyard.types import Array

__all__ = ["MAX_ROWS", "Mismatch", "compare"]

MAX_ROWS = 10  # differing elements listed per output
_FLOATING = frozenset({"FP16", "FP32", "FP64", "BF16"})


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why one output is not what a case expects: a sentence, and the first differences."""

    output: str
    summary: str
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # index, exp, got, |diff|

    def text(self) -> str:
        lines = [f"{self.output}: {self.summary}"]
        if self.rows:
            lines.append("  index | expected | actual | |diff|")
            lines += [f"  {i} | {e} | {a} | {d}" for i, e, a, d in self.rows]
        return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, bytes):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, float | np.floating):
        return f"{float(value):.7g}"
    return str(value)


def _index(flat: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return "[]"
    return "[" + ", ".join(str(i) for i in np.unravel_index(flat, shape)) + "]"


def compare(
    name: str,
    expected: Array,
    actual: Array,
    *,
    actual_datatype: str,
    expected_datatype: str | None = None,
    check_shape: bool = False,
    atol: float = 0.0,
    rtol: float = 0.0,
) -> Mismatch | None:
    """None when ``actual`` matches; otherwise what differs.

    Shapes are compared when ``check_shape``; otherwise values element by element in
    row-major order (their counts must agree). Floating outputs pass within
    ``|actual - expected| <= atol + rtol * |expected|`` (numpy's isclose, NaN equal to NaN);
    integers, booleans and BYTES must be equal unless a tolerance is given for integers.
    """
    if expected_datatype is not None and expected_datatype != actual_datatype:
        return Mismatch(name, f"datatype {actual_datatype}, expected {expected_datatype}")
    if check_shape and tuple(actual.shape) != tuple(expected.shape):
        return Mismatch(name, f"shape {list(actual.shape)}, expected {list(expected.shape)}")
    if actual.size != expected.size:
        return Mismatch(
            name,
            f"{actual.size} elements (shape {list(actual.shape)}), expected {expected.size}",
        )
    shape = tuple(actual.shape)
    got, want = actual.reshape(-1), expected.reshape(-1)
    if actual_datatype == "BYTES":
        got_b = [_bytes(x) for x in got.tolist()]
        want_b = [_bytes(x) for x in want.tolist()]
        bad = [i for i, (g, w) in enumerate(zip(got_b, want_b, strict=True)) if g != w]
        if not bad:
            return None
        rows = [(_index(i, shape), _fmt(want_b[i]), _fmt(got_b[i]), "") for i in bad[:MAX_ROWS]]
        return Mismatch(name, f"{len(bad)} of {got.size} elements differ", rows)
    floating = actual_datatype in _FLOATING
    try:
        g64, w64 = got.astype(np.float64), np.asarray(want).astype(np.float64)
    except (TypeError, ValueError):
        return Mismatch(name, "values cannot be compared (not numbers)")
    diff = np.abs(g64 - w64)
    if floating:
        ok = np.isclose(g64, w64, atol=atol, rtol=rtol, equal_nan=True)
    elif atol:
        ok = diff <= atol
    else:  # exact, also for 64-bit integers beyond float64's precision
        ok = got == np.asarray(want).astype(got.dtype)
    g, w = (g64, w64) if floating else (got, want)
    bad_idx = np.flatnonzero(~ok)
    if bad_idx.size == 0:
        return None
    finite = diff[bad_idx][np.isfinite(diff[bad_idx])]
    worst = int(bad_idx[int(np.argmax(finite))]) if finite.size else int(bad_idx[0])
    tolerance = f" (atol {atol:g}, rtol {rtol:g})" if floating else ""
    summary = (
        f"{bad_idx.size} of {got.size} elements differ{tolerance}; "
        f"max |diff| {_fmt(diff[worst])} at {_index(worst, shape)}"
    )
    rows = [
        (_index(int(i), shape), _fmt(w[i]), _fmt(g[i]), _fmt(diff[i])) for i in bad_idx[:MAX_ROWS]
    ]
    return Mismatch(name, summary, rows)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()
