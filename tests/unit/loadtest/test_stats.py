"""A step's numbers from hand-made calls: windows, latency from the scheduled time, errors."""

from __future__ import annotations

import math

import pytest

from modelyard.loadtest._http import Call
from modelyard.loadtest.stats import Quantiles, error_kind, quantile, summarize


def _call(
    scheduled: float,
    done: float,
    *,
    sent: float | None = None,
    submitted: float | None = None,
    status: int = 200,
    error: str = "",
    key: int = 0,
) -> Call:
    c = Call(b"", scheduled, key)
    c.submitted = scheduled if submitted is None else submitted
    c.sent = c.submitted if sent is None else sent
    c.done, c.status, c.error = done, status, error
    return c


def test_nearest_rank_quantiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert quantile(values, 0.5) == 50
    assert quantile(values, 0.99) == 99
    assert quantile(values, 1.0) == 100
    assert quantile(values, 0.0) == 1
    assert quantile([7.0], 0.99) == 7
    assert math.isnan(quantile([], 0.5))
    with pytest.raises(ValueError):
        quantile(values, 1.5)
    q = Quantiles.of_seconds([0.001, 0.003, 0.002])
    assert (q.count, q.p50, q.max, q.mean) == (
        3,
        pytest.approx(2),
        pytest.approx(3),
        pytest.approx(2),
    )


def test_latency_counts_from_the_scheduled_time_not_the_late_send() -> None:
    # meant for t=1.0, held back by the client until 1.5, answered at 1.6: 600 ms, not 100
    late = _call(1.0, 1.6, submitted=1.5)
    # sent half a millisecond early (coarse timers): counted from when it really went
    early = _call(2.0, 2.01, sent=1.9995, submitted=1.9995)
    step = summarize(10, "open", [late, early], (0.0, 3.0), ["m"], client_cpu_s=0.3)
    assert step.latency_ms.max == pytest.approx(600)
    assert step.latency_ms.p50 == pytest.approx(10.5)
    assert step.send_lag_ms.max == pytest.approx(500)
    assert step.unlagged_ms.max == pytest.approx(100)  # the server's share of the late call
    assert step.client_cpu_us_per_request == pytest.approx(0.3 / 2 * 1e6)
    assert step.client_cpu_share == pytest.approx(0.1)


def test_window_throughput_errors_and_models() -> None:
    calls = [
        _call(0.5, 0.6),  # warm-up: not counted
        _call(0.9, 1.05),  # scheduled before, answered inside: throughput only
        *(_call(1.0 + i / 10, 1.0 + i / 10 + 0.01, key=i % 2) for i in range(10)),
        _call(1.95, 2.2, key=1),  # scheduled inside, answered after: latency, not throughput
        _call(1.5, 1.6, status=503, key=1),
        _call(1.6, 1.7, status=0, error="no answer within 1 s (--timeout)"),
        _call(1.7, 1.7, error="cannot connect to http://x: refused"),
        _call(2.5, 2.6),  # after the window
    ]
    step = summarize(12, "open", calls, (1.0, 2.0), ["a", "b"], client_cpu_s=0.0)
    assert step.requests == 14
    assert step.ok == 11
    assert step.errors == 3 and step.error_rate == pytest.approx(3 / 14)
    assert step.errors_by_kind == {"HTTP 503": 1, "connect": 1, "timeout": 1}
    assert step.throughput_rps == pytest.approx(11.0)  # answers to the calls of the window
    assert step.answered_rps == pytest.approx(11.0)  # 10 inside + the one from before
    assert step.backlog_growth == -1  # two in flight at the start, one at the end
    assert step.offered_rps == pytest.approx(14.0)
    assert step.per_model["b"].requests == 7 and step.per_model["b"].errors == 1
    assert step.sent_total == len(calls) and step.ok_total == 14


def test_error_kinds() -> None:
    assert error_kind(503, "") == "HTTP 503"
    assert error_kind(0, "no answer within 2 s") == "timeout"
    assert error_kind(0, "connection closed by the server: EOF") == "closed"
    assert error_kind(0, "bad HTTP response: x") == "protocol"
