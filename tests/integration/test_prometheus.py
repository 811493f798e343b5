"""The Grafana dashboard and the Prometheus rules, against a real Prometheus scraping a real
server: every query in ``deploy/grafana/modelyard.json`` and ``deploy/prometheus/`` returns
data (a finite value); ``promtool`` accepts the rules and the sample configuration, and the
alerts pass their unit tests (``modelyard-rules.test.yml``).

The server serves three models from S3 (moto) under a memory budget that holds one of them,
so the traffic below makes every family move: successes on two models that evict each other
(hits, misses, loads, load waits, evictions), a model whose file is not ONNX (failed loads),
a request with a wrong input and one for an unknown model (errors by reason), and a model
stored now and then (downloads). A second scrape target has nothing listening: the
ModelyardDown alert's query has a server that is down.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelyard.testing import RunningServer, running_server
from modelyard.testing.server import free_port
from tests.factories.onnx_models import mlp
from tests.integration.s3_server import MotoServer
from tests.integration.test_on_demand import _mlp_body

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "modelyard.json"
RULES = DEPLOY / "prometheus" / "modelyard-rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "modelyard-rules.test.yml"
SAMPLE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
BODY = _mlp_body()
WRONG_INPUT = {"name": "NOT_AN_INPUT", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}
DEADLINE = 180.0  # seconds for every query to have data: generous, never a timing assertion


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/install-system installs it (Debian's)")
    return path


def _artifact(name: str, model: bytes) -> bytes:
    """``<name>_1.tar.gz`` as the deploy loop packs it (auto-completed: no config)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{name}/1/model.onnx")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
    return buf.getvalue()


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture
def server(moto_server: MotoServer, s3: Any, bucket: str) -> Iterator[RunningServer]:
    for name, seed in (("mlp", 1), ("mlp2", 2)):
        s3.put_object(
            Bucket=bucket, Key=f"models/{name}_1.tar.gz", Body=_artifact(name, mlp(seed=seed))
        )
    s3.put_object(
        Bucket=bucket, Key="models/corrupt_1.tar.gz", Body=_artifact("corrupt", b"no onnx")
    )
    env = {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    url = f"s3://{moto_server.host_port}/{bucket}/models"
    # the mlp models book ~9 MB each: one fits, the next evicts it
    with running_server(url, ["--memory-budget", "14MiB"], env=env) as s:
        yield s


@pytest.fixture
def prometheus(server: RunningServer, tmp_path: Path) -> Iterator[Prometheus]:
    binary = _tool("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "modelyard",
                "static_configs": [
                    # the metrics port, as production scrapes it; and a server that is down
                    {
                        "targets": [
                            f"{server.host}:{server.metrics_port}",
                            f"127.0.0.1:{free_port()}",
                        ]
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}: {log.read_text()}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready after 60 s: {log.read_text()}")
            time.sleep(0.1)
        yield Prometheus(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Traffic:
    """Rounds of requests on a thread until stopped; each round moves every family."""

    def __init__(self, server: RunningServer, s3: Any, bucket: str) -> None:
        self.server, self.s3, self.bucket = server, s3, bucket
        self.codes: dict[str, set[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self.error: BaseException | None = None

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _post(self, http: httpx.Client, kind: str, model: str, body: dict[str, Any]) -> None:
        code = http.post(f"/v2/models/{model}/infer", json=body).status_code
        self.codes.setdefault(kind, set()).add(code)

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.server.base_url, timeout=120) as http:
                for i in range(10_000):
                    for model in ("mlp", "mlp2"):  # each evicts the other: a miss, then hits
                        for _ in range(4):
                            self._post(http, "ok", model, BODY)
                    wrong = {"inputs": [WRONG_INPUT]}
                    self._post(http, "invalid", "mlp", wrong)
                    self._post(http, "unknown", "no_such_model", BODY)
                    self._post(http, "load_failed", "corrupt", BODY)
                    if i % 10 == 0:  # a model stored now: downloaded at its first request
                        name = f"new{i}"
                        self.s3.put_object(
                            Bucket=self.bucket,
                            Key=f"models/{name}_1.tar.gz",
                            Body=_artifact(name, mlp(seed=3)),
                        )
                        self._post(http, "ok", name, BODY)
                    if self._stop.wait(0.2):
                        return
        except BaseException as exc:  # shown by the test, not lost on the thread
            self.error = exc


# -- the queries -------------------------------------------------------------------------


def dashboard_queries(substitute: dict[str, str]) -> dict[str, str]:
    """``title -> expr`` of every panel target and query variable, variables substituted
    (Grafana's ``label_values(series, label)`` as the PromQL that finds the same values)."""

    def fill(expr: str) -> str:
        for name, value in sorted(substitute.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(f"${name}", value).replace(f"${{{name}}}", value)
        assert "$" not in expr, f"unsubstituted variable in {expr!r}"
        return expr

    dash = json.loads(DASHBOARD.read_text())
    out: dict[str, str] = {}
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = fill(target["expr"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
            assert m is not None, var["query"]
            out[f"variable {var['name']}"] = fill(f"count by ({m[2]}) ({m[1]})")
    return out


# a comparison with a number at the end of an alert's condition: the threshold
_THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.eE+-]+\s*$")


def rule_queries() -> dict[str, str]:
    """``rule -> expr`` for every rule; an alert's conditions without their thresholds (the
    quantity it watches must have data; the threshold decides whether it fires)."""
    out: dict[str, str] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                out[f"record {rule['record']}"] = rule["expr"]
                continue
            parts = re.split(r"\n\s*and\s+", rule["expr"].strip())
            for i, part in enumerate(parts):
                measured = _THRESHOLD.sub("", part)
                assert measured != part, f"alert {rule['alert']}: no threshold in {part!r}"
                out[f"alert {rule['alert']} part {i}"] = measured
    return out


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def _value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if result else None


def _scraped_sum(server: RunningServer, family: str) -> float:
    """The sum of a family's samples on the server's /metrics now, as Prometheus reads it."""
    text = httpx.get(f"http://{server.host}:{server.metrics_port}/metrics", timeout=30).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name in (family, f"{family}_total")
    )


# -- the tests ---------------------------------------------------------------------------


def test_promtool_accepts_rules_config_and_rule_tests() -> None:
    promtool = _tool("promtool")
    rules = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout
    config = subprocess.run(
        [promtool, "check", "config", str(SAMPLE_CONFIG)], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    # each alert fires on the series that should fire it (after its ``for``), and only there
    tests = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_dashboard_is_importable() -> None:
    """What Grafana needs to import it as is: a Prometheus data-source variable that every
    panel and variable queries through, and the job/instance/model variables."""
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "modelyard" and dash["id"] is None and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance", "model"} <= set(variables)
    ds = {"type": "prometheus", "uid": "${datasource}"}
    queried = [p for p in dash["panels"] if p["type"] != "row"]
    assert all(p["datasource"] == ds for p in queried)
    assert all(t["datasource"] == ds for p in queried for t in p["targets"])
    assert all(v["datasource"] == ds for v in variables.values() if v["type"] == "query")
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dash["panels"])


def test_every_dashboard_and_rule_query_returns_data(
    server: RunningServer, prometheus: Prometheus, s3: Any, bucket: str
) -> None:
    queries = {
        **dashboard_queries(
            {
                "job": "modelyard",
                "instance": f"{server.host}:{server.metrics_port}",
                "model": "(mlp|mlp2|corrupt)",  # Grafana's form of a multi-value selection
                "__rate_interval": "1m",
            }
        ),
        **rule_queries(),
    }
    # alerts whose condition holds in this test, threshold and all: the dead target is down,
    # the model that is not ONNX failed to load
    firing = {
        "ModelyardDown": next(
            r["expr"]
            for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"]
            if r.get("alert") == "ModelyardDown"
        ),
        "ModelyardModelLoadFailures": next(
            r["expr"]
            for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"]
            if r.get("alert") == "ModelyardModelLoadFailures"
        ),
    }
    waiting = dict(queries)
    with Traffic(server, s3, bucket) as traffic:
        deadline = time.monotonic() + DEADLINE
        while waiting and time.monotonic() < deadline and traffic.error is None:
            for name, expr in list(waiting.items()):
                if _has_data(prometheus.query(expr)):
                    del waiting[name]
            time.sleep(0.5)
    assert traffic.error is None, traffic.error
    assert not waiting, f"no data after {DEADLINE:g} s: {json.dumps(waiting, indent=1)}"
    # the traffic was what the queries were meant to see
    assert traffic.codes["ok"] == {200}
    assert traffic.codes["invalid"] == {400}
    assert traffic.codes["unknown"] == {404}
    assert 200 not in traffic.codes["load_failed"]
    down = prometheus.query(firing["ModelyardDown"])
    assert [r["metric"]["instance"] for r in down] != []
    assert f"{server.host}:{server.metrics_port}" not in {r["metric"]["instance"] for r in down}
    failed = prometheus.query(firing["ModelyardModelLoadFailures"])
    assert {r["metric"]["model"] for r in failed} == {"corrupt"}
    # the same truth as /metrics: once the traffic has stopped, Prometheus's latest scrape
    # holds exactly the server's counters
    instance = f'instance="{server.host}:{server.metrics_port}"'
    for family in (
        "nv_inference_request_success",
        "modelyard_model_cache_misses_total",
        "modelyard_model_evictions_total",
        "modelyard_request_errors_total",
    ):
        own = _scraped_sum(server, family)
        assert own > 0, family
        deadline = time.monotonic() + DEADLINE
        while _value(prometheus.query(f"sum({family}{{{instance}}})")) != own:
            assert time.monotonic() < deadline, f"{family}: Prometheus never showed {own}"
            time.sleep(0.5)
    # errors by reason, as the server counted them
    reasons = {
        r["metric"]["reason"]
        for r in prometheus.query("sum by (reason) (modelyard_request_errors_total)")
    }
    assert {"invalid_request", "model_not_found", "load_failed"} <= reasons
