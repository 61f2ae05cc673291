"""Failures by name from what other test runners print: node's test runner (TAP), jest, vitest,
`cargo test`, `go test` and `go test -json`.

Owns recognising the runner from its output (never from the command: `npm test` may wrap any of
them) and reading its default non-TTY report, or the structured one where the command asks for
it (`go test -json`, jest `--json`, node's TAP): counts, and per failing test its id, message,
`file:line` in the project and its text. Plain regular expressions and the standard library: a
parsing library would cost start-up time for this little. Pure: reads no files but `go.mod`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from codeloop.core.bounded import bound
from codeloop.core.events import TestFailure

Report = tuple[dict[str, int], list[TestFailure]]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# a source frame: path (absolute, ./relative or relative) with an extension, a line, a column
_FRAME = re.compile(r"((?:[A-Za-z]:)?[\w./@+-]*[\w@+-]\.(?:[cm]?[jt]sx?|rs|go)):(\d+)(?::\d+)?")


def read_report(output: str, root: Path) -> Report | None:
    """Counts and failures from a runner's report in `output`; None when no runner is known."""
    text = _ANSI.sub("", output).replace("\r\n", "\n")
    for recognised, parse in _RUNNERS:
        if recognised.search(text):
            return parse(text, root)
    return None


def _failure(id_: str, message: str, location: str, details: str, kind: str = "failed"
             ) -> TestFailure:
    return TestFailure(id=id_, kind=kind, message=message.strip()[:500], location=location,
                       details=bound(details.strip("\n"), 3000, 1500))


def _project_path(path: str, root: Path) -> str | None:
    """`path` relative to the project, or None when it lies outside it or in its dependencies."""
    candidate = Path(path)
    if candidate.is_absolute():
        if not candidate.is_relative_to(root):
            return None
        candidate = candidate.relative_to(root)
    parts = [p for p in candidate.parts if p != "."]
    if not parts or ".." in parts or {"node_modules", ".cargo", "target"} & set(parts):
        return None
    return "/".join(parts)


def _frames(text: str, root: Path) -> list[str]:
    """The `file:line` places in `text` inside the project, in the order printed."""
    found = []
    for match in _FRAME.finditer(text):
        rel = _project_path(match.group(1), root)
        if rel is not None and not match.group(1).startswith("node:"):
            found.append(f"{rel}:{match.group(2)}")
    return found


def _first_line(text: str) -> str:
    """The first line said; with the next one when it ends in a colon (node's `Expected values
    to be strictly equal:` is followed by what differed: `-1 !== 5`)."""
    said = [line.strip() for line in text.splitlines() if line.strip()][:2]
    return " ".join(said) if len(said) == 2 and said[0].endswith(":") else "".join(said[:1])


# --- node's test runner and other TAP producers -------------------------------------------

_TAP_LINE = re.compile(r"^( *)(not ok|ok) \d+(?: - (.*?))?(?: # (SKIP|TODO)\b.*)?$")
_SUBTEST = re.compile(r"^( *)# Subtest: (.*)$")
_TAP_COUNT = re.compile(r"^# (pass|fail|skipped|todo|cancelled) (\d+)$", re.MULTILINE)
_YAML_KEY = re.compile(r"^(\w+): ?(.*)$")


def _yaml_block(lines: list[str], start: int, indent: int) -> tuple[dict[str, str], int]:
    """The `---` ... `...` diagnostic block after a TAP line: its keys, as text."""
    fields: dict[str, str] = {}
    if start >= len(lines) or lines[start].strip() != "---":
        return fields, start
    key, index = "", start + 1
    while index < len(lines) and lines[index].strip() != "...":
        line = lines[index][indent + 2:]
        match = _YAML_KEY.match(line)
        if match:
            key, value = match.groups()
            fields[key] = "" if value in ("|-", "|", ">-") else value.strip("'\"")
        elif key:
            fields[key] += ("\n" if fields[key] else "") + line.strip()
        index += 1
    return fields, index + 1


