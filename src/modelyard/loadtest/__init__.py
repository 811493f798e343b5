"""``modelyard loadtest``: find the request rate a server holds within a latency SLO, and the
autoscaling target that follows (docs/loadtest.md).

    plan.py      arrival schedules, the model mix draw, the stepping rule (pure)
    stats.py     a step's calls -> throughput, latency quantiles, send lag, client CPU (pure)
    policy.py    a step's verdict against the SLO; the recommendation rule (pure)
    workload.py  the model mix and real request bodies (metadata or recorded test cases)
    engine.py    the run: cold starts, then open- or closed-loop steps on one event loop
    report.py    the JSON document, the HTML/SVG and PNG plots
    _http.py     the keep-alive HTTP/1.1 client the load goes through (httptools)

A client of the server: above ``deploy`` (it reads the deploy loop's test cases), below
``cli``, and never imports the server's layers. It prints nothing; ``cli/loadtest.py`` draws.
"""

from modelyard.loadtest.engine import (
    Event,
    LoadTestFailed,
    ModelInfo,
    Options,
    Result,
    run_loadtest,
)
from modelyard.loadtest.plan import StepPlan
from modelyard.loadtest.policy import Recommendation, Slo
from modelyard.loadtest.stats import StepResult
from modelyard.loadtest.workload import MixEntry, MixError, load_mix_file, parse_model_option

__all__ = [
    "Event",
    "LoadTestFailed",
    "MixEntry",
    "MixError",
    "ModelInfo",
    "Options",
    "Recommendation",
    "Result",
    "Slo",
    "StepPlan",
    "StepResult",
    "load_mix_file",
    "parse_model_option",
    "run_loadtest",
]
