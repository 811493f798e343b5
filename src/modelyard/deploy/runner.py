"""``modelyard test``: run models' test cases against a real server serving exactly the artifacts.

For each target (an artifact, or a model folder, packaged first into a temporary artifact
exactly as ``modelyard package`` does), the artifacts are put in a fresh store folder and one
``modelyard serve`` process (``modelyard.testing``) loads them all at start on a free port of
127.0.0.1, with environment building off (``--python-env-build false``), as in production:
what passes here is what a production server will run. An ensemble's artifact (a bundle)
is split as ``push`` splits it (bundle.py): each composing model goes into the store as its
own artifact beside the ensemble's, as it will be in a real store. Then, per artifact:

1. **load**: the repository index must say READY for the artifact's model and version (and
   for each composing model version of a bundle);
2. **cases**: every case of ``.modelyard/tests/<model>/*.yaml|yml|json`` (testcases.py)
   through KServe v2 inference, outputs compared by compare.py;
3. **pytest**: ``.modelyard/tests/<model>/test_*.py``, when present, run by pytest in a child
   process with the ``modelyard_server`` fixture (``modelyard.testing``) and the
   ``modelyard_artifact`` fixture (``pytest_fixtures.py``: the running server's URL and the
   store folder).

Results arrive through ``on_result`` as they happen; :func:`run_tests` returns them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelyard.deploy._client import InferFailed, V2Client
from modelyard.deploy.artifact import (
    ArtifactError,
    extract_tests,
    read_manifest,
    sha256_file,
    split_artifact_name,
    verify_artifact,
)
from modelyard.deploy.bundle import BundlePart, split_bundle
from modelyard.deploy.compare import Mismatch, compare
from modelyard.deploy.package import PackageOptions, package
from modelyard.deploy.testcases import CaseError, TestCase, load_cases, to_array
from modelyard.errors import ModelyardError
from modelyard.protocol._access import credentials_for
from modelyard.repository import CONFIG_FILENAME
from modelyard.store import parse_artifact_name
from modelyard.testing import RunningServer, ServerFailed, start_server

__all__ = [
    "CaseResult",
    "TargetResult",
    "TestOptions",
    "find_targets",
    "run_tests",
]

Kind = Literal["load", "case", "pytest"]


@dataclass(slots=True)
class CaseResult:
    name: str
    kind: Kind
    passed: bool
    seconds: float = 0.0
    message: str = ""  # one line: why it failed
    mismatches: list[Mismatch] = field(default_factory=list)
    detail: str = ""  # longer text (a traceback, server output)
    skipped: bool = False


@dataclass(slots=True)
class TargetResult:
    target: str  # as the user named it
    artifact: Path
    model: str
    version: int
    sha256: str
    results: list[CaseResult] = field(default_factory=list)
    steps: list[BundlePart] = field(default_factory=list)  # a bundle's composing models

    @property
    def suite(self) -> str:
        return f"{self.model}_{self.version}"

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed and not r.skipped)


@dataclass(frozen=True, slots=True)
class TestOptions:
    __test__ = False  # not a pytest class

    package: PackageOptions = field(default_factory=PackageOptions)
    server_args: tuple[str, ...] = ()
    server_timeout: float = 120.0
    allow_no_cases: bool = False
    pytest_args: tuple[str, ...] = ()


OnTarget = Callable[[TargetResult], None]
OnResult = Callable[[TargetResult, CaseResult], None]


def find_targets(paths: Sequence[Path]) -> list[Path]:
    """Artifacts and model folders the paths name; a repository folder names its models."""
    targets: list[Path] = []
    for path in paths or [Path.cwd()]:
        if path.is_file() or _is_model_folder(path):
            targets.append(path)
        elif path.is_dir():
            repo = path / "models" if (path / "models").is_dir() else path
            models = sorted(p for p in repo.iterdir() if _is_model_folder(p))
            if not models:
                raise ArtifactError(f"'{path}' holds no model folder and no artifact")
            targets.extend(models)
        else:
            raise ArtifactError(f"'{path}' does not exist")
    return targets


def _is_model_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / CONFIG_FILENAME).is_file():
        return True
    return any(c.is_dir() and c.name.isdigit() for c in path.iterdir())


def run_tests(
    paths: Sequence[Path],
    options: TestOptions,
    *,
    on_target: OnTarget | None = None,
    on_result: OnResult | None = None,
    log: Callable[[str], None] | None = None,
) -> list[TargetResult]:
    """Test every target; targets whose artifacts cannot be made fail without a server."""
    say = log or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="modelyard-test-") as work_name:
        work = Path(work_name)
        store = work / "store"
        store.mkdir()
        prepared: list[TargetResult] = []
        failed_early: list[TargetResult] = []
        placed: dict[str, tuple[Path, str, str]] = {}  # key -> file, sha256, where from
        for index, path in enumerate(find_targets(paths)):
            target = _prepare(path, work / "targets" / str(index), options, say)
            if target.results:  # could not even be packaged or verified
                failed_early.append(target)
                continue
            clash = _clash(target, placed)
            if clash:
                target.results.append(CaseResult("load", "load", False, message=clash))
                failed_early.append(target)
                continue
            placed.setdefault(target.artifact.name, (target.artifact, target.sha256, ""))
            for step in target.steps:
                placed.setdefault(step.key, (step.path, step.sha256, target.artifact.name))
            prepared.append(target)
        for key, (file, _, _) in placed.items():
            _place(file, store / key)
        for target in failed_early:
            _emit(target, None, on_target, on_result)
        if prepared:
            _run_against_server(prepared, store, work, options, on_target, on_result, say)
        return failed_early + prepared


def _clash(target: TargetResult, placed: dict[str, tuple[Path, str, str]]) -> str:
    """Why the target's artifacts cannot join the test store ("" when they can)."""
    own = target.artifact.name
    if own in placed and not placed[own][2]:
        return "the same model and version is named twice; test one at a time"
    for key, sha256 in ((own, target.sha256), *((s.key, s.sha256) for s in target.steps)):
        if key in placed and placed[key][1] != sha256:
            mine = f"'{own}'" if key == own else f"the '{key}' split from {own}"
            source = placed[key][2]
            theirs = f"the '{key}' split from {source}" if source else f"the '{key}' under test"
            return f"{mine} has other bytes than {theirs}: one store cannot hold both"
    return ""


