"""The session recording: every event as one JSON line, flushed as it is written.

Owns the file under `.codeloop/sessions/` and its reference scheme: a large string (a patch, a
file, a long reply) is written once, where it first occurs; a later copy of it, or of a part of
it, is written as a reference to that place, and `References` turns each one back into the
string when the recording is read. (Secrets are already scrubbed from the events it gets: see
`codeloop.core.redact`.)

A reference stands where the string would, as a JSON object, and the line's key `"$refs"` lists
where in the line each one stands (a path of keys and indexes, such as `["messages", 1,
"content"]`): only there is an object read as a reference, anywhere else it is data as written.

* `{"$same": [line, key, ...]}`: the string at that path of that (earlier, 1-based) line's event;
  with `"json": name`, the field `name` of the JSON object that string holds; with
  `"slice": [start, end]`, that part of it.
* `{"$streamed": line}` (a `model.done` text): the texts of the `model.text_delta` events from
  that line to this one, joined: the reply as it was streamed.

A reference always leads to an earlier line: a string is offered for reference only once the
line it is in was written, so two copies within one line are both written whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from codeloop.core.events import Event, ModelDone, ModelRequest, ModelRetry, ModelTextDelta

SESSIONS_DIR = Path(".codeloop") / "sessions"
LARGE = 64 * 1024  # strings from this length on are written once
RECENT = 8  # large strings kept to be referred to (the copies come within a turn or two)


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def event_line(event: Event) -> str:
    """The event's JSON line (no newline), whole: every string written out."""
    return _dumps(event.to_dict())


class Recorder:
    """Writes the session to `<repo>/.codeloop/sessions/<session id>.jsonl`, one event per line.

    `mirror` (stdout for `--json`) gets the very same lines; each event is serialised once.
    """

    def __init__(self, repo_root: Path, session_id: str, mirror: IO[str] | None = None) -> None:
        self.path = repo_root / SESSIONS_DIR / f"{session_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._streams = [self._file] + ([mirror] if mirror else [])
        self._line = 0
        self._written: dict[str, dict[str, Any]] = {}  # large string -> reference to it
        self._streamed: list[str] = []  # the current reply's text pieces
        self._streamed_from = 0  # the line of its first piece

    def __call__(self, event: Event) -> None:
        self._line += 1
        line = _Line(self._line)
        data = self._compact(event, line)
        text = _dumps(data) + "\n"
        for stream in self._streams:
            stream.write(text)
            stream.flush()
        for string, where in line.new:  # now written: later lines may refer to them
            self._remember(string, where)

    def close(self) -> None:
        self._file.close()

    def _compact(self, event: Event, line: _Line) -> dict[str, Any]:
        """The event's data with each large string that was written before as a reference."""
        data = event.to_dict()
        if isinstance(event, ModelTextDelta):  # (pieces: small, and each one new)
            if not self._streamed:
                self._streamed_from = self._line
            self._streamed.append(event.text)
            return data
        if isinstance(event, ModelDone) and len(event.text) >= LARGE \
                and "".join(self._streamed) == event.text:
            data["text"] = line.refer(["text"], {"$streamed": self._streamed_from})
            line.new.append((event.text, [self._line, "text"]))
        if isinstance(event, ModelRequest | ModelRetry | ModelDone):
            self._streamed = []  # a new reply starts (after a retry, it starts over)
        compact = {key: self._dedupe(value, [key], line) for key, value in data.items()}
        if line.refs:
            compact["$refs"] = line.refs
        return compact

    def _dedupe(self, value: Any, path: list[Any], line: _Line) -> Any:
        if isinstance(value, str):
            return self._string(value, path, line) if len(value) >= LARGE else value
        if isinstance(value, dict):
            return {key: self._dedupe(item, [*path, key], line) for key, item in value.items()}
        if isinstance(value, list):
            return [self._dedupe(item, [*path, i], line) for i, item in enumerate(value)]
        return value

    def _string(self, text: str, path: list[Any], line: _Line) -> str | dict[str, Any]:
        """A large string: a reference when it, or a string it is part of, was written."""
        known = self._written.get(text)
        if known is not None:
            return line.refer(path, known)
        for earlier, reference in reversed(self._written.items()):
            at = earlier.find(text) if len(earlier) > len(text) else -1
            if at != -1:  # e.g. a ```diff block of a reply written before
                return line.refer(path, {**reference, "slice": [at, at + len(text)]})
        line.new.append((text, [line.number, *path]))
        return text

    def _remember(self, text: str, where: list[Any]) -> None:
        self._written[text] = {"$same": where}
        if text.startswith("{"):  # tool call arguments: the patch inside comes back decoded
            try:
                fields = json.loads(text)
            except ValueError:
                fields = None
            if isinstance(fields, dict):
                for name, value in fields.items():
                    if isinstance(value, str) and len(value) >= LARGE:
                        self._written.setdefault(value, {"$same": where, "json": name})
        while len(self._written) > RECENT:
            del self._written[next(iter(self._written))]


