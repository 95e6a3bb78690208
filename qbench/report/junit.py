"""`qbench check --junit FILE`: the check's outcomes as JUnit XML, which CI systems (GitLab, Jenkins,
GitHub test reporters) read. One testcase per baseline entry; a regression or a missing result is
a <failure>, a result without a baseline entry is <skipped> with the reason."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

from qbench.io import atomic_write_bytes
from qbench.report.gate import CheckOutcome


def junit_xml(outcomes: list[CheckOutcome], name: str = "qbench check") -> ET.ElementTree:
    failures = sum(o.failing for o in outcomes)
    skipped = sum(o.status == "unbaselined" for o in outcomes)
    suites = ET.Element("testsuites", name=name, tests=str(len(outcomes)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=name,
        tests=str(len(outcomes)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    for o in outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"qbench.{o.entry['suite']}", name=o.name)
        if o.failing:
            kind = "regression" if o.status == "regression" else "missing result"
            ET.SubElement(case, "failure", message=o.describe(), type=kind).text = o.describe()
        elif o.status == "unbaselined":
            ET.SubElement(case, "skipped", message=o.describe())
        else:
            ET.SubElement(case, "system-out").text = o.describe()
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(outcomes: list[CheckOutcome], path: Path) -> None:
    buf = io.BytesIO()
    junit_xml(outcomes).write(buf, encoding="utf-8", xml_declaration=True)
    atomic_write_bytes(path, buf.getvalue() + b"\n")
