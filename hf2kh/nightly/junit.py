"""One JUnit XML file for a nightly run: a test suite per checkpoint, a test case per check, and a
`port` case holding the port's own outcome (an error when it was refused, crashed or timed out)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from hf2kh.nightly.compare import Regression
from hf2kh.nightly.run import EntryResult


def write_junit(results: list[EntryResult], regressions: list[Regression], path: Path) -> None:
    root = ET.Element("testsuites", name="hf2kh.nightly")
    for result in results:
        failures = sum(not c.passed for c in result.checks)
        errors = int(result.status in ("refused", "error", "timeout"))
        suite = ET.SubElement(
            root,
            "testsuite",
            name=result.id,
            tests=str(len(result.checks) + 1),
            failures=str(failures),
            errors=str(errors),
            time=f"{result.seconds:.1f}",
        )
        port = ET.SubElement(
            suite, "testcase", classname=result.id, name="port", time=f"{result.seconds:.1f}"
        )
        if errors:
            ET.SubElement(
                port, "error", message=f"{result.status}: {result.message}", type=result.status
            ).text = result.message
        for check in result.checks:
            case = ET.SubElement(suite, "testcase", classname=result.id, name=check.name)
            if not check.passed:
                ET.SubElement(case, "failure", message=f"error {check.error}")
    if regressions:
        suite = ET.SubElement(
            root,
            "testsuite",
            name="baseline",
            tests=str(len(regressions)),
            failures=str(len(regressions)),
            errors="0",
        )
        for regression in regressions:
            case = ET.SubElement(suite, "testcase", classname="baseline", name=regression.line())
            ET.SubElement(case, "failure", message=regression.line(), type=regression.kind)
    ET.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)
