"""A fleet of modelyard servers behind an off-the-shelf proxy (docs/fleet.md)."""

from modelyard.fleet.router import (
    DEFAULT_BALANCE_FACTOR,
    DEFAULT_GRPC_HEADER,
    DEFAULT_LISTEN,
    ROUTERS,
    Address,
    RouterConfigError,
    parse_address,
    render,
)

__all__ = [
    "DEFAULT_BALANCE_FACTOR",
    "DEFAULT_GRPC_HEADER",
    "DEFAULT_LISTEN",
    "ROUTERS",
    "Address",
    "RouterConfigError",
    "parse_address",
    "render",
]
