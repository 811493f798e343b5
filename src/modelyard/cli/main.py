"""The ``modelyard`` command: parses arguments, then hands over to one module per command."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.cli.fleet import fleet_app
from modelyard.cli.init import init
from modelyard.cli.loadtest import loadtest
from modelyard.cli.package import package
from modelyard.cli.publish import ls, promote, push, rollback
from modelyard.cli.serve import SECURITY_EPILOG, serve
from modelyard.cli.testrun import test

app = typer.Typer(
    name="modelyard",
    help="Many models behind one endpoint, from unmodified Triton model repositories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(
    "serve",
    help="Serve a Triton model repository over KServe v2 HTTP (tritonserver's flags).",
    epilog=SECURITY_EPILOG,
)(serve)
# the deploy loop (docs/deploy.md): init -> package -> test -> push -> promote (-> rollback)
app.command("init")(init)
app.command("package")(package)
app.command("test")(test)
app.command("push")(push)
app.command("promote")(promote)
app.command("rollback")(rollback)
app.command("ls")(ls)
# many servers behind an off-the-shelf proxy (docs/fleet.md)
app.add_typer(fleet_app, name="fleet")
# sizing a fleet (docs/loadtest.md)
app.command("loadtest")(loadtest)


def _print_version(value: bool) -> None:
    if value:
        from modelyard import __version__

        typer.echo(f"modelyard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Many models behind one endpoint, from unmodified Triton model repositories."""


def main() -> None:
    app()
