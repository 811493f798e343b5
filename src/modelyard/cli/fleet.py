"""``modelyard fleet``: many servers behind an off-the-shelf proxy (docs/fleet.md)."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli._ui import err_console, fail

fleet_app = typer.Typer(
    help="A fleet of servers sharing one store, behind HAProxy or Envoy (docs/fleet.md).",
    no_args_is_help=True,
)


@fleet_app.command("router-config")
def router_config(
    output: Annotated[
        str, typer.Option("--output", "-o", help="File to write ('-': standard output).")
    ],
    router: Annotated[
        str, typer.Option(help="haproxy (the recommended default) or envoy.")
    ] = "haproxy",
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            help="HOST:PORT of a server's HTTP port (repeat); a DNS name is re-resolved.",
        ),
    ] = None,
    discover: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME:PORT of a DNS name standing for many servers, one per address it "
            "resolves to (a Kubernetes headless service; repeat).",
        ),
    ] = None,
    listen: Annotated[str, typer.Option(help="Where the router takes requests.")] = "0.0.0.0:8000",
    balance_factor: Annotated[
        int,
        typer.Option(
            help="Bounded load: a server takes at most this percentage of the average "
            "requests in flight, then a hot model spills to the next server (0: no bound)."
        ),
    ] = 150,
    admin: Annotated[
        str | None,
        typer.Option(
            help="The proxy's stats/admin listener (default: HAProxy 127.0.0.1:8404, Envoy "
            "127.0.0.1:9901; 'off': none)."
        ),
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="The servers' gRPC port: also route gRPC, hashed on --grpc-header."),
    ] = None,
    grpc_listen: Annotated[str, typer.Option(help="Where the router takes gRPC.")] = "0.0.0.0:8001",
    grpc_header: Annotated[
        str, typer.Option(help="The gRPC metadata key clients put the model name in.")
    ] = "x-model-name",
    max_discovered: Annotated[
        int, typer.Option(help="HAProxy: server slots per --discover name.")
    ] = 16,
    timeout: Annotated[
        int, typer.Option(help="Seconds a request may take, its model's load included.")
    ] = 300,
) -> None:
    """Write HAProxy's or Envoy's configuration for model-affinity routing over these servers.

    Requests are hashed on their model's name (v2 path, SageMaker's TargetModel, a gRPC
    metadata key) with consistent hashing and bounded load; health checks on
    /v2/health/ready; one retry on the next server."""
    from modelyard.fleet import RouterConfigError, render

    command = "modelyard " + shlex.join(sys.argv[1:])
    try:
        text = render(
            router,
            server or [],
            listen,
            balance_factor,
            discover=discover or [],
            discovered_slots=max_discovered,
            admin="" if admin == "off" else admin,
            grpc_port=grpc_port,
            grpc_listen=grpc_listen,
            grpc_header=grpc_header,
            timeout_s=timeout,
            command=command,
        )
    except RouterConfigError as err:
        fail(str(err), code=2)
    if router == "envoy" and output != "-" and Path(output).suffix not in (".yaml", ".yml"):
        fail(f"Envoy reads its file as YAML only when the name ends in .yaml: not '{output}'", 2)
    if output == "-":
        sys.stdout.write(text)
        return
    _write(Path(output), text)
    err_console.print(
        f"wrote {output} ({router}, {len(server or []) + len(discover or [])} entries)"
    )


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a proxy reloading mid-write never reads half a file."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    except OSError as err:
        fail(f"cannot write {path}: {err.strerror}", code=1)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(name, 0o644)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