@dataclass
class _Line:
    """The line being written: where its references stand, and its large strings."""

    number: int
    refs: list[list[Any]] = field(default_factory=list)  # its "$refs"
    new: list[tuple[str, list[Any]]] = field(default_factory=list)  # string, where it is

    def refer(self, path: list[Any], reference: dict[str, Any]) -> dict[str, Any]:
        self.refs.append(path)
        return reference


class References:
    """Reads the references back: each line's data, in file order, with its strings whole.

    Raises ValueError (saying what is damaged) for a reference that does not resolve.
    """

    def __init__(self) -> None:
        self._lines: list[Any] = []  # every line read so far, resolved

    def resolve(self, data: Any) -> Any:
        """One line's data with each reference its `"$refs"` lists turned into its string."""
        if isinstance(data, dict) and "$refs" in data:
            data = dict(data)
            paths = data.pop("$refs")
            if not isinstance(paths, list):
                raise ValueError(f'"$refs" should be a list of paths, not {_dumps(paths)[:80]}')
            for path in paths:
                self._replace(data, path)
        self._lines.append(data)
        return data

    def _replace(self, data: dict[str, Any], path: Any) -> None:
        """The reference at `path` in `data` replaced by the string it leads to."""
        try:
            *keys, last = path if isinstance(path, list) else ()
            container: Any = data
            for key in keys:
                container = container[key]
            reference = container[last]
        except (KeyError, IndexError, TypeError, ValueError):
            raise ValueError(f'the "$refs" path {_dumps(path)[:80]} leads nowhere') from None
        if not isinstance(reference, dict) or len(reference.keys() & {"$same", "$streamed"}) != 1:
            raise ValueError(f'the "$refs" path {_dumps(path)[:80]} leads to no reference')
        container[last] = self._dereference(reference)

    def _dereference(self, reference: dict[str, Any]) -> str:
        try:
            if "$streamed" in reference:
                since = self._index(reference["$streamed"])
                return "".join(earlier["text"] for earlier in self._lines[since:]
                               if isinstance(earlier, dict)
                               and earlier.get("type") == "model.text_delta")
            number, *path = reference["$same"]
            value = self._lines[self._index(number)]
            for key in path:
                value = value[key]
            if "json" in reference:
                value = json.loads(value)[reference["json"]]
            if "slice" in reference:
                start, end = reference["slice"]
                value = value[start:end]
        except (KeyError, IndexError, TypeError, ValueError):
            value = None
        if not isinstance(value, str):
            raise ValueError(f"the reference {_dumps(reference)[:80]} does not lead to a string "
                             "written before")
        return value

    def _index(self, number: Any) -> int:
        """Where line `number` (1-based) is kept; IndexError unless it was read already."""
        if not isinstance(number, int) or isinstance(number, bool) \
                or not 1 <= number <= len(self._lines):
            raise IndexError(number)
        return number - 1
