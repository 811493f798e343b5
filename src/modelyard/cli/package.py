"""``modelyard package MODEL_DIR... [--version N] [--output DIR]``: artifacts for the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli._ui import (
    FAIL,
    OK,
    EnvCacheDir,
    FindLinks,
    IndexUrl,
    NoIndex,
    console,
    err_console,
    links,
    size,
)


def package(
    model_dirs: Annotated[
        list[Path], typer.Argument(help="Model folders (config.pbtxt and version folders).")
    ],
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            min=0,
            help="The artifact's version [default: the newest version folder's number].",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder the artifacts are written to.")
    ] = Path("dist"),
    check: Annotated[
        bool, typer.Option("--check", help="Only check that each model would package.")
    ] = False,
    tests: Annotated[
        bool, typer.Option("--tests/--no-tests", help="Ship tests/ inside the artifact.")
    ] = True,
    env: Annotated[
        bool,
        typer.Option("--env/--no-env", help="Pack Python environments from requirements.txt."),
    ] = True,
    update_lock: Annotated[
        bool,
        typer.Option("--update-lock", help="Resolve requirements.txt again, even if locked."),
    ] = False,
    find_links: FindLinks = None,
    index_url: IndexUrl = None,
    no_index: NoIndex = False,
    env_cache_dir: EnvCacheDir = None,
) -> None:
    """Package model folders as <model>_<version>.tar.gz, reproducibly, with a manifest."""
    from modelyard.deploy.package import PackageOptions, default_env_cache
    from modelyard.deploy.package import package as build
    from modelyard.errors import ModelyardError
    from modelyard.runtimes.python.environments import EnvironmentOptions

    options = PackageOptions(
        output=output,
        version=version,
        tests=tests,
        environments=env,
        update_lock=update_lock,
        check_only=check,
        env=EnvironmentOptions(
            cache_dir=env_cache_dir or default_env_cache(),
            index_url=index_url,
            find_links=links(find_links),
            no_index=no_index,
        ),
    )
    failures = 0
    for model_dir in model_dirs:
        try:
            with console.status(f"packaging {model_dir}"):
                result = build(model_dir, options, log=lambda m: console.print(f"  [dim]{m}[/]"))
        except ModelyardError as err:
            failures += 1
            err_console.print(f"{FAIL} {model_dir}: {err}")
            continue
        for note in result.notes:
            console.print(f"  [yellow]note:[/] {note}")
        inside = ", ".join(result.models)
        if result.artifact is None:
            console.print(
                f"{OK} {model_dir}: {result.model} version {result.version} would package "
                f"({result.files} files, {size(result.size)}; models: {inside})"
            )
            continue
        console.print(
            f"{OK} {result.artifact}  {size(result.size)}  {result.files} files  "
            f"sha256 {result.sha256}"
        )
        if len(result.models) > 1:
            steps = ", ".join(result.models[1:])
            console.print(
                f"  [dim]an ensemble with its composing models ({steps}): `modelyard push` "
                "publishes each as its own artifact too[/]"
            )
    if failures:
        raise typer.Exit(1)