def _tap(text: str, root: Path) -> Report:
    lines = text.splitlines()
    failures: list[TestFailure] = []
    leaves = {"passed": 0, "failed": 0, "skipped": 0}
    index = 0
    names: dict[int, str] = {}
    while index < len(lines):
        match = _TAP_LINE.match(lines[index])
        if match is None:  # node names a test before its subtests run: `# Subtest: NAME`
            if (subtest := _SUBTEST.match(lines[index])) is not None:
                indent = len(subtest.group(1))
                names = {k: v for k, v in names.items() if k < indent} | {indent: subtest[2]}
            index += 1
            continue
        indent, verdict, name, directive = len(match.group(1)), *match.group(2, 3, 4)
        names = {k: v for k, v in names.items() if k < indent} | {indent: name or ""}
        fields, index = _yaml_block(lines, index + 1, indent)
        if fields.get("type") == "suite" or fields.get("failureType") == "subtestsFailed":
            continue
        if directive or verdict == "ok":
            leaves["skipped" if directive else "passed"] += 1
            continue
        leaves["failed"] += 1
        places = _frames(fields.get("stack", ""), root) + _frames(fields.get("location", ""), root)
        file = places[-1].rsplit(":", 1)[0] if places else ""
        test = " > ".join(names[k] for k in sorted(names))
        details = "\n".join(f"{k}: {v}" for k, v in fields.items() if k != "duration_ms")
        failures.append(_failure(f"{file} > {test}" if file else test,
                                 _first_line(fields.get("error", "")) or verdict,
                                 places[0] if places else "", details))
    counts = {k: int(n) for k, n in _TAP_COUNT.findall(text)}
    if "pass" in counts:  # node's own totals: suites are not tests
        leaves = {"passed": counts["pass"],
                  "failed": counts.get("fail", 0) + counts.get("cancelled", 0),
                  "skipped": counts.get("skipped", 0) + counts.get("todo", 0)}
    return leaves, failures


# --- jest ---------------------------------------------------------------------------------

_JEST_FILE = re.compile(r"^(?:PASS|FAIL) (\S+)", re.MULTILINE)
_JEST_TESTS = re.compile(r"^Tests:\s+(.+?), \d+ total$", re.MULTILINE)
_COUNT_WORDS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "todo": "skipped",
                "pending": "skipped"}


def _counted(summary: str, separator: str) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for part in summary.split(separator):
        number, _, word = part.strip().partition(" ")
        if number.isdigit() and word in _COUNT_WORDS:
            counts[_COUNT_WORDS[word]] += int(number)
    return counts


def _jest(text: str, root: Path) -> Report:
    structured = next((line for line in text.splitlines()
                       if line.startswith('{"numFailedTestSuites"')), None)
    if structured is not None:
        try:
            return _jest_json(json.loads(structured), root)
        except (ValueError, KeyError, TypeError):
            pass  # cut by the output bound, or not jest's: the text report is there too
    failures: dict[str, TestFailure] = {}
    file = ""
    blocks = re.split(r"^(  ● .*|(?:PASS|FAIL) \S+.*)$", text, flags=re.MULTILINE)
    for header, body in zip(blocks[1::2], blocks[2::2], strict=True):
        if (match := _JEST_FILE.match(header)) is not None:
            file = _project_path(match.group(1), root) or match.group(1)
            continue
        body = re.split(r"^\S", body, maxsplit=1, flags=re.MULTILINE)[0]
        title = header.strip().removeprefix("● ").replace(" › ", " > ")
        places = _frames(body, root)
        kind = "errors" if title == "Test suite failed to run" else "failed"
        test = file if kind == "errors" else f"{file} > {title}"
        failures.setdefault(test, _failure(test, _first_line(body), places[0] if places else "",
                                           body, kind))
    summary = _JEST_TESTS.search(text)
    return (_counted(summary.group(1), ",") if summary else {}), list(failures.values())


def _jest_json(report: dict, root: Path) -> Report:
    failures = []
    for suite in report["testResults"]:
        file = _project_path(suite["name"], root) or suite["name"]
        failed = [a for a in suite["assertionResults"] if a["status"] == "failed"]
        for case in failed:
            details = "\n".join(case["failureMessages"])
            places = _frames(details, root)
            failures.append(_failure(" > ".join([file, *case["ancestorTitles"], case["title"]]),
                                     _first_line(details), places[0] if places else "", details))
        if suite["status"] == "failed" and not failed:
            places = _frames(suite.get("message", ""), root)
            failures.append(_failure(file, _first_line(suite.get("message", "")),
                                     places[0] if places else "", suite.get("message", ""),
                                     "errors"))
    counts = {"passed": report["numPassedTests"], "failed": report["numFailedTests"],
              "skipped": report["numPendingTests"] + report.get("numTodoTests", 0)}
    return counts, failures


