"""The router-config generator: parsing, refusals, and what the files say.

That HAProxy and Envoy accept and run these files is tests/integration/test_fleet.py's
part (the real binaries); here, the decisions in the text.
"""

from __future__ import annotations

import re

import pytest

from modelyard.fleet import Address, RouterConfigError, parse_address, render


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", Address("127.0.0.1", 8000)),
        ("[::1]:8000", Address("::1", 8000)),
        (
            "modelyard-0.modelyard.prod.svc.cluster.local:8000",
            Address("modelyard-0.modelyard.prod.svc.cluster.local", 8000),
        ),
        (" localhost:1 ", Address("localhost", 1)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected
    assert parse_address(str(expected)) == expected  # str() is HOST:PORT again


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "is not HOST:PORT"),
        (":8000", "is not HOST:PORT"),
        ("host:0", "from 1 to 65535"),
        ("host:65536", "from 1 to 65535"),
        ("host:80a", "from 1 to 65535"),
        ("::1:8000", "neither an IP address nor a DNS name"),
        ("[nope]:8000", "is not an IPv6 address"),
        ("bad_name:8000", "neither an IP address nor a DNS name"),
        ("a b:8000", "neither an IP address nor a DNS name"),
        ("-x.example:8000", "neither an IP address nor a DNS name"),
        ("x\n  server evil 1.2.3.4:1:8000", "neither an IP address nor a DNS name"),
    ],
)
def test_parse_address_refuses(text: str, message: str) -> None:
    with pytest.raises(RouterConfigError, match=re.escape(message)):
        parse_address(text)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"router": "nginx", "servers": ["127.0.0.1:1"]}, "is not one of: haproxy, envoy"),
        ({"router": "haproxy"}, "at least one server"),
        ({"router": "haproxy", "servers": ["127.0.0.1:1", "127.0.0.1:1"]}, "given twice"),
        ({"router": "envoy", "servers": ["127.0.0.1:1"], "balance_factor": 100}, "over 100"),
        ({"router": "envoy", "servers": ["127.0.0.1:1"], "balance_factor": -5}, "over 100"),
        ({"router": "envoy", "discover": ["10.0.0.1:8000"]}, "must be a DNS name"),
        ({"router": "envoy", "servers": ["127.0.0.1:1"], "grpc_header": "X-Model"}, "lower-case"),
        ({"router": "haproxy", "servers": ["127.0.0.1:1"], "grpc_port": 0}, "gRPC port"),
        ({"router": "haproxy", "servers": ["127.0.0.1:1"], "listen": "0.0.0.0"}, "listen address"),
    ],
)
def test_render_refuses(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RouterConfigError, match=re.escape(message)):
        render(**kwargs)  # type: ignore[arg-type]


def _server_ids(config: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+server (\S+) \S+ id (\d+)", config, re.MULTILINE))


def test_haproxy_ring_places_do_not_depend_on_the_other_servers() -> None:
    """A server's id is its place on HAProxy's ring: adding a server or reordering the list
    must leave every other server's id, or its models would move."""
    three = _server_ids(render("haproxy", ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]))
    four = _server_ids(
        render("haproxy", ["10.0.0.4:8000", "10.0.0.3:8000", "10.0.0.2:8000", "10.0.0.1:8000"])
    )
    assert len(set(three.values())) == 3
    assert {k: four[k] for k in three} == three


def test_haproxy_keys_and_bound() -> None:
    text = render("haproxy", ["10.0.0.1:8000"], balance_factor=125)
    assert "balance hash var(txn.model)" in text
    assert "hash-type consistent" in text
    assert "hash-balance-factor 125" in text
    assert "http-check send meth GET uri /v2/health/ready" in text
    assert "retries 1" in text
    assert "retry-on conn-failure empty-response 503" in text
    assert "resolvers" not in text  # only IP addresses: nothing to resolve
    assert "hash-balance-factor" not in render("haproxy", ["10.0.0.1:8000"], balance_factor=0)


def test_dns_names_are_resolved_while_running() -> None:
    haproxy = render("haproxy", ["modelyard-0.modelyard:8000"], discover=["modelyard:8000"])
    assert "resolvers dns" in haproxy
    assert "init-addr last,libc,none" in haproxy  # starts before the name resolves
    assert "server-template modelyard_8000- 16 modelyard:8000" in haproxy
    envoy = render("envoy", ["modelyard-0.modelyard:8000"])
    assert "type: STRICT_DNS" in envoy
    assert "type: STATIC" in render("envoy", ["10.0.0.1:8000"])


