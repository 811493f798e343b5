"""``modelyard init DIR``: a model monorepo ready for the deploy loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli._ui import OK, console, fail


def init(
    directory: Annotated[Path, typer.Argument(help="The new folder (absent or empty).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Project name [default: the folder's].")
    ] = None,
    git: Annotated[bool, typer.Option("--git/--no-git", help="Make it a git repository.")] = True,
) -> None:
    """Scaffold a model monorepo: an example model with tests, lint, DVC, pre-commit and CI."""
    from modelyard.deploy.scaffold import ScaffoldError, scaffold

    try:
        result = scaffold(directory, name=name, git=git)
    except ScaffoldError as err:
        fail(str(err))
    console.print(f"{OK} created {directory} ({len(result.files)} files)")
    for rel in result.files:
        console.print(f"    [dim]{rel}[/]")
    if result.git:
        console.print("  [dim]and a git repository (branch main)[/]")
    d = str(directory)
    console.print(
        "\nNext, from a folder to production (the README's steps):\n"
        f"  cd {d}\n"
        "  modelyard package models/add_sub --output dist\n"
        "  modelyard test dist/add_sub_1.tar.gz\n"
        "  modelyard push dist/add_sub_1.tar.gz --to s3://models/staging\n"
        "  modelyard promote add_sub 1 --from s3://models/staging --to s3://models/production\n"
        "or the whole CI pipeline locally: scripts/pipeline (see README.md there)"
    )
