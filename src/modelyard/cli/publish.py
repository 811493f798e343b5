"""``push``, ``promote``, ``rollback`` and ``ls``: artifacts into and between stores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modelyard.cli._ui import FAIL, OK, console, err_console, fail, short, size, transfers

if TYPE_CHECKING:
    from modelyard.deploy.publish import PublishResult

Store = Annotated[str, typer.Option(help="A folder, or s3://bucket/prefix.")]
Sha256 = Annotated[
    str | None,
    typer.Option("--sha256", help="Refuse unless the artifact has this sha256 (the tested one)."),
]


def push(
    artifacts: Annotated[list[Path], typer.Argument(help="<model>_<version>.tar.gz files.")],
    to: Annotated[str, typer.Option("--to", help="The store: a folder, or s3://bucket/prefix.")],
    sha256: Sha256 = None,
) -> None:
    """Publish artifacts to a store: checked, atomic, and never over another version's bytes.

    An ensemble's artifact also publishes each of its composing models as its own artifact
    (first), all or nothing."""
    from modelyard.deploy.publish import push as publish
    from modelyard.errors import ModelyardError

    if sha256 and len(artifacts) > 1:
        fail("--sha256 names one artifact's bytes: push one artifact at a time with it")
    failures = 0
    for artifact in artifacts:
        if not artifact.is_file():
            err_console.print(f"{FAIL} {artifact}: no such file")
            failures += 1
            continue
        try:
            with transfers() as start:
                result = publish(artifact, to, expected_sha256=sha256, transfer=start)
        except ModelyardError as err:
            err_console.print(f"{FAIL} {artifact.name}: {err}")
            failures += 1
            continue
        _published(result)
    if failures:
        raise typer.Exit(1)


def _published(result: PublishResult) -> None:
    _line(result, "")
    for step in result.steps:  # an ensemble's composing models (published before it)
        _line(step, "  ")


def _line(result: PublishResult, indent: str) -> None:
    if result.status == "unchanged":
        console.print(
            f"{indent}{OK} {result.key} is already in {result.store} with the same bytes "
            f"(sha256 {short(result.sha256)}): nothing to do"
        )
    else:
        console.print(f"{indent}{OK} {result.key} -> {result.store}  sha256 {result.sha256}")


def promote(
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(min=0, help="Version to promote.")],
    source: Annotated[str, typer.Option("--from", help="Store it is in (staging).")],
    dest: Annotated[str, typer.Option("--to", help="Store it goes to (production).")],
    sha256: Sha256 = None,
) -> None:
    """Copy a version between stores (or buckets), checking its sha256 on the way."""
    from modelyard.deploy.publish import promote as copy
    from modelyard.errors import ModelyardError

    try:
        with transfers() as start:
            result = copy(model, version, source, dest, expected_sha256=sha256, transfer=start)
    except ModelyardError as err:
        fail(str(err))
    _published(result)


def rollback(
    model: Annotated[str, typer.Argument(help="Model name.")],
    store: Annotated[str, typer.Option("--store", help="The store to roll back.")],
    to: Annotated[
        int | None,
        typer.Option(
            "--to", min=0, help="The version to serve [default: the one before the newest]."
        ),
    ] = None,
) -> None:
    """Serve an older version again: newer ones move to .modelyard/retired/ (never deleted).

    An ensemble's composing models are left as they are."""
    from modelyard.deploy.publish import RETIRED
    from modelyard.deploy.publish import rollback as roll_back
    from modelyard.errors import ModelyardError

    try:
        result = roll_back(model, store, to=to, log=lambda m: console.print(f"  [dim]{m}[/]"))
    except ModelyardError as err:
        fail(str(err))
    retired = ", ".join(str(v) for v in result.retired) or "none"
    came_back = " (restored from retired)" if result.restored else ""
    console.print(
        f"{OK} {model} version {result.version} is now the newest in {result.store}{came_back}; "
        f"retired: {retired} (kept in {RETIRED}/)"
    )
    console.print(
        "  [dim]servers switch on their next listing (--repository-poll-secs), "
        "the old version serving until the new one is ready[/]"
    )


def ls(
    store: Annotated[str, typer.Argument(help="A folder, or s3://bucket/prefix.")],
    retired: Annotated[
        bool, typer.Option("--retired", "-a", help="Also list retired versions.")
    ] = False,
    full: Annotated[bool, typer.Option("--full", help="Whole sha256 digests.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List a store's models and versions: state, size, sha256, date."""
    import json

    from modelyard.deploy.publish import list_store
    from modelyard.errors import ModelyardError

    try:
        rows = list_store(store, retired=retired)
    except ModelyardError as err:
        fail(str(err))
    if as_json:
        for row in rows:
            doc = {
                "model": row.model,
                "version": row.version,
                "state": row.state,
                "size": row.size,
                "sha256": row.sha256,
                "modified": row.modified,
                "key": row.key,
            }
            console.print_json(json.dumps(doc))
        return
    if not rows:
        console.print(f"{store}: no models")
        return
    table = Table(title=store, title_justify="left")
    for column, justify in (
        ("model", "left"),
        ("version", "right"),
        ("state", "left"),
        ("size", "right"),
        ("sha256", "left"),
        ("date (UTC)", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    colours = {"serving": "green", "live": "", "retired": "dim", "folder": "cyan"}
    for row in rows:
        date = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.modified)) if row.modified else "-"
        )
        table.add_row(
            row.model,
            str(row.version),
            f"[{colours[row.state]}]{row.state}[/]" if colours[row.state] else row.state,
            size(row.size),
            row.sha256 if full else short(row.sha256),
            date,
            style="dim" if row.state == "retired" else None,
        )
    console.print(table)
