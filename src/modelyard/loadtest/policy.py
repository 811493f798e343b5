"""Judging a step against the SLO, and the autoscaling target a run recommends: pure functions.

The rule (docs/loadtest.md):

* a step **passes** when its p99 latency is within ``--p99-ms``, its error rate within
  ``--max-error-rate``, and it kept up with the offered rate (open loop: the requests in
  flight grew over the window by at most ``1 - min_throughput_ratio`` of its requests, or 5
  when that is more); a step whose p99 broke the SLO only because the load generator sent late (send lag p99 above ``max_lag_ms``, and the p99 less each call's own
  lag within the SLO) is the **client's** failure, not the server's, and ends the run;
* the **max sustainable rate** is the highest throughput (successful answers to the requests
  offered in the window, per second) of a passing step, and per instance
  that rate divided by ``--instances`` (the servers behind the URL);
* the **target** is that per-instance rate less the headroom, ``rate * (1 - headroom) * 60``
  invocations per instance per minute: SageMaker's ``SageMakerVariantInvocationsPerInstance``
  target value (AWS's load-testing guide calls ``1 - headroom`` the safety factor and starts
  it at 0.5), and, per second, the target value a KEDA or HPA rule sets on a per-pod request
  rate.

The max is **measured** when a step above it failed on the server's side (latency, errors,
saturation), and only a **lower** bound when the run stopped first (``--max-rate``, the
request or time cap) or when the client fell behind: the server may well take more.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.errors import InvalidArgument
from modelyard.loadtest.stats import StepResult

__all__ = ["Recommendation", "Slo", "judge", "recommend"]

FAILURES = ("slo", "errors", "saturated")  # the server's limits, as opposed to "client"


@dataclass(frozen=True, slots=True)
class Slo:
    p99_ms: float
    max_error_rate: float = 0.01
    min_throughput_ratio: float = 0.9
    max_lag_ms: float | None = None  # None: max(5 ms, 10% of the p99 target)

    def __post_init__(self) -> None:
        if not self.p99_ms > 0:
            raise InvalidArgument(f"--p99-ms must be above zero, not {self.p99_ms:g}")
        if not 0 <= self.max_error_rate < 1:
            raise InvalidArgument("--max-error-rate is a fraction in [0, 1)")

    @property
    def lag_limit_ms(self) -> float:
        return self.max_lag_ms if self.max_lag_ms is not None else max(5.0, 0.1 * self.p99_ms)


def judge(step: StepResult, slo: Slo) -> StepResult:
    """The step with its verdict and a one-line reason."""
    verdict, reason = "pass", ""
    lag = step.send_lag_ms.p99
    p99 = step.latency_ms.p99
    # the client's own lateness counts in every latency (no coordinated omission); it is
    # blamed only where the step would have passed without it
    lagging = step.mode == "open" and lag > slo.lag_limit_ms
    behind = (
        f"the load generator fell behind its schedule (send lag p99 {lag:.1f} ms > "
        f"{slo.lag_limit_ms:.1f} ms), and without that delay the step would have passed"
    )
    if step.requests == 0:
        verdict, reason = "client", "no request was sent in the window"
    elif step.ok == 0 or step.error_rate > slo.max_error_rate:
        verdict = "errors"
        kinds = ", ".join(f"{k} x{n}" for k, n in step.errors_by_kind.items())
        reason = f"error rate {step.error_rate:.1%} > {slo.max_error_rate:.1%} ({kinds})"
    elif p99 > slo.p99_ms:
        if lagging and step.unlagged_ms.p99 <= slo.p99_ms:
            verdict, reason = "client", behind
        else:
            verdict, reason = "slo", f"p99 {p99:.1f} ms > {slo.p99_ms:g} ms"
    elif step.mode == "open" and step.backlog_growth > max(
        5, round((1 - slo.min_throughput_ratio) * step.requests, 9)
    ):
        verdict = "saturated"
        reason = (
            f"{step.backlog_growth} more requests were waiting at the end of the window than at "
            f"its start (answered {step.answered_rps:.1f}/s of {step.offered_rps:.1f}/s "
            "offered): the server falls behind"
        )
    return dataclasses.replace(step, verdict=verdict, reason=reason)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The number to autoscale on; see the module docstring for the rule."""

    slo_p99_ms: float
    instances: int
    headroom: float
    bound: str  # "measured" | "lower" | "none"
    limited_by: str  # a failing verdict, "client", "max-level", "request-cap", "time-cap"
    max_sustainable_rps: float | None
    max_sustainable_rps_per_instance: float | None
    p99_ms_at_max: float | None
    level_at_max: float | None
    target_rps_per_instance: float | None
    invocations_per_instance_per_minute: int | None
    note: str

    @property
    def rule(self) -> str:
        return (
            "target = max sustainable rate per instance x (1 - headroom) x 60, where the max "
            "sustainable rate is the highest throughput of a step with p99 <= SLO, errors <= "
            "the allowed rate, and the offered rate kept up with"
        )


def recommend(
    steps: Sequence[StepResult],
    slo: Slo,
    *,
    instances: int = 1,
    headroom: float = 0.5,
    stopped_by: str = "",
) -> Recommendation:
    """The autoscaling target of judged ``steps`` (in the order they ran)."""
    if instances < 1:
        raise InvalidArgument("--instances must be at least 1")
    if not 0 <= headroom < 1:
        raise InvalidArgument("--headroom is a fraction in [0, 1): 0.3 keeps 30% spare")
    passing = [s for s in steps if s.verdict == "pass"]
    if not passing:
        first = steps[0] if steps else None
        why = first.reason if first is not None else "no step ran"
        return Recommendation(
            slo.p99_ms, instances, headroom, "none", first.verdict if first else stopped_by,
            None, None, None, None, None, None,
            f"no step met the SLO, not even the first ({why}): lower --start-rate, or the "
            "server needs more capacity (or the SLO is out of reach for this model)",
        )  # fmt: skip
    best = max(passing, key=lambda s: s.throughput_rps)
    above = [s for s in steps if s.level > best.level and s.verdict != "pass"]
    server_failures = [s for s in above if s.verdict in FAILURES]
    if server_failures:
        bound = "measured"
        limited_by = min(server_failures, key=lambda s: s.level).verdict
        note = f"the server's limit: the next level up failed ({limited_by})"
    else:
        bound = "lower"
        limited_by = "client" if any(s.verdict == "client" for s in above) else stopped_by
        note = {
            "client": "the load generator fell behind before the server did: the server's "
            "limit is higher (run more generators, or a bigger client machine)",
            "max-level": "the SLO held up to the highest level tried: raise --max-rate",
        }.get(limited_by, f"the run stopped ({limited_by}) before the SLO broke")
    per_instance = best.throughput_rps / instances
    target = per_instance * (1 - headroom)
    return Recommendation(
        slo_p99_ms=slo.p99_ms,
        instances=instances,
        headroom=headroom,
        bound=bound,
        limited_by=limited_by,
        max_sustainable_rps=best.throughput_rps,
        max_sustainable_rps_per_instance=per_instance,
        p99_ms_at_max=best.latency_ms.p99,
        level_at_max=best.level,
        target_rps_per_instance=target,
        invocations_per_instance_per_minute=math.floor(target * 60),
        note=note,
    )
