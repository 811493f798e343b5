"""HAProxy 2.8+ configuration for a modelyard fleet (see :mod:`modelyard.fleet.router`)."""

from __future__ import annotations

import zlib

from modelyard.fleet.router import Address, FleetSpec

# v2 paths are /v2/models/<name>/... : the 4th field when splitting on "/" (the 1st is empty)
_V2_KEY = "path,field(4,/)"
_REPO_KEY = "path,field(5,/)"  # /v2/repository/models/<name>/load
# TargetModel as the server reads it: "dir/m_2.tar.gz" -> "m" (the last path step, without
# the archive suffix and the version), so both faces of a model hash to the same server
# the one streaming RPC of KServe v2 gRPC (Triton's extension)
_STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
_SAGEMAKER_KEY = (
    '\'req.hdr(X-Amzn-SageMaker-Target-Model),regsub("^.*/",""),'
    'regsub("[.](tar[.]gz|tgz)$",""),regsub("_[0-9]+$","")\''
)


def render_haproxy(spec: FleetSpec) -> str:
    lines = [*_header(spec), *_global(spec), *_defaults(spec)]
    if spec.uses_dns:
        lines += _resolvers()
    if spec.admin is not None:
        lines += _stats(spec.admin)
    lines += _frontend_http(spec)
    lines += _backend("modelyard_http", spec, grpc=False)
    if spec.grpc_port is not None:
        lines += _frontend_grpc(spec)
        lines += _backend("modelyard_grpc", spec, grpc=True)
    return "\n".join(lines) + "\n"


def _header(spec: FleetSpec) -> list[str]:
    bound = (
        f"{spec.balance_factor}% of the fleet's average requests in flight"
        if spec.balance_factor
        else "off (a hot model stays on its one server)"
    )
    return [
        "# HAProxy configuration for a modelyard fleet: model-affinity routing.",
        f"# Written by: {spec.command or 'modelyard.fleet.render'}",
        "# Check it with `haproxy -c -f <this file>`; run it with `haproxy -f <this file>`.",
        "#",
        "# Each request is hashed on its model's name onto a consistent-hash ring of the",
        "# servers, so a model's requests go to the server that already holds it in memory.",
        f"# Bounded load: {bound}; past it, the next server on the ring.",
        "# A server failing /v2/health/ready (dead, or draining on SIGTERM) leaves the ring",
        "# at once: its models go to their next ring owner, no other model moves. A request",
        "# that cannot connect, loses its connection or gets 503 is retried once elsewhere.",
        "# docs/fleet.md explains each choice.",
        "",
    ]


def _global(spec: FleetSpec) -> list[str]:
    return [
        "global",
        "    # stays in the foreground (containers, systemd); logs go to standard output",
        "    log stdout format raw local0 notice",
        "    # connections at once (each takes two file descriptors); raise with the fd limit",
        "    maxconn 4096",
        "    # buffer room for a whole request: HAProxy retries only a request it still holds,",
        "    # so inference bodies up to this size are retried after a server dies",
        "    tune.bufsize 131072",
        "",
    ]


def _defaults(spec: FleetSpec) -> list[str]:
    t = spec.timeout_s
    return [
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    timeout connect 2s",
        "    # a request may wait for its model to load on first use (--load-wait-timeout)",
        f"    timeout client {t}s",
        f"    timeout server {t}s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 60s",
        "    timeout queue 30s",
        "    # retry once, on another server (the next on the ring): a connection refused or",
        "    # reset (a dead server), an empty answer (one killed mid-request), or 503 (a",
        "    # server draining, or one that cannot fit the model now). Inference is",
        "    # idempotent; nothing else (4xx, 500) is retried.",
        "    retries 1",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 503",
        "    option http-buffer-request",
        "",
    ]


def _resolvers() -> list[str]:
    return [
        "# DNS names are re-resolved while running (Kubernetes pods come and go)",
        "resolvers dns",
        "    parse-resolv-conf",
        "    accepted_payload_size 8192",
        "    hold valid 5s",
        "    hold obsolete 10s",
        "",
    ]


def _stats(admin: Address) -> list[str]:
    return [
        "# the proxy's own figures: a stats page, and Prometheus metrics on /metrics",
        "frontend stats",
        f"    bind {admin}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 5s",
        "",
    ]