def _place(artifact: Path, dest: Path) -> None:
    """The artifact in the test store: a hard link where possible (no copy of the bytes)."""
    try:
        os.link(artifact, dest)
    except OSError:
        shutil.copyfile(artifact, dest)


def _emit(
    target: TargetResult,
    result: CaseResult | None,
    on_target: OnTarget | None,
    on_result: OnResult | None,
) -> None:
    if result is None:
        if on_target:
            on_target(target)
        for r in target.results:
            if on_result:
                on_result(target, r)
        return
    target.results.append(result)
    if on_result:
        on_result(target, result)


def _prepare(
    path: Path, work: Path, options: TestOptions, say: Callable[[str], None]
) -> TargetResult:
    if path.is_file():
        try:
            model, version = split_artifact_name(path)
            target = TargetResult(str(path), path, model, version, "")
            manifest = verify_artifact(path)
            target.sha256 = sha256_file(path)
            target.steps = split_bundle(path, manifest, work / "steps")
        except ArtifactError as err:
            parsed = parse_artifact_name(path.name) or (path.name, 0)
            target = TargetResult(str(path), path, parsed[0], parsed[1], "")
            target.results.append(CaseResult("artifact", "load", False, message=str(err)))
        return target
    out = work / "package"
    say(f"packaging {path} (as it would ship)")
    pkg_options = PackageOptions(
        output=out,
        version=options.package.version,
        tests=True,
        environments=options.package.environments,
        update_lock=options.package.update_lock,
        write_lock=False,
        env=options.package.env,
    )
    try:
        result = package(path, pkg_options, log=say)
        assert result.artifact is not None
        steps = split_bundle(result.artifact, read_manifest(result.artifact), work / "steps")
    except ModelyardError as err:
        target = TargetResult(str(path), path, path.name, options.package.version or 0, "")
        target.results.append(CaseResult("package", "load", False, message=str(err)))
        return target
    return TargetResult(
        str(path), result.artifact, result.model, result.version, result.sha256, steps=steps
    )