# --- vitest -------------------------------------------------------------------------------

_VITEST_TESTS = re.compile(r"^\s+Tests\s+(.+?)\s+\(\d+\)$", re.MULTILINE)


def _vitest(text: str, root: Path) -> Report:
    failures: dict[str, TestFailure] = {}
    blocks = re.split(r"^ FAIL  (.+)$", text, flags=re.MULTILINE)
    for header, body in zip(blocks[1::2], blocks[2::2], strict=True):
        body = re.split(r"^⎯", body, maxsplit=1, flags=re.MULTILINE)[0]
        test = re.sub(r" \[ .* \]$", "", header.strip())
        file, _, _ = test.partition(" > ")
        file = _project_path(file, root) or file
        places = _frames(body, root)
        failures.setdefault(test, _failure(test, _first_line(body), places[0] if places else "",
                                           body, "failed" if " > " in test else "errors"))
    summary = _VITEST_TESTS.search(text)
    return (_counted(summary.group(1), "|") if summary else {}), list(failures.values())


# --- cargo test ---------------------------------------------------------------------------

_CARGO_RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored",
                           re.MULTILINE)
_CARGO_BLOCK = re.compile(r"^---- (.+?) stdout ----$", re.MULTILINE)
_PANIC = re.compile(r"panicked at (?:'(.*?)', )?([^\s:]+):(\d+):\d+:?\n?(.*)")
_COMPILE_ERROR = re.compile(r"^((error(?:\[\w+\])?: .*)\n\s*--> ([^\s:]+):(\d+)(?:.+\n)*)",
                            re.MULTILINE)


def _cargo(text: str, root: Path) -> Report:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for passed, failed, ignored in _CARGO_RESULT.findall(text):
        counts["passed"] += int(passed)
        counts["failed"] += int(failed)
        counts["skipped"] += int(ignored)
    failures = []
    blocks = _CARGO_BLOCK.split(text)
    for name, body in zip(blocks[1::2], blocks[2::2], strict=True):
        body = re.split(r"^(?:failures:|---- )", body, maxsplit=1, flags=re.MULTILINE)[0]
        panic = _PANIC.search(body)
        places = []
        message = _first_line(body)
        if panic is not None:
            old_message, path, line, new_message = panic.groups()
            message = old_message if old_message is not None else new_message
            rel = _project_path(path, root)
            places = [f"{rel}:{line}"] if rel else []
        places += _frames(body, root)
        failures.append(_failure(name, message, places[0] if places else "", body))
    for block, message, path, line in _COMPILE_ERROR.findall(text):
        rel = _project_path(path, root)
        if rel is not None:
            counts["errors"] = counts.get("errors", 0) + 1
            failures.append(_failure(f"build: {rel}:{line}", message, f"{rel}:{line}",
                                     block, "errors"))
    return counts, failures


# --- go test and go test -json ------------------------------------------------------------

_GO_LINE = re.compile(r"^\s*--- (FAIL|PASS|SKIP): (\S+) \(")
_GO_RUN = re.compile(r"^=== (?:RUN|CONT)\s+(\S+)")
_GO_PACKAGE = re.compile(r"^(?:ok|FAIL)\s+(\S+)\s+(?:[\d.]+s|\(cached\)|\[(\w+ failed)\])")
_GO_PLACE = re.compile(r"^\s+([\w./-]+\.go):(\d+): ?(.*)")
_GO_COMPILE = re.compile(r"^([\w./-]+\.go):(\d+):\d+: (.*)")


