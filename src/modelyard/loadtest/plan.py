"""What load to offer, and when: arrival schedules, the model mix, and the steps of a run.

Pure functions of their arguments (and a seeded ``numpy.random.Generator``), tested with
plain values. The stepping rule: ramp from ``start`` (adding ``step``, or multiplying by it)
until a step fails or ``maximum`` is reached; then bisect between the last passing level and
the first failing one ``refine`` times, so the knee is found to a finer grain than the ramp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelyard.errors import InvalidArgument

__all__ = ["StepPlan", "choose_models", "constant_arrivals", "next_level", "poisson_arrivals"]

Floats = npt.NDArray[np.float64]


def poisson_arrivals(rate: float, duration: float, rng: np.random.Generator) -> Floats:
    """Send times in ``[0, duration)`` of a Poisson process of ``rate`` per second: gaps drawn
    from an exponential distribution of mean ``1/rate`` (what independent users produce)."""
    if rate <= 0 or duration <= 0:
        return np.empty(0)
    expected = rate * duration
    n = int(expected + 6 * math.sqrt(expected) + 16)  # enough, but for a ~1e-9 tail
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    while times[-1] < duration:  # that tail: draw more
        more = np.cumsum(rng.exponential(1.0 / rate, n)) + times[-1]
        times = np.concatenate([times, more])
    out: Floats = times[times < duration]
    return out


def constant_arrivals(rate: float, duration: float) -> Floats:
    """Evenly spaced send times (``--arrivals constant``): a load with no bursts."""
    if rate <= 0 or duration <= 0:
        return np.empty(0)
    out: Floats = np.arange(0.0, duration, 1.0 / rate)
    return out


def choose_models(
    weights: Sequence[float], n: int, rng: np.random.Generator
) -> npt.NDArray[np.intp]:
    """Which model each of ``n`` requests goes to, drawn independently by weight."""
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or (w < 0).any() or w.sum() <= 0:
        raise InvalidArgument("model weights must be non-negative and not all zero")
    if w.size == 1:
        return np.zeros(n, dtype=np.intp)
    out: npt.NDArray[np.intp] = rng.choice(w.size, size=n, p=w / w.sum())
    return out


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Levels to try: request rates (open loop, per second) or concurrencies (closed loop)."""

    start: float
    step: float  # added to the level, or (``factor``) multiplied with it
    maximum: float
    factor: bool = False
    refine: int = 2  # bisection steps after the first failure
    integer: bool = False  # concurrency: whole numbers only

    def __post_init__(self) -> None:
        if self.start <= 0:
            raise InvalidArgument(f"the first level must be above zero, not {self.start:g}")
        if self.maximum < self.start:
            raise InvalidArgument(
                f"the maximum level ({self.maximum:g}) is below the first one ({self.start:g})"
            )
        if (self.factor and self.step <= 1) or (not self.factor and self.step <= 0):
            what = "a factor above 1" if self.factor else "an increment above 0"
            raise InvalidArgument(f"the step must be {what}, not {self.step:g}")
        if self.refine < 0:
            raise InvalidArgument("--refine must not be negative")

    @classmethod
    def parse_step(cls, text: str) -> tuple[float, bool]:
        """``"50"`` or ``"+50"`` adds 50; ``"x1.5"`` or ``"*1.5"`` multiplies by 1.5."""
        raw = text.strip().lower()
        factor = raw[:1] in ("x", "*")
        body = raw[1:] if factor or raw[:1] == "+" else raw
        try:
            value = float(body)
        except ValueError:
            raise InvalidArgument(
                f"--step {text!r}: expected a number to add (25) or a factor (x1.5)"
            ) from None
        return value, factor


def next_level(plan: StepPlan, history: Sequence[tuple[float, bool]]) -> float | None:
    """The next level to run given ``(level, passed)`` so far, or None when the run is over."""
    if not history:
        return plan.start
    failed = [level for level, ok in history if not ok]
    if not failed:
        last = history[-1][0]
        if last >= plan.maximum:
            return None
        nxt = last * plan.step if plan.factor else last + plan.step
        if plan.integer:
            nxt = float(max(math.floor(last) + 1, math.floor(nxt)))
        return min(nxt, plan.maximum)
    first_failure = next(i for i, (_, ok) in enumerate(history) if not ok)
    if len(history) - 1 - first_failure >= plan.refine:
        return None
    high = min(failed)
    below = [level for level, ok in history if ok and level < high]
    if not below:
        return None  # the first level already failed: nothing lower is tried
    low = max(below)
    if plan.integer:
        mid = float((int(low) + int(high)) // 2)
        return mid if low < mid < high else None
    if high - low <= 0.02 * high:  # within 2%: finer than a step's own noise
        return None
    return (low + high) / 2
