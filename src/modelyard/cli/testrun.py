"""``modelyard test [MODEL_DIR | ARTIFACT ...]``: each model's tests against a real server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modelyard.cli._ui import (
    FAIL,
    OK,
    SKIP,
    EnvCacheDir,
    FindLinks,
    IndexUrl,
    NoIndex,
    console,
    fail,
    links,
    short,
)

if TYPE_CHECKING:
    from modelyard.deploy.runner import CaseResult, TargetResult


def test(
    targets: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Artifacts (.tar.gz) and model folders (packaged first, as they would ship); "
            "a folder of models tests them all [default: the current folder].",
            show_default=False,
        ),
    ] = None,
    junit_xml: Annotated[
        Path | None, typer.Option("--junit-xml", help="Write a JUnit XML report here.")
    ] = None,
    write_sha256: Annotated[
        Path | None,
        typer.Option(
            "--write-sha256",
            help="Write the sha256 of every artifact that passed here (sha256sum form), for "
            "`modelyard push --sha256`.",
        ),
    ] = None,
    server_arg: Annotated[
        list[str] | None,
        typer.Option("--server-arg", help="Extra `modelyard serve` flag (repeat)."),
    ] = None,
    allow_no_cases: Annotated[
        bool, typer.Option("--allow-no-cases", help="A model without test cases passes.")
    ] = False,
    version: Annotated[
        int | None, typer.Option("--version", min=0, help="Version for model folders.")
    ] = None,
    server_timeout: Annotated[
        float, typer.Option("--server-timeout", help="Seconds the server may take to start.")
    ] = 120.0,
    find_links: FindLinks = None,
    index_url: IndexUrl = None,
    no_index: NoIndex = False,
    env_cache_dir: EnvCacheDir = None,
) -> None:
    """Serve exactly the artifacts on 127.0.0.1 and run every test case through KServe v2."""
    from modelyard.deploy.junit import write_junit
    from modelyard.deploy.package import PackageOptions, default_env_cache
    from modelyard.deploy.runner import TestOptions, run_tests
    from modelyard.errors import ModelyardError
    from modelyard.runtimes.python.environments import EnvironmentOptions

    options = TestOptions(
        package=PackageOptions(
            version=version,
            env=EnvironmentOptions(
                cache_dir=env_cache_dir or default_env_cache(),
                index_url=index_url,
                find_links=links(find_links),
                no_index=no_index,
            ),
        ),
        server_args=tuple(server_arg or ()),
        server_timeout=server_timeout,
        allow_no_cases=allow_no_cases,
    )
    try:
        results = run_tests(
            targets or [],
            options,
            on_target=_show_target,
            on_result=_show_result,
            log=lambda m: console.print(f"[dim]{m}[/]"),
        )
    except ModelyardError as err:
        fail(str(err))
    if junit_xml is not None:
        write_junit(results, junit_xml)
    passed = [t for t in results if t.failed == 0]
    if write_sha256 is not None:
        write_sha256.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{t.sha256}  {t.artifact.name}\n" for t in passed if t.sha256]
        write_sha256.write_text("".join(lines))
    _summary(results, junit_xml)
    if len(passed) != len(results):
        raise typer.Exit(1)


def _show_target(target: TargetResult) -> None:
    what = f"{target.model} version {target.version}"
    sha = f", sha256 {short(target.sha256)}" if target.sha256 else ""
    console.print(f"\n[bold]{target.target}[/] ({what}{sha})")


def _show_result(target: TargetResult, result: CaseResult) -> None:
    took = f"[dim]{_seconds(result.seconds)}[/]" if result.seconds else ""
    if result.skipped:
        console.print(f"  {SKIP} {result.name} [dim]skipped: {result.message}[/]")
        return
    if result.passed:
        console.print(f"  {OK} {result.name} {took}")
        return
    console.print(f"  {FAIL} {result.name} {took}")
    if result.message:
        console.print(f"      [red]{result.message}[/]", soft_wrap=True)
    for mismatch in result.mismatches:
        console.print(f"      [bold]{mismatch.output}[/]: {mismatch.summary}")
        if mismatch.rows:
            table = Table(box=None, padding=(0, 2), show_edge=False)
            for column in ("index", "expected", "actual", "|diff|"):
                table.add_column(column, style="dim" if column == "index" else None)
            for row in mismatch.rows:
                table.add_row(row[0], f"[green]{row[1]}[/]", f"[red]{row[2]}[/]", row[3])
            console.print(table, style="", new_line_start=False)
    if result.detail:
        console.print(_indent(result.detail, 6), style="dim", markup=False, highlight=False)


def _indent(text: str, width: int) -> str:
    lines = text.strip().splitlines()[-25:]
    return "\n".join(" " * width + line for line in lines)


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _summary(results: list[TargetResult], junit_xml: Path | None) -> None:
    checks = [r for t in results for r in t.results]
    passed = sum(1 for r in checks if r.passed and not r.skipped)
    failed = sum(1 for r in checks if not r.passed and not r.skipped)
    skipped = sum(1 for r in checks if r.skipped)
    console.print()
    for target in results:
        mark = OK if target.failed == 0 else FAIL
        console.print(f"{mark} {target.artifact.name} [dim]{short(target.sha256)}[/]")
    line = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
    colour = "green" if failed == 0 else "red"
    console.print(
        f"[bold {colour}]{line}[/]" + (f" [dim](JUnit: {junit_xml})[/]" if junit_xml else "")
    )