class _GoRun:
    """The tests of a `go test` run as they are printed: verdicts, and each test's lines."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.module = _go_module(root)
        self.verdicts: dict[tuple[str, str], str] = {}
        self.lines: dict[tuple[str, str], list[str]] = {}
        self.broken: dict[str, list[str]] = {}  # packages that did not build

    def place(self, package: str, file: str, line: str) -> str:
        folder = package[len(self.module):].strip("/") if package.startswith(
            self.module) and self.module else ""
        rel = _project_path(f"{folder}/{file}" if folder else file, self.root) or file
        return f"{rel}:{line}"

    def report(self) -> Report:
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        failures = []
        for (package, test), verdict in self.verdicts.items():
            if any(p == package and t.startswith(test + "/") for p, t in self.verdicts):
                continue  # a parent: counted through its subtests
            counts[{"PASS": "passed", "FAIL": "failed", "SKIP": "skipped"}[verdict]] += 1
            if verdict == "FAIL":
                body = self.lines.get((package, test), [])
                said = [m for m in map(_GO_PLACE.match, body) if m]
                places = [self.place(package, *m.group(1, 2)) for m in said]
                places += _frames("\n".join(body), self.root)
                failures.append(_failure(f"{package} > {test}",
                                         said[0].group(3) if said else _first_line("\n".join(body)),
                                         places[0] if places else "", "\n".join(body)))
        for package, body in self.broken.items():
            said = [m for m in map(_GO_COMPILE.match, body) if m]
            failures.append(_failure(package, said[0].group(3) if said else "build failed",
                                     self.place("", *said[0].group(1, 2)) if said else "",
                                     "\n".join(body), "errors"))
        if self.broken:
            counts["errors"] = len(self.broken)
        return {k: n for k, n in counts.items() if n or k == "failed"}, failures


def _go_module(root: Path) -> str:
    try:
        text = (root / "go.mod").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    match = re.search(r"^module\s+(\S+)", text, re.MULTILINE)
    return match.group(1) if match else ""


def _go_json(text: str, root: Path) -> Report:
    run = _GoRun(root)
    actions = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}
    for line in text.splitlines():
        try:
            event = json.loads(line) if line.startswith("{") else None
        except ValueError:  # a line cut by the output bound
            continue
        if not isinstance(event, dict):
            continue
        key = (event.get("Package", ""), event.get("Test", ""))
        if key[1] and event.get("Action") in actions:
            run.verdicts[key] = actions[event["Action"]]
        elif event.get("Action") == "output":
            run.lines.setdefault(key, []).append(event.get("Output", "").rstrip("\n"))
    for (package, test), said in run.lines.items():
        if not test and any("[build failed]" in s or "[setup failed]" in s for s in said):
            run.broken[package] = said
    return run.report()


def _go_text(text: str, root: Path) -> Report:
    run = _GoRun(root)
    pending: list[tuple[str, str]] = []  # tests seen since the last package line
    current = ""
    verbose = bool(_GO_RUN.search(text))
    outside: list[str] = []
    for line in text.splitlines():
        if (match := _GO_RUN.match(line)) is not None:
            current = match.group(1)
        elif (match := _GO_LINE.match(line)) is not None:
            pending.append((match.group(2), match.group(1)))
            current = match.group(2) if not verbose else current
        elif (match := _GO_PACKAGE.match(line)) is not None:
            package = match.group(1)
            for test, verdict in pending:
                run.verdicts[(package, test)] = verdict
                run.lines[(package, test)] = run.lines.pop(("", test), [])
            if match.group(2):
                run.broken[package] = outside
            pending, current, outside = [], "", []
        elif current:
            run.lines.setdefault(("", current), []).append(line)
        else:
            outside.append(line)
    return run.report()


_RUNNERS: list[tuple[re.Pattern[str], Callable[[str, Path], Report]]] = [
    (re.compile(r'^\{"Time":"[^"]*","Action":', re.MULTILINE), _go_json),
    (re.compile(r'^\{"numFailedTestSuites"', re.MULTILINE), _jest),
    (re.compile(r"^(?:TAP version \d+|# Subtest: )", re.MULTILINE), _tap),
    (re.compile(r"^ (?:RUN  v\d|FAIL  \S)|^\s+Test Files\s+\d", re.MULTILINE), _vitest),
    (re.compile(r"^Tests:\s+.*\d+ total$|^  ● ", re.MULTILINE), _jest),
    (re.compile(r"^running \d+ tests?$|^error: could not compile", re.MULTILINE), _cargo),
    (re.compile(r"^(?:--- FAIL: |FAIL\t|ok  \t)", re.MULTILINE), _go_text),
]
