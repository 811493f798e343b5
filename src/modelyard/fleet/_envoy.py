"""Envoy 1.28+ configuration (static, YAML) for a modelyard fleet (see :mod:`.router`)."""

from __future__ import annotations

import json

from modelyard.fleet.router import Address, FleetSpec

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_RING = "type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash"
_PREVIOUS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HTTP_OPTIONS_TYPE = f"type.googleapis.com/{_HTTP_OPTIONS}"

# RE2, on the request's :path (query string included): the model's name
_V2_PATH = r"^/v2/models/([^/?]+).*$"
_REPO_PATH = r"^/v2/repository/models/([^/?]+).*$"
# TargetModel as the server reads it: "dir/m_2.tar.gz" -> "m"
_TARGET_MODEL = r"^\s*(?:.*/)?(.+?)(?:_[0-9]+)?(?:\.tar\.gz|\.tgz)?\s*$"


def _q(value: str) -> str:
    """A YAML scalar in double quotes (JSON strings are valid YAML)."""
    return json.dumps(value)


def render_envoy(spec: FleetSpec) -> str:
    lines = [*_header(spec)]
    if spec.admin is not None:
        lines += [
            "# the proxy's own figures (/stats, /stats/prometheus, /clusters); keep it private:",
            "# the admin interface can also change and stop the proxy",
            "admin:",
            f"  address: {_socket(spec.admin)}",
        ]
    lines += ["static_resources:", "  listeners:"]
    lines += _listener("modelyard_http", spec.listen, _http_routes(spec), spec)
    if spec.grpc_port is not None:
        lines += _listener("modelyard_grpc", spec.grpc_listen, _grpc_routes(spec), spec)
    lines += ["  clusters:"]
    lines += _cluster("modelyard_http", spec, grpc=False)
    if spec.grpc_port is not None:
        lines += _cluster("modelyard_grpc", spec, grpc=True)
    return "\n".join(lines) + "\n"


def _header(spec: FleetSpec) -> list[str]:
    bound = (
        f"{spec.balance_factor}% of the fleet's average requests in flight"
        if spec.balance_factor
        else "off (a hot model stays on its one server)"
    )
    return [
        "# Envoy configuration for a modelyard fleet: model-affinity routing.",
        f"# Written by: {spec.command or 'modelyard.fleet.render'}",
        "# Check it with `envoy --mode validate -c <this file>`; run it with `envoy -c <this file>`.",
        "#",
        "# Each request is hashed on its model's name onto a consistent-hash ring (RING_HASH)",
        "# of the servers, so a model's requests go to the server that already holds it.",
        f"# Bounded load: {bound}; past it, the next server on the ring.",
        "# A server failing /v2/health/ready (dead, or draining on SIGTERM) leaves the ring",
        "# at once: its models go to their next ring owner, no other model moves. A request",
        "# that cannot connect, loses its connection or gets 503 is retried once elsewhere.",
        "# docs/fleet.md explains each choice.",
        "",
    ]


def _socket(address: Address) -> str:
    return f"{{socket_address: {{address: {_q(address.host)}, port_value: {address.port}}}}}"


def _listener(name: str, address: Address, routes: list[str], spec: FleetSpec) -> list[str]:
    return [
        f"  - name: {name}",
        f"    address: {_socket(address)}",
        "    filter_chains:",
        "    - filters:",
        "      - name: envoy.filters.network.http_connection_manager",
        "        typed_config:",
        f"          '@type': {_HCM}",
        f"          stat_prefix: {name}",
        "          codec_type: AUTO",
        "          # a request may wait for its model to load on first use (--load-wait-timeout)",
        f"          stream_idle_timeout: {spec.timeout_s}s",
        "          route_config:",
        f"            name: {name}",
        "            virtual_hosts:",
        "            - name: modelyard",
        "              domains: ['*']",
        "              routes:",
        *routes,
        "          http_filters:",
        "          - name: envoy.filters.http.router",
        f"            typed_config: {{'@type': {_ROUTER}}}",
    ]


def _route(
    match: str,
    cluster: str,
    spec: FleetSpec,
    hash_header: str | None,
    rewrite: str | None,
    *,
    grpc: bool = False,
) -> list[str]:
    lines = [
        f"              - match: {match}",
        "                route:",
        f"                  cluster: {cluster}",
        f"                  timeout: {spec.timeout_s}s",
    ]
    if hash_header is not None:
        lines += ["                  hash_policy:", "                  - header:"]
        lines.append(f"                      header_name: {_q(hash_header)}")
        if rewrite is not None:
            lines += [
                "                      regex_rewrite:",
                f"                        pattern: {{regex: {_q(rewrite)}}}",
                "                        substitution: '\\1'",
            ]
    lines += _retry_policy(grpc)
    return lines


def _retry_policy(grpc: bool) -> list[str]:
    grpc_lines = [
        "                  # gRPC answers 200 and puts its status in grpc-status: UNAVAILABLE",
        "                  # is a draining server refusing a new call (gRPC's 503)",
    ]
    retry_on = "connect-failure,reset,refused-stream,retriable-status-codes"
    return [
        "                  # retry once, on another server (the next on the ring): a",
        "                  # connection refused or reset (a dead server) or 503 (a server",
        "                  # draining, or one that cannot fit the model now); inference is",
        "                  # idempotent, nothing else (4xx, 500) is retried",
        *(grpc_lines if grpc else []),
        "                  retry_policy:",
        f"                    retry_on: {retry_on}{',unavailable' if grpc else ''}",
        "                    retriable_status_codes: [503]",
        "                    num_retries: 1",
        "                    retry_host_predicate:",
        "                    - name: envoy.retry_host_predicates.previous_hosts",
        f"                      typed_config: {{'@type': {_PREVIOUS}}}",
        "                    host_selection_retry_max_attempts: 5",
    ]


