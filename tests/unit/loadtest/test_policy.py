"""Verdicts against the SLO and the recommendation rule, on constructed steps."""

from __future__ import annotations

import dataclasses

import pytest

from modelyard.errors import InvalidArgument
from modelyard.loadtest.policy import Slo, judge, recommend
from modelyard.loadtest.stats import Quantiles, StepResult


def _q(p99: float) -> Quantiles:
    return Quantiles(100, p99 / 2, p99 * 0.9, p99, p99 * 1.2, p99 / 2)


def _step(level: float, rps: float, p99: float, *, errors: int = 0, lag: float = 0.0,
          unlagged: float | None = None, mode: str = "open", backlog: int = 0) -> StepResult:  # fmt: skip
    return StepResult(
        level=level,
        mode=mode,
        window_s=10.0,
        requests=1000,
        ok=1000 - errors,
        errors_by_kind={"HTTP 503": errors} if errors else {},
        first_error="",
        offered_rps=level,
        throughput_rps=rps,
        answered_rps=rps,
        backlog_growth=backlog,
        latency_ms=_q(p99),
        send_lag_ms=_q(lag),
        unlagged_ms=_q(p99 if unlagged is None else unlagged),
        client_cpu_s=0.5,
        peak_connections=8,
    )


SLO = Slo(p99_ms=50)


def test_verdicts() -> None:
    assert judge(_step(100, 100, 20), SLO).verdict == "pass"
    slow = judge(_step(100, 100, 80), SLO)
    assert (slow.verdict, slow.reason) == ("slo", "p99 80.0 ms > 50 ms")
    errors = judge(_step(100, 100, 20, errors=20), SLO)
    assert errors.verdict == "errors" and "2.0% > 1.0%" in errors.reason
    assert judge(_step(100, 100, 20, errors=10), SLO).verdict == "pass"  # 1% is allowed
    # the backlog may grow by 10% of the requests (1000 here), or 5 when that is more
    saturated = judge(_step(100, 80, 20, backlog=101), SLO)
    assert saturated.verdict == "saturated" and "101 more requests" in saturated.reason
    assert judge(_step(100, 80, 20, backlog=100), SLO).verdict == "pass"
    assert judge(_step(100, 80, 20, backlog=500, mode="closed"), SLO).verdict == "pass"
    # late sends made the p99: the client's failure; not when the server was slow anyway
    client = judge(_step(100, 100, 80, lag=30, unlagged=45), SLO)
    assert client.verdict == "client" and "fell behind" in client.reason
    assert judge(_step(100, 100, 80, lag=30, unlagged=70), SLO).verdict == "slo"
    assert judge(_step(100, 100, 80, lag=3, unlagged=45), SLO).verdict == "slo"  # lag < 5 ms


def test_lag_limit_defaults_to_ten_percent_of_the_slo_but_at_least_5_ms() -> None:
    assert Slo(20).lag_limit_ms == 5.0
    assert Slo(500).lag_limit_ms == 50.0
    assert Slo(500, max_lag_ms=1.0).lag_limit_ms == 1.0
    with pytest.raises(InvalidArgument):
        Slo(0)


def _judged(*steps: StepResult) -> list[StepResult]:
    return [judge(s, SLO) for s in steps]


def test_recommendation_rule() -> None:
    steps = _judged(_step(100, 99, 10), _step(200, 198, 30), _step(400, 300, 900),
                    _step(300, 290, 45), _step(350, 320, 70))  # fmt: skip
    rec = recommend(steps, SLO, instances=2, headroom=0.3)
    assert rec.bound == "measured" and rec.limited_by == "slo"
    assert rec.max_sustainable_rps == 290
    assert rec.max_sustainable_rps_per_instance == 145
    assert rec.target_rps_per_instance == pytest.approx(145 * 0.7)
    assert rec.invocations_per_instance_per_minute == 6090  # floor(101.5 * 60)
    assert rec.p99_ms_at_max == 45 and rec.level_at_max == 300


def test_a_run_that_never_broke_gives_a_lower_bound() -> None:
    rec = recommend(_judged(_step(10, 10, 5), _step(20, 20, 6)), SLO, stopped_by="max-level")
    assert (rec.bound, rec.limited_by) == ("lower", "max-level")
    assert rec.invocations_per_instance_per_minute == 600  # 20/s x 0.5 x 60
    assert "raise --max-rate" in rec.note
    behind = _judged(_step(10, 10, 5), _step(20, 20, 80, lag=40, unlagged=10))
    rec = recommend(behind, SLO, stopped_by="client")
    assert (rec.bound, rec.limited_by) == ("lower", "client")


def test_no_passing_step_means_no_target() -> None:
    rec = recommend(_judged(_step(10, 10, 500)), SLO)
    assert rec.bound == "none" and rec.limited_by == "slo"
    assert rec.invocations_per_instance_per_minute is None
    assert "p99 500.0 ms > 50 ms" in rec.note


def test_bad_headroom_and_instances() -> None:
    steps = _judged(_step(10, 10, 5))
    with pytest.raises(InvalidArgument, match="headroom"):
        recommend(steps, SLO, headroom=1.0)
    with pytest.raises(InvalidArgument, match="instances"):
        recommend(steps, SLO, instances=0)
    assert recommend(steps, SLO, headroom=0.0).invocations_per_instance_per_minute == 600
    assert dataclasses.is_dataclass(recommend(steps, SLO))