def _frontend_http(spec: FleetSpec) -> list[str]:
    return [
        "frontend modelyard_http",
        f"    bind {spec.listen}",
        "    # the routing key: the model's name, wherever the request carries it",
        "    #   KServe v2: /v2/models/<name>/... (infer, metadata, ready, versions/<v>/...)",
        f"    http-request set-var(txn.model) {_V2_KEY} if {{ path_beg /v2/models/ }}",
        "    #   the repository API: /v2/repository/models/<name>/load|unload",
        f"    http-request set-var(txn.model) {_REPO_KEY} if {{ path_beg /v2/repository/models/ }}",
        "    #   SageMaker's InvokeEndpoint: the X-Amzn-SageMaker-Target-Model header",
        f"    http-request set-var(txn.model) {_SAGEMAKER_KEY} if {{ path_beg /endpoints/ }}"
        " { req.hdr(X-Amzn-SageMaker-Target-Model) -m found }",
        "    # requests without a model (health, server metadata, /metrics) go round-robin",
        "    default_backend modelyard_http",
        "",
    ]


def _frontend_grpc(spec: FleetSpec) -> list[str]:
    return [
        "# gRPC (HTTP/2): the model name is inside the protobuf body, so clients send it as",
        f"# the '{spec.grpc_header}' metadata key too (tritonclient: headers={{...}})",
        "frontend modelyard_grpc",
        f"    bind {spec.grpc_listen} proto h2",
        f"    http-request set-var(txn.model) req.hdr({spec.grpc_header})",
        "    # a unary call's request is held whole (so it can be retried, as over HTTP), but",
        "    # not a stream's: ModelStreamInfer's request body lasts as long as the stream,",
        "    # and holding it would stall the stream until `timeout http-request` (408)",
        "    no option http-buffer-request",
        f"    http-request wait-for-body time 30s if !{{ path {_STREAM_PATH} }}",
        "    default_backend modelyard_grpc",
        "",
    ]


def _backend(name: str, spec: FleetSpec, *, grpc: bool) -> list[str]:
    lines = [
        f"backend {name}",
        "    # consistent hashing on the model name: a server leaving or joining moves only",
        "    # the models it owns",
        "    balance hash var(txn.model)",
        "    hash-type consistent",
    ]
    if spec.balance_factor:
        lines += [
            f"    # bounded load: no server above {spec.balance_factor}% of the average requests",
            "    # in flight; a hot model's excess goes to the next server on the ring",
            f"    hash-balance-factor {spec.balance_factor}",
        ]
    lines += [
        "    # readiness: 200 when serving; a draining or dead server fails at once (fall 1)",
        "    option httpchk",
        "    http-check send meth GET uri /v2/health/ready",
        "    http-check expect status 200",
    ]
    if grpc:
        lines += [
            "    # HTTP/2 without TLS to the servers' gRPC port; health is checked on their",
            "    # HTTP port, in HTTP/1.1 (check-proto h1)",
            "    # (a stream's request is not held whole: see the frontend)",
            "    no option http-buffer-request",
        ]
    dns = " resolvers dns init-addr last,libc,none" if spec.uses_dns else ""
    lines += [
        "    # a connection refused also marks the server down at once (observe layer4)",
        "    default-server check inter 1s fall 1 rise 2 observe layer4 error-limit 1"
        f" on-error mark-down{dns}",
    ]
    ids = _stable_ids(spec.servers)
    if spec.servers:
        lines.append(
            "    # each server's id (its place on the ring) comes from its address, so adding or"
        )
        lines.append("    # removing one server never moves the models of another")
    for address in spec.servers:
        target, extra = _target(address, spec, grpc)
        lines.append(f"    server {_name(address)} {target} id {ids[address]}{extra}")
    for address in spec.discover:
        target, extra = _target(address, spec, grpc)
        lines += [
            f"    # every address {address.host} resolves to (up to {spec.discovered_slots}),"
            " as it changes",
            f"    server-template {_name(address)}- {spec.discovered_slots} {target}"
            f" init-addr none{extra}",
        ]
    lines.append("")
    return lines


def _target(address: Address, spec: FleetSpec, grpc: bool) -> tuple[str, str]:
    if not grpc or spec.grpc_port is None:
        return str(address), ""
    # the check speaks HTTP/1.1 to the HTTP port: without check-proto it would take the
    # server's h2, which the HTTP port does not speak, and every server would fail its check
    return str(Address(address.host, spec.grpc_port)), (
        f" proto h2 port {address.port} check-proto h1"
    )


def _name(address: Address) -> str:
    """A server name HAProxy accepts and an operator recognises: host and port."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(address))


def _stable_ids(servers: tuple[Address, ...]) -> dict[Address, int]:
    ids: dict[Address, int] = {}
    taken: set[int] = set()
    for address in servers:
        value = zlib.crc32(str(address).encode()) % 1_000_000 + 1
        while value in taken:  # two addresses whose checksums collide: the next free id
            value = value % 1_000_000 + 1
        taken.add(value)
        ids[address] = value
    return ids