def test_envoy_keys_and_bound() -> None:
    text = render("envoy", ["10.0.0.1:8000"], balance_factor=175)
    assert "envoy.load_balancing_policies.ring_hash" in text
    assert "hash_balance_factor: 175" in text
    assert 'header_name: ":path"' in text
    assert 'header_name: "x-amzn-sagemaker-target-model"' in text
    assert "num_retries: 1" in text
    assert "envoy.retry_host_predicates.previous_hosts" in text
    assert "healthy_panic_threshold: {value: 0}" in text


def test_envoy_target_model_key_matches_the_server_parser() -> None:
    """The TargetModel rewrite gives the name the server serves (wire.sagemaker's parser)."""
    from modelyard.fleet._envoy import _TARGET_MODEL
    from modelyard.wire.sagemaker import parse_target_model

    for target in ("m", "m_2.tar.gz", "dir/m_2.tar.gz", "m.tgz", "my_model", "my_model_10.tar.gz"):
        assert re.sub(_TARGET_MODEL, r"\1", target) == parse_target_model(target)[0], target


def test_grpc_routes_on_the_metadata_key() -> None:
    for router in ("haproxy", "envoy"):
        text = render(router, ["10.0.0.1:8000"], grpc_port=8001, grpc_header="model-name")
        assert "model-name" in text
        assert "8001" in text
    assert "proto h2 port 8000" in render("haproxy", ["10.0.0.1:8000"], grpc_port=8001)
    assert "x-model-name" not in render("envoy", ["10.0.0.1:8000"])  # no gRPC unless asked


def test_admin_listener_defaults_to_loopback_and_can_be_off() -> None:
    assert "bind 127.0.0.1:8404" in render("haproxy", ["10.0.0.1:8000"])
    assert "frontend stats" not in render("haproxy", ["10.0.0.1:8000"], admin="")
    assert '"127.0.0.1", port_value: 9901' in render("envoy", ["10.0.0.1:8000"])
    assert "admin:" not in render("envoy", ["10.0.0.1:8000"], admin="")


def test_the_command_goes_on_one_comment_line() -> None:
    text = render("haproxy", ["10.0.0.1:8000"], command="modelyard fleet\nrouter-config")
    assert "# Written by: modelyard fleet router-config\n" in text


def test_haproxy_grpc_checks_in_http1_and_does_not_hold_a_stream() -> None:
    text = render("haproxy", ["10.0.0.1:8000"], grpc_port=8001)
    grpc = text[text.index("frontend modelyard_grpc") :]
    # the servers' HTTP port speaks HTTP/1.1: a check in the server's h2 fails on every one
    assert "server 10.0.0.1_8000 10.0.0.1:8001 id" in grpc
    assert "proto h2 port 8000 check-proto h1" in grpc
    # ModelStreamInfer's request body lasts as long as the stream: held whole, the stream
    # stalled until `timeout http-request` (408); unary calls are still held, for the retry
    assert grpc.count("no option http-buffer-request") == 2  # frontend and backend
    assert (
        "http-request wait-for-body time 30s if "
        "!{ path /inference.GRPCInferenceService/ModelStreamInfer }"
    ) in grpc
    http = text[: text.index("frontend modelyard_grpc")]
    assert "no option http-buffer-request" not in http  # HTTP keeps the defaults' buffering
    assert "check-proto" not in http


def test_envoy_places_a_server_by_its_http_address_in_both_clusters() -> None:
    """Envoy's ring hashes each host's address by default: the gRPC cluster's are other ports,
    so a model's HTTP and gRPC requests landed on different servers (each loading a copy)."""
    text = render("envoy", ["10.0.0.1:8000", "[::1]:8000"], grpc_port=8001)
    for key in ('"10.0.0.1:8000"', '"[::1]:8000"'):
        assert text.count(f"envoy.lb: {{hash_key: {key}}}") == 2, key  # HTTP and gRPC
    # a discovered name stands for many servers: one key for all would stack them on the
    # ring, so they keep Envoy's default (their addresses)
    found = render("envoy", discover=["modelyard.prod.svc:8000"], grpc_port=8001)
    assert "hash_key" not in found


def test_envoy_retries_a_grpc_unavailable_once_elsewhere() -> None:
    text = render("envoy", ["10.0.0.1:8000"], grpc_port=8001)
    http, grpc = text.split("- name: modelyard_grpc", 1)
    assert "retry_on: connect-failure,reset,refused-stream,retriable-status-codes,unavailable" in (
        grpc
    )
    assert "unavailable" not in http  # HTTP has statuses of its own (503)
