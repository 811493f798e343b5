"""What the deploy-loop commands share: one console, transfer bars, sizes, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

OK = "[green]✓[/]"
FAIL = "[red]✗[/]"
SKIP = "[yellow]-[/]"


def fail(message: str, code: int = 1) -> NoReturn:
    """Prints ``message`` as plain text (it often quotes paths, model errors or user input:
    ``[bold]`` in it must show, not style) and exits with ``code``."""
    err_console.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def short(sha256: str) -> str:
    return sha256[:12] if sha256 else "-"


@contextmanager
def transfers() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A ``(description, total) -> advance`` factory drawing rich transfer bars."""
    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:

        def start(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)

            def advance(n: int) -> None:
                progress.update(task, advance=n)

            return advance

        yield start


# index options shared by `package` and `test`: environments built from local wheels in CI
FindLinks = Annotated[
    list[str] | None,
    typer.Option(
        "--find-links",
        envvar="MODELYARD_FIND_LINKS",
        help="Folder or URL of wheels for Python environments (repeat).",
    ),
]
IndexUrl = Annotated[
    str | None,
    typer.Option("--index-url", envvar="MODELYARD_INDEX_URL", help="Package index URL."),
]
NoIndex = Annotated[
    bool,
    typer.Option(
        "--no-index", envvar="MODELYARD_NO_INDEX", help="Build environments from --find-links only."
    ),
]
EnvCacheDir = Annotated[
    Path | None,
    typer.Option(
        "--env-cache-dir",
        envvar="MODELYARD_ENV_CACHE_DIR",
        help="Where environments are built [default: $XDG_CACHE_HOME/modelyard/envs].",
    ),
]


def links(values: list[str] | None) -> tuple[str, ...]:
    """Local find-links folders as absolute paths (the installer runs elsewhere)."""
    out = []
    for value in values or []:
        path = Path(value)
        out.append(str(path.resolve()) if "://" not in value and path.exists() else value)
    return tuple(out)
