"""JUnit XML for CI systems: one ``<testsuite>`` per artifact, one ``<testcase>`` per check."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from modelyard.deploy.runner import CaseResult, TargetResult

__all__ = ["write_junit"]


def write_junit(targets: list[TargetResult], dest: Path) -> None:
    root = ET.Element("testsuites", name="modelyard")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    total_time = 0.0
    for target in targets:
        seconds = sum(r.seconds for r in target.results)
        skipped = sum(1 for r in target.results if r.skipped)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=target.suite,
            tests=str(len(target.results)),
            failures=str(target.failed),
            errors="0",
            skipped=str(skipped),
            time=f"{seconds:.3f}",
        )
        properties = ET.SubElement(suite, "properties")
        for key, text in (
            ("artifact", str(target.artifact.name)),
            ("sha256", target.sha256),
            ("target", target.target),
        ):
            ET.SubElement(properties, "property", name=key, value=text)
        for result in target.results:
            _case(suite, target, result)
        totals["tests"] += len(target.results)
        totals["failures"] += target.failed
        totals["skipped"] += skipped
        total_time += seconds
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(dest, encoding="utf-8", xml_declaration=True)


def _case(suite: ET.Element, target: TargetResult, result: CaseResult) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        classname=f"{target.suite}.{result.kind}",
        name=result.name,
        time=f"{result.seconds:.3f}",
    )
    if result.skipped:
        ET.SubElement(case, "skipped", message=result.message)
    elif not result.passed:
        failure = ET.SubElement(case, "failure", message=result.message)
        text = "\n\n".join(m.text() for m in result.mismatches)
        failure.text = "\n\n".join(t for t in (result.message, text, result.detail) if t)
