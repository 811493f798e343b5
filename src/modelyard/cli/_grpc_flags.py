"""``modelyard serve``'s gRPC flags (Triton's names) checked and turned into GrpcSettings."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from modelyard.settings import GrpcSettings

LEVELS = ("none", "low", "medium", "high")


def grpc_settings(
    *,
    allow: bool,
    address: str | None,
    port: int,
    max_input_size: int,
    keepalive_time: int,
    keepalive_timeout: int,
    keepalive_permit_without_calls: bool,
    http2_max_pings_without_data: int,
    http2_min_recv_ping_interval_without_data: int,
    http2_max_ping_strikes: int,
    max_connection_age: int | None,
    max_connection_age_grace: int | None,
    compression_level: str,
    restricted: Sequence[str],
) -> GrpcSettings:
    """The flags as settings; typer.BadParameter, naming the flag, for a value that cannot
    be used."""
    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"not a port: {port}", param_hint="--grpc-port")
    if max_input_size <= 0:
        raise typer.BadParameter(
            f"must be a positive number of bytes, got {max_input_size}",
            param_hint="--grpc-max-input-size",
        )
    for flag, value in (
        ("--grpc-keepalive-time", keepalive_time),
        ("--grpc-keepalive-timeout", keepalive_timeout),
        ("--grpc-http2-max-pings-without-data", http2_max_pings_without_data),
        (
            "--grpc-http2-min-recv-ping-interval-without-data",
            http2_min_recv_ping_interval_without_data,
        ),
        ("--grpc-http2-max-ping-strikes", http2_max_ping_strikes),
        ("--grpc-max-connection-age", max_connection_age or 0),
        ("--grpc-max-connection-age-grace", max_connection_age_grace or 0),
    ):
        if value < 0:
            raise typer.BadParameter(f"must be 0 or more, got {value}", param_hint=flag)
    level = compression_level.strip().lower()
    if level not in LEVELS:
        raise typer.BadParameter(
            f"unknown compression level '{compression_level}' ({', '.join(LEVELS)})",
            param_hint="--grpc-infer-response-compression-level",
        )
    from modelyard.protocol._access import parse_restricted_features

    try:
        parsed = parse_restricted_features(
            list(restricted), option="grpc-restricted-protocol", kind="protocol"
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--grpc-restricted-protocol") from None
    return GrpcSettings(
        enabled=allow,
        address=address,
        port=port,
        max_input_size=max_input_size,
        keepalive_time=keepalive_time,
        keepalive_timeout=keepalive_timeout,
        keepalive_permit_without_calls=keepalive_permit_without_calls,
        http2_max_pings_without_data=http2_max_pings_without_data,
        http2_min_recv_ping_interval_without_data=http2_min_recv_ping_interval_without_data,
        http2_max_ping_strikes=http2_max_ping_strikes,
        max_connection_age=max_connection_age,
        max_connection_age_grace=max_connection_age_grace,
        infer_response_compression_level=level,
        restricted_protocol=parsed,
    )
