"""One step's calls -> its numbers: throughput, latency quantiles, send lag, errors, client CPU.

Latency is counted from when a call was *meant* to go (its scheduled time) to its answer, so
a client or connection that held a request back cannot hide the wait (no coordinated
omission). A call sent early (the event loop's timers fire up to a millisecond ahead) counts
from when it really went. Quantiles are nearest-rank: the value below which ``q`` of the
samples lie, never an interpolation between two samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ModelStep", "Quantiles", "StepResult", "error_kind", "quantile", "summarize"]


class CallLike(Protocol):
    key: int
    scheduled: float
    submitted: float
    sent: float
    done: float
    status: int
    error: str


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of ascending values (NaN when there are none)."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    rank = max(1, math.ceil(q * n))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class Quantiles:
    """Milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of_seconds(cls, values: Sequence[float]) -> Quantiles:
        ms = sorted(v * 1e3 for v in values)
        if not ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(ms),
            quantile(ms, 0.5),
            quantile(ms, 0.9),
            quantile(ms, 0.99),
            ms[-1],
            math.fsum(ms) / len(ms),
        )


@dataclass(frozen=True, slots=True)
class ModelStep:
    requests: int
    errors: int
    latency_ms: Quantiles


@dataclass(frozen=True, slots=True)
class StepResult:
    """One level held for a window: what was offered, what came back, what it cost the client."""

    level: float  # requests per second (open loop) or connections (closed loop)
    mode: str  # "open" | "closed"
    window_s: float
    requests: int  # calls scheduled inside the window
    ok: int
    errors_by_kind: dict[str, int]
    first_error: str
    offered_rps: float
    throughput_rps: float  # successful answers to the calls offered in the window, per second
    answered_rps: float  # successful answers that arrived inside the window, per second
    backlog_growth: int  # calls in flight at the window's end less those at its start
    latency_ms: Quantiles  # successful calls
    send_lag_ms: Quantiles  # how late the client handed calls over (its own delay)
    unlagged_ms: Quantiles  # successful calls' latency less that delay: the server's share
    client_cpu_s: float  # process CPU time over the window
    peak_connections: int
    per_model: dict[str, ModelStep] = field(default_factory=dict)
    sent_total: int = 0  # every call of the step, warm-up and drain included
    ok_total: int = 0
    verdict: str = ""  # "pass" | "slo" | "errors" | "saturated" | "client" (policy.judge)
    reason: str = ""

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def client_cpu_share(self) -> float:
        """Cores the load generator used: near 1.0, its one thread is the bottleneck."""
        return self.client_cpu_s / self.window_s if self.window_s > 0 else math.nan

    @property
    def client_cpu_us_per_request(self) -> float:
        done = self.ok + self.errors
        return self.client_cpu_s / done * 1e6 if done else math.nan


def error_kind(status: int, error: str) -> str:
    """A short label for a failed call: ``HTTP 503``, ``timeout``, ``connect``, ``closed``."""
    if not error:
        return f"HTTP {status}"
    if error.startswith("no answer"):
        return "timeout"
    if error.startswith("cannot connect"):
        return "connect"
    if error.startswith("connection closed"):
        return "closed"
    return "protocol"


def summarize(
    level: float,
    mode: str,
    calls: Sequence[CallLike],
    window: tuple[float, float],
    names: Sequence[str],
    client_cpu_s: float,
    peak_connections: int = 0,
    first_error: str = "",
) -> StepResult:
    """The numbers of the calls scheduled in ``window`` (``perf_counter`` seconds)."""
    w0, w1 = window
    span = max(w1 - w0, 1e-9)
    inside = [c for c in calls if w0 <= c.scheduled < w1]
    kinds: dict[str, int] = {}
    latencies: list[float] = []
    unlagged: list[float] = []
    lags: list[float] = []
    per: dict[int, tuple[list[float], list[int]]] = {}
    completed_ok = 0
    for c in inside:
        lags.append(max(0.0, c.submitted - c.scheduled))
        lat, errs = per.setdefault(c.key, ([], [0, 0]))
        errs[0] += 1
        if c.status == 200 and not c.error:
            seconds = c.done - min(c.scheduled, c.sent)
            latencies.append(seconds)
            unlagged.append(c.done - max(min(c.scheduled, c.sent), c.submitted))
            lat.append(seconds)
            if c.done < w1:
                completed_ok += 1
        else:
            kind = error_kind(c.status, c.error)
            kinds[kind] = kinds.get(kind, 0) + 1
            errs[1] += 1
    per_model = {
        names[key]: ModelStep(counts[0], counts[1], Quantiles.of_seconds(lat))
        for key, (lat, counts) in sorted(per.items())
    }
    # completions of calls scheduled just before the window count as that window's work too
    completed_ok += sum(
        1
        for c in calls
        if c.scheduled < w0 and w0 <= c.done < w1 and c.status == 200 and not c.error
    )
    backlog = sum(1 for c in calls if c.submitted <= w1 < c.done) - sum(
        1 for c in calls if c.submitted <= w0 < c.done
    )
    return StepResult(
        level=level,
        mode=mode,
        window_s=span,
        requests=len(inside),
        ok=len(latencies),
        errors_by_kind=dict(sorted(kinds.items())),
        first_error=first_error,
        offered_rps=len(inside) / span,
        throughput_rps=len(latencies) / span,
        answered_rps=completed_ok / span,
        backlog_growth=backlog,
        latency_ms=Quantiles.of_seconds(latencies),
        send_lag_ms=Quantiles.of_seconds(lags),
        unlagged_ms=Quantiles.of_seconds(unlagged),
        client_cpu_s=client_cpu_s,
        peak_connections=peak_connections,
        per_model=per_model,
        sent_total=len(calls),
        ok_total=sum(1 for c in calls if c.status == 200 and not c.error),
    )