def _http_routes(spec: FleetSpec) -> list[str]:
    c = "modelyard_http"
    return [
        "              # the routing key: the model's name, wherever the request carries it",
        "              #   KServe v2: /v2/models/<name>/... (infer, metadata, ready, versions)",
        *_route("{prefix: /v2/models/}", c, spec, ":path", _V2_PATH),
        "              #   the repository API: /v2/repository/models/<name>/load|unload",
        *_route("{prefix: /v2/repository/models/}", c, spec, ":path", _REPO_PATH),
        "              #   SageMaker's InvokeEndpoint: the X-Amzn-SageMaker-Target-Model header",
        *_route("{prefix: /endpoints/}", c, spec, "x-amzn-sagemaker-target-model", _TARGET_MODEL),
        "              # requests without a model (health, server metadata, /metrics): any server",
        *_route("{prefix: /}", c, spec, None, None),
    ]


def _grpc_routes(spec: FleetSpec) -> list[str]:
    return [
        "              # gRPC: the model name is inside the protobuf body, so clients send it",
        f"              # as the '{spec.grpc_header}' metadata key too (tritonclient: headers=)",
        *_route("{prefix: /}", "modelyard_grpc", spec, spec.grpc_header, None, grpc=True),
    ]


def _cluster(name: str, spec: FleetSpec, *, grpc: bool) -> list[str]:
    kind = "STRICT_DNS" if spec.uses_dns else "STATIC"
    lines = [
        f"  - name: {name}",
        f"    type: {kind}",
    ]
    if spec.uses_dns:
        lines += [
            "    # DNS names are re-resolved every 5 s; a name with many addresses (a",
            "    # Kubernetes headless service) is one server per address",
            "    dns_lookup_family: V4_PREFERRED",
        ]
    lines += [
        "    connect_timeout: 2s",
        "    # consistent hashing on the model name: a server leaving or joining moves only",
        "    # the models it owns",
        "    load_balancing_policy:",
        "      policies:",
        "      - typed_extension_config:",
        "          name: envoy.load_balancing_policies.ring_hash",
        "          typed_config:",
        f"            '@type': {_RING}",
        "            minimum_ring_size: 1024",
    ]
    if spec.balance_factor:
        lines += [
            f"            # bounded load: no server above {spec.balance_factor}% of the average requests",
            "            # in flight; a hot model's excess goes to the next server on the ring",
            "            consistent_hashing_lb_config:",
            f"              hash_balance_factor: {spec.balance_factor}",
        ]
    lines += [
        "    common_lb_config:",
        "      # never send to servers known to be down, however many are (no panic mode)",
        "      healthy_panic_threshold: {value: 0}",
        "    circuit_breakers:",
        "      # retries in flight at once: enough for every request of a server that died",
        "      thresholds: [{max_retries: 1024}]",
        "    # a server refusing or resetting a connection leaves the ring at once, before its",
        "    # next health check: without this, a retry under bounded load can pick it again",
        "    outlier_detection:",
        "      split_external_local_origin_errors: true",
        "      consecutive_local_origin_failure: 1",
        "      enforcing_consecutive_local_origin_failure: 100",
        "      consecutive_5xx: 1000000  # answers (503 included) never eject a server",
        "      interval: 1s",
        "      base_ejection_time: 5s",
        "      max_ejection_percent: 50",
        "    # readiness: 200 when serving; a draining or dead server fails at once",
        "    health_checks:",
        "    - timeout: 1s",
        "      interval: 1s",
        "      no_traffic_interval: 1s",
        "      unhealthy_threshold: 1",
        "      healthy_threshold: 2",
        "      http_health_check: {path: /v2/health/ready}",
        "    typed_extension_protocol_options:",
        f"      {_HTTP_OPTIONS}:",
        f"        '@type': {_HTTP_OPTIONS_TYPE}",
        "        # idle connections closed before the server's own keep-alive timeout (75 s)",
        "        common_http_protocol_options: {idle_timeout: 60s}",
    ]
    if grpc:
        lines += [
            "        # HTTP/2 without TLS to the servers' gRPC port",
            "        explicit_http_config: {http2_protocol_options: {}}",
        ]
    else:
        lines += ["        explicit_http_config: {http_protocol_options: {}}"]
    lines += [
        "    load_assignment:",
        f"      cluster_name: {name}",
        "      endpoints:",
        "      - lb_endpoints:",
    ]
    for address in (*spec.servers, *spec.discover):
        port = spec.grpc_port if grpc and spec.grpc_port is not None else address.port
        target = Address(address.host, port)
        lines.append("        - endpoint:")
        lines.append(f"            address: {_socket(target)}")
        if grpc:
            lines.append("            # health is checked on the server's HTTP port")
            lines.append(f"            health_check_config: {{port_value: {address.port}}}")
        if address in spec.servers:
            # its place on the ring: its HTTP address in both clusters (by default Envoy
            # hashes the address it connects to, another port for gRPC, so a model's HTTP
            # and gRPC requests would land on different servers, each loading a copy). A
            # discovered name stands for many servers, so it keeps the default.
            lines.append(
                "          metadata: {filter_metadata: {envoy.lb: "
                f"{{hash_key: {_q(str(address))}}}}}}}"
            )
    return lines
