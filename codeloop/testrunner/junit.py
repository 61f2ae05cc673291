"""pytest's JUnit XML, which codeloop asks every pytest run for: the arguments that ask for it,
reading it into counts, failures (id, message, the innermost project `file:line`) and the ids
of the tests that ran, and keeping pytest's note of codeloop's own file out of the output.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from codeloop.core.bounded import bound
from codeloop.core.events import TestFailure

_LOCATION = re.compile(r'^([^\s:][^:\n]*\.py):(\d+):|File "([^"\n]+\.py)", line (\d+)',
                       re.MULTILINE)


def pytest_extras(command: str, junit: Path) -> list[str]:
    """What codeloop adds to a pytest command: JUnit XML with file/line, short tracebacks."""
    extras = [f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    return extras if "--tb" in command else [*extras, "--tb=short"]


def _node_id(case: ET.Element) -> str:
    file, name, classname = case.get("file", ""), case.get("name", ""), case.get("classname", "")
    if not classname:  # a collection error: pytest names the file itself
        return file or name.replace(".", "/") + ".py"
    if not file:
        return f"{classname}::{name}" if classname else name
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    parts = [file]
    if classname.startswith(module + "."):
        parts.extend(classname[len(module) + 1:].split("."))
    parts.append(name)
    return "::".join(parts)


def _location(details: str, root: Path | None) -> str:
    """The innermost `file:line` of a traceback that lies in the project (not a library)."""
    found = []
    for match in _LOCATION.finditer(details):
        path, line = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
        if Path(path).is_absolute():
            if root is None or not Path(path).is_relative_to(root):
                continue
            path = str(Path(path).relative_to(root))
        found.append(f"{path}:{line}")
    return found[-1] if found else ""


def parse_junit(xml_text: str, root: Path | None = None
                ) -> tuple[dict[str, int], list[TestFailure], list[str]]:
    """Counts, failures and the ids of the tests that ran, from pytest's JUnit XML (xunit1
    family, which carries file/line)."""
    report = ET.fromstring(xml_text)
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[TestFailure] = []
    ran: list[str] = []
    for case in report.iter("testcase"):
        ran.append(_node_id(case))
        problem = case.find("failure")
        kind = "failed"
        if problem is None:
            problem, kind = case.find("error"), "errors"
        if problem is None:
            counts["skipped" if case.find("skipped") is not None else "passed"] += 1
            continue
        counts[kind] += 1
        details = (problem.text or "").strip()
        location = _location(details, root) or (
            f"{case.get('file')}:{int(case.get('line', '0')) + 1}" if case.get("file") else "")
        failures.append(TestFailure(
            id=_node_id(case), kind=kind, message=problem.get("message", "")[:500],
            location=location, details=bound(details, 3000, 1500)))
    return counts, failures, ran


class WithoutJunitNotice:
    """pytest 8 ends its report with `--- generated xml file: PATH ---`: the file is codeloop's
    (a temporary one, gone after the run), so that line is neither shown nor told to the
    model. A last partial line that may be its start is held until its end comes."""

    def __init__(self, junit: Path | None) -> None:
        self.mark = f"generated xml file: {junit}" if junit else ""
        self.held = ""

    def __call__(self, text: str, final: bool = False) -> str:
        if not self.mark:
            return text
        text, self.held = self.held + text, ""
        start = text.rfind("\n") + 1
        if not final and text[start:].startswith("-"):
            text, self.held = text[:start], text[start:]
        return "".join(line for line in text.splitlines(keepends=True) if self.mark not in line)
