"""Model-affinity routing on an off-the-shelf proxy: the configuration, as a pure function.

A fleet of modelyard servers shares one model store. Each request names its model, and the
router hashes that name onto a consistent-hash ring of the servers, so a model's requests go
to the server that already holds it (docs/fleet.md). The key is the model name wherever the
request carries it:

* KServe v2 HTTP: the path, ``/v2/models/<name>/...`` (and the repository API's
  ``/v2/repository/models/<name>/...``);
* SageMaker's client face (``POST /endpoints/<endpoint>/invocations``): the
  ``X-Amzn-SageMaker-Target-Model`` header, reduced to the model's name as the server parses
  it (``dir/m_2.tar.gz`` -> ``m``), so both faces of one model land on the same server;
* gRPC: the model name is inside the protobuf body, where no proxy looks, so clients send it
  in a metadata header as well (:data:`DEFAULT_GRPC_HEADER`).

Bounded load (``balance_factor``): a server may carry at most that percentage of the
fleet's average number of requests in flight; past it, a hot model's requests go to the next
server on the ring, which loads its own copy. Health checks on ``/v2/health/ready`` take a
dead or draining server out at once; its models move to their next ring owner and nothing
else moves. An inference request that fails to connect, finds its connection reset or gets
503 is retried once on the next server.

:func:`render` writes the whole configuration file, commented for the operator who reads it.
It reads nothing and starts nothing, so the CLI (``modelyard fleet router-config``) and the
Kubernetes manifests share it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DEFAULT_BALANCE_FACTOR",
    "DEFAULT_GRPC_HEADER",
    "DEFAULT_LISTEN",
    "ROUTERS",
    "Address",
    "FleetSpec",
    "RouterConfigError",
    "parse_address",
    "render",
]

Router = Literal["haproxy", "envoy"]
ROUTERS: Final = ("haproxy", "envoy")

DEFAULT_LISTEN: Final = "0.0.0.0:8000"  # where Triton's clients look for HTTP
DEFAULT_GRPC_LISTEN: Final = "0.0.0.0:8001"  # ... and for gRPC
DEFAULT_BALANCE_FACTOR: Final = 150  # percent of the average load; 0: unbounded
DEFAULT_GRPC_HEADER: Final = "x-model-name"
# the proxy's own statistics (HAProxy's stats page and Prometheus exporter; Envoy's admin),
# on loopback unless asked: Envoy's admin interface can also stop the proxy
DEFAULT_ADMIN: Final = {"haproxy": "127.0.0.1:8404", "envoy": "127.0.0.1:9901"}
DEFAULT_TIMEOUT_S: Final = 300  # a request may wait for its model to load, then run
DEFAULT_DISCOVERED_SLOTS: Final = 16

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_HEADER = re.compile(r"[a-z0-9][a-z0-9-]*")


class RouterConfigError(ValueError):
    """A router configuration cannot be written from these arguments (the message says why)."""


@dataclass(frozen=True)
class Address:
    """``host:port``; ``host`` is an IP address or a DNS name."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, what: str = "address") -> Address:
    """``HOST:PORT`` (IPv4, ``[IPv6]`` or a DNS name) or a :class:`RouterConfigError`."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise RouterConfigError(f"{what} '{text}' is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise RouterConfigError(f"{what} '{text}': '{host}' is not an IPv6 address") from None
    elif not _is_ipv4(host) and not _is_dns_name(host):
        raise RouterConfigError(
            f"{what} '{text}': '{host}' is neither an IP address nor a DNS name "
            "(IPv6 addresses go in brackets: [::1]:8000)"
        )
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RouterConfigError(f"{what} '{text}': the port must be a number from 1 to 65535")
    return Address(host, int(port_text))


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _is_dns_name(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


@dataclass(frozen=True)
class FleetSpec:
    """Everything a router configuration says, checked: what the renderers read."""

    servers: tuple[Address, ...]  # one server each (an IP, or a DNS name of one host)
    discover: tuple[Address, ...]  # DNS names standing for every address they resolve to
    listen: Address
    balance_factor: int
    admin: Address | None
    grpc_port: int | None
    grpc_listen: Address
    grpc_header: str
    discovered_slots: int
    timeout_s: int
    command: str  # the command line that wrote the file, for its header

    @property
    def uses_dns(self) -> bool:
        return bool(self.discover) or not all(s.is_ip for s in self.servers)


def render(
    router: str,
    servers: Sequence[str] = (),
    listen: str = DEFAULT_LISTEN,
    balance_factor: int = DEFAULT_BALANCE_FACTOR,
    *,
    discover: Sequence[str] = (),
    discovered_slots: int = DEFAULT_DISCOVERED_SLOTS,
    admin: str | None = None,
    grpc_port: int | None = None,
    grpc_listen: str = DEFAULT_GRPC_LISTEN,
    grpc_header: str = DEFAULT_GRPC_HEADER,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    command: str = "",
) -> str:
    """The configuration file of ``router`` ("haproxy" or "envoy") for this fleet.

    ``servers``: ``HOST:PORT`` of each modelyard server's HTTP port (an IP address, or a DNS
    name re-resolved at run time, such as a StatefulSet pod's). ``discover``: ``NAME:PORT``
    of a DNS name that resolves to many servers (a Kubernetes headless service); every
    address it resolves to is a server (HAProxy: up to ``discovered_slots`` of them).
    ``listen``: where the router takes client requests. ``balance_factor``: bounded load,
    in percent of the average requests in flight per server (0 turns it off; else over
    100). ``admin``: the proxy's statistics/admin listener (None: its usual loopback port;
    "": none). ``grpc_port``: the servers' gRPC port; when given, the router also listens
    for gRPC on ``grpc_listen`` and hashes on the ``grpc_header`` metadata key.
    ``command``: recorded in the file's header.
    """
    if router not in ROUTERS:
        raise RouterConfigError(f"router '{router}' is not one of: {', '.join(ROUTERS)}")
    spec = _spec(
        router,
        servers,
        listen,
        balance_factor,
        discover=discover,
        discovered_slots=discovered_slots,
        admin=admin,
        grpc_port=grpc_port,
        grpc_listen=grpc_listen,
        grpc_header=grpc_header,
        timeout_s=timeout_s,
        command=command,
    )
    if router == "haproxy":
        from modelyard.fleet._haproxy import render_haproxy

        return render_haproxy(spec)
    from modelyard.fleet._envoy import render_envoy

    return render_envoy(spec)


def _spec(
    router: str,
    servers: Sequence[str],
    listen: str,
    balance_factor: int,
    *,
    discover: Sequence[str],
    discovered_slots: int,
    admin: str | None,
    grpc_port: int | None,
    grpc_listen: str,
    grpc_header: str,
    timeout_s: int,
    command: str,
) -> FleetSpec:
    parsed = tuple(parse_address(s, "server") for s in servers)
    found = tuple(parse_address(s, "discovered name") for s in discover)
    if not parsed and not found:
        raise RouterConfigError("a fleet needs at least one server (--server HOST:PORT)")
    seen: set[Address] = set()
    for address in (*parsed, *found):
        if address in seen:
            raise RouterConfigError(f"server {address} is given twice")
        seen.add(address)
    if found and any(a.is_ip for a in found):
        raise RouterConfigError("a discovered name must be a DNS name, not an IP address")
    if balance_factor != 0 and not 100 < balance_factor <= 10_000:
        raise RouterConfigError(
            f"balance factor {balance_factor}: give a percentage over 100 (150: a server takes "
            "at most 1.5 times the average load) or 0 for no bound"
        )
    if not 1 <= discovered_slots <= 1024:
        raise RouterConfigError("discovered slots must be from 1 to 1024")
    if grpc_port is not None and not 0 < grpc_port < 65536:
        raise RouterConfigError("the gRPC port must be a number from 1 to 65535")
    if not _HEADER.fullmatch(grpc_header):
        raise RouterConfigError(
            f"gRPC header '{grpc_header}': metadata keys are lower-case letters, digits and '-'"
        )
    if timeout_s < 1:
        raise RouterConfigError("the request timeout must be at least 1 second")
    admin_text = DEFAULT_ADMIN[router] if admin is None else admin
    return FleetSpec(
        servers=parsed,
        discover=found,
        listen=parse_address(listen, "listen address"),
        balance_factor=balance_factor,
        admin=parse_address(admin_text, "admin address") if admin_text else None,
        grpc_port=grpc_port,
        grpc_listen=parse_address(grpc_listen, "gRPC listen address"),
        grpc_header=grpc_header,
        discovered_slots=discovered_slots,
        timeout_s=timeout_s,
        command=" ".join(command.split()),  # one line, whatever the caller passed
    )