def _run_against_server(
    targets: list[TargetResult],
    store: Path,
    work: Path,
    options: TestOptions,
    on_target: OnTarget | None,
    on_result: OnResult | None,
    say: Callable[[str], None],
) -> None:
    args = ["--model-control-mode", "none", "--python-env-build", "false", *options.server_args]
    # access flags passed through (--server-arg) must not lock the runner out of its server
    credentials = credentials_for(args)
    say(f"starting a modelyard server on {len(targets)} artifact(s)")
    start = time.monotonic()
    try:
        server = start_server(store, args, timeout=options.server_timeout, headers=credentials)
    except ServerFailed as err:
        for target in targets:
            _emit(target, None, on_target, None)
            _emit(
                target,
                CaseResult(
                    "load", "load", False, message="the server did not start", detail=str(err)
                ),
                on_target,
                on_result,
            )
        return
    try:
        say(f"server ready on {server.url} in {time.monotonic() - start:.1f} s")
        client = V2Client(server.host, server.port, headers=credentials)
        try:
            index = client.index()
            for target in targets:
                if on_target:
                    on_target(target)
                _test_target(target, server, client, index, store, work, options, on_result)
        finally:
            client.close()
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            server.log_path.unlink()


def _test_target(
    target: TargetResult,
    server: RunningServer,
    client: V2Client,
    index: list[dict[str, str]],
    store: Path,
    work: Path,
    options: TestOptions,
    on_result: OnResult | None,
) -> None:
    def emit(result: CaseResult) -> None:
        _emit(target, result, None, on_result)

    load = _load_result(index, server, target.model, target.version)
    emit(load)
    loaded = {target.model: load.passed}
    versions: dict[str, set[int]] = {}  # a bundle's composing models: the versions inside
    for step in target.steps:
        step_load = _load_result(index, server, step.model, step.version)
        step_load.name += f" (in {target.artifact.name}, run by '{step.used_by}')"
        if not load.passed:
            step_load.detail = ""  # the server's log is shown once
        emit(step_load)
        loaded[step.model] = loaded.get(step.model, True) and step_load.passed
        versions.setdefault(step.model, set()).add(step.version)
    tests = work / "tests" / target.suite
    try:
        models = extract_tests(target.artifact, tests)
    except ArtifactError as err:
        emit(CaseResult("tests", "case", False, message=str(err)))
        return
    ran = 0
    for model in models or [target.model]:
        model_tests = tests / model
        # a composing model's cases: the version the bundle holds (the newest if several)
        held = versions.get(model, set())
        version = str(target.version) if model == target.model else str(max(held)) if held else ""
        try:
            cases = load_cases(model_tests, model, version)
        except (CaseError, OSError) as err:
            emit(CaseResult(f"{model}: case files", "case", False, message=str(err)))
            continue
        for case in cases:
            ran += 1
            if not loaded.get(case.model, load.passed):
                emit(CaseResult(case.title, "case", False, skipped=True, message="not loaded"))
                continue
            emit(_run_case(client, case))
        if sorted(model_tests.glob("test_*.py")):
            ran += 1
            for result in _run_pytest(
                model_tests, target, server, store, model, version, work, options
            ):
                emit(result)
    if ran == 0 and not options.allow_no_cases:
        emit(
            CaseResult(
                "test cases",
                "case",
                False,
                message=f"no test cases for '{target.model}': add tests/*.yaml beside its "
                "config.pbtxt (docs/deploy.md), or pass --allow-no-cases",
            )
        )


def _load_result(
    index: list[dict[str, str]], server: RunningServer, model: str, version: int
) -> CaseResult:
    rows = [r for r in index if r.get("name") == model]
    row = next((r for r in rows if r.get("version") == str(version)), None)
    if row is not None and row.get("state") == "READY":
        return CaseResult(f"{model} {version} loads", "load", True)
    reason = (row or (rows[0] if rows else {})).get("reason", "")
    if not rows:
        reason = "the server does not list it"
    elif row is None:
        reason = f"version {version} is not served" + (f" ({reason})" if reason else "")
    return CaseResult(
        f"{model} {version} loads",
        "load",
        False,
        message=(reason or "not ready").strip().splitlines()[0],  # the log has the rest
        detail=_tail(server.output()),
    )


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run_case(client: V2Client, case: TestCase) -> CaseResult:
    start = time.monotonic()
    try:
        return _check_case(client, case, start)
    except CaseError as err:
        return CaseResult(case.title, "case", False, time.monotonic() - start, message=str(err))
    except (OSError, ValueError) as err:
        return CaseResult(
            case.title, "case", False, time.monotonic() - start, message=f"request failed: {err}"
        )


