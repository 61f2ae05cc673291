"""The transcript: what was said and done, with the model's reply streamed live.

Owns the streaming strategy that keeps up with thousands of tokens a second: tokens are only
buffered as they arrive; a ~30 Hz flush renders each *finished* Markdown block once into a
RichLog (pre-rendered lines, never re-laid out) and shows the unfinished block as plain text.
Every finished item is one cheap widget, and past MAX_ITEMS the oldest move into one archive log,
so a 100-turn session lays out as fast as the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.syntax import Syntax
from rich.text import Text
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Collapsible, RichLog, Static

FLUSH_S = 1 / 30
MAX_ITEMS = 120
CODE_THEME = "ansi_dark"


def split_finished(text: str) -> tuple[str, str]:
    """Split streamed Markdown into finished blocks and the block still being written.

    A block ends at a blank line outside a code fence, or at the line closing a fence.
    """
    cut = 0
    in_fence = False
    position = 0
    for line in text.splitlines(keepends=True):
        position += len(line)
        if not line.endswith("\n"):
            break
        stripped = line.strip()
        if stripped.startswith("```"):
            in_fence = not in_fence
            if not in_fence:
                cut = position
        elif not stripped and not in_fence:
            cut = position
    return text[:cut], text[cut:]


def markdown(text: str) -> Markdown:
    return Markdown(text, code_theme=CODE_THEME, inline_code_theme=CODE_THEME)


class LiveMessage(Vertical):
    """The model's reply while it streams: rendered finished blocks, plus the open block."""

    def __init__(self) -> None:
        super().__init__(classes="item model")
        self.blocks = RichLog(wrap=True, markup=False, auto_scroll=False, min_width=20)
        self.tail = Static("", classes="tail")
        self.text = ""

    def compose(self):
        yield self.blocks
        yield self.tail


class Transcript(VerticalScroll):
    """The scrolling record of the session."""

    def __init__(self, on_display_lag: Callable[[float], None] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.archive = RichLog(wrap=True, markup=False, auto_scroll=False, min_width=20,
                               classes="archive")
        self.items: list[tuple[Widget, RenderableType]] = []
        self.live: LiveMessage | None = None
        self._pending: list[str] = []
        self._pending_since = 0.0
        self._unrendered = ""
        self._on_display_lag = on_display_lag

    def compose(self):
        yield self.archive

    def on_mount(self) -> None:
        self.anchor()
        self.archive.display = False
        self.set_interval(FLUSH_S, self.flush)

    def _add(self, widget: Widget, archived: RenderableType) -> None:
        self.items.append((widget, archived))
        self.mount(widget)
        while len(self.items) > MAX_ITEMS:
            old, renderable = self.items.pop(0)
            self.archive.display = True
            self.archive.write(renderable)
            old.remove()

    def add_text(self, text: str | Text, classes: str = "note") -> None:
        renderable = text if isinstance(text, Text) else Text(text)
        self._add(Static(renderable, classes=f"item {classes}"), renderable)

    def add_user(self, text: str) -> None:
        renderable = Text.assemble(("› ", "bold"), text)
        self._add(Static(renderable, classes="item user"), renderable)

    def add_diff(self, title: str, diff: str, classes: str = "patch") -> None:
        syntax = Syntax(diff.rstrip("\n"), "diff", theme=CODE_THEME, word_wrap=True)
        heading = Text(title, style="bold")
        self._add(Static(Group(heading, syntax), classes=f"item {classes}"),
                  Group(heading, syntax))

    def add_folded(self, title: str, body: RenderableType, summary: RenderableType,
                   classes: str) -> None:
        """An item whose details sit behind a fold (e.g. a test run's full output)."""
        fold = Collapsible(Static(body), title="output", collapsed=True)
        widget = Vertical(Static(summary), fold, classes=f"item {classes}")
        self._add(widget, Group(Text(title, style="bold"), summary))

    # the streamed reply

    def begin_model(self) -> None:
        self.end_model()
        self.live = LiveMessage()
        self._add(self.live, Text(""))

    def stream(self, text: str) -> None:
        """Called per token: only buffers (rendering happens on the flush timer)."""
        if not self._pending:
            self._pending_since = time.perf_counter()
        self._pending.append(text)

    def flush(self) -> None:
        if not self._pending or self.live is None:
            return
        arrived = self._pending_since
        chunk = "".join(self._pending)
        self._pending.clear()
        self.live.text += chunk
        finished, rest = split_finished(self._unrendered + chunk)
        if finished:
            self.live.blocks.write(markdown(finished))
        self._unrendered = rest
        self.live.tail.update(Text(rest))
        if self._on_display_lag is not None:
            report = self._on_display_lag
            self.call_after_refresh(lambda: report((time.perf_counter() - arrived) * 1000))

    def end_model(self) -> None:
        """The reply is complete: render what is left, keep one widget for the whole message."""
        if self.live is None:
            return
        self.flush()
        live = self.live
        if self._unrendered.strip():
            live.blocks.write(markdown(self._unrendered))
        self._unrendered = ""
        live.tail.remove()
        if not live.text.strip():
            live.display = False
        for index, (widget, _) in enumerate(self.items):
            if widget is live:
                self.items[index] = (live, markdown(live.text))
        self.live = None

    def clear_all(self) -> None:
        self.end_model()
        for widget, _ in self.items:
            widget.remove()
        self.items.clear()
        self.archive.clear()
        self.archive.display = False