def _check_case(client: V2Client, case: TestCase, start: float) -> CaseResult:
    declared: dict[str, str] = {}
    if any(spec.datatype is None for spec in case.inputs):
        meta = client.metadata(case.model, case.version)
        declared = {i["name"]: i["datatype"] for i in meta.get("inputs", [])}
    inputs = []
    for spec in case.inputs:
        datatype = spec.datatype or declared.get(spec.name)
        if datatype is None:
            raise CaseError(
                f"{case.title}: input '{spec.name}' has no datatype and the model declares no "
                "such input"
            )
        inputs.append((spec.name, datatype, to_array(spec, datatype, f"{case.title}: {spec.name}")))
    try:
        got = client.infer(
            case.model, case.version, inputs, [o.name for o in case.outputs], case.parameters
        )
    except InferFailed as err:
        seconds = time.monotonic() - start
        expected = case.error
        if expected is None:
            return CaseResult(case.title, "case", False, seconds, message=f"error {err}")
        if (expected.status is None or expected.status == err.status) and (
            expected.message is None or expected.message in err.message
        ):
            return CaseResult(case.title, "case", True, seconds)
        return CaseResult(
            case.title,
            "case",
            False,
            seconds,
            message=f"expected {expected.describe()}; got {err}",
        )
    seconds = time.monotonic() - start
    if case.error is not None:
        return CaseResult(
            case.title,
            "case",
            False,
            seconds,
            message=f"expected {case.error.describe()}; the request succeeded",
        )
    mismatches = []
    for spec in case.outputs:
        output = got.get(spec.name)
        if output is None:
            mismatches.append(Mismatch(spec.name, "missing from the response"))
            continue
        expected_array = to_array(spec, output.datatype, f"{case.title}: {spec.name}")
        mismatch = compare(
            spec.name,
            expected_array,
            output.array,
            actual_datatype=output.datatype,
            expected_datatype=spec.datatype,
            check_shape=spec.check_shape,
            atol=case.atol if spec.atol is None else spec.atol,
            rtol=case.rtol if spec.rtol is None else spec.rtol,
        )
        if mismatch is not None:
            mismatches.append(mismatch)
    if mismatches:
        names = ", ".join(m.output for m in mismatches)
        return CaseResult(
            case.title, "case", False, seconds, message=f"{names} differ", mismatches=mismatches
        )
    return CaseResult(case.title, "case", True, seconds)


def _run_pytest(
    folder: Path,
    target: TargetResult,
    server: RunningServer,
    store: Path,
    model: str,
    version: str,
    work: Path,
    options: TestOptions,
) -> Iterator[CaseResult]:
    try:
        import pytest  # noqa: F401 - only to tell whether it is there
    except ImportError:
        yield CaseResult(
            "pytest", "pytest", False, message="pytest files found, but pytest is not installed"
        )
        return
    report = work / f"pytest-{target.suite}-{model}.xml"
    (folder / "pytest.ini").write_text("[pytest]\n")  # no configuration from elsewhere
    env = {
        **os.environ,
        "MODELYARD_TEST_URL": server.url,
        "MODELYARD_TEST_REPOSITORY": str(store),
        "MODELYARD_TEST_ARTIFACT": str(target.artifact),
        "MODELYARD_TEST_MODEL": model,
        "MODELYARD_TEST_VERSION": version,
        "MODELYARD_TEST_SHA256": target.sha256,
        "MODELYARD_TEST_HEADERS": json.dumps(server.headers),  # access credentials, if any
    }
    command = [
        sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider",
        "-p", "modelyard.deploy.pytest_fixtures", "-c", str(folder / "pytest.ini"),
        "--rootdir", str(folder), f"--junit-xml={report}", *options.pytest_args,
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, cwd=folder, check=False)
    output = (done.stdout + done.stderr).decode(errors="replace")
    results = list(_junit_results(report)) if report.is_file() else []
    if not results:
        yield CaseResult(
            "pytest",
            "pytest",
            done.returncode == 0,
            time.monotonic() - start,
            message="" if done.returncode == 0 else f"pytest exited with {done.returncode}",
            detail=_tail(output),
        )
        return
    yield from results


def _junit_results(report: Path) -> Iterator[CaseResult]:
    root = ET.parse(report).getroot()
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        name = (
            f"{classname.rsplit('.', 1)[-1]}.py::{case.get('name')}"
            if classname
            else case.get("name", "")
        )
        seconds = float(case.get("time", "0") or 0)
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            yield CaseResult(
                name,
                "pytest",
                False,
                seconds,
                message=(failure.get("message") or "failed").splitlines()[0][:300],
                detail=failure.text or "",
            )
        elif skipped is not None:
            yield CaseResult(
                name, "pytest", True, seconds, skipped=True, message=skipped.get("message", "")
            )
        else:
            yield CaseResult(name, "pytest", True, seconds)
