"""The transcript: what was said and done, with the model's reply streamed live.

Owns the rendering strategy that keeps up with thousands of tokens a second. The whole transcript
is ONE line-based scroll view: every item is rendered to lines once (again only on resize or
when its fold is toggled), so the screen never re-lays out while text streams and a 100-turn
session costs what the first turn did. Tokens are only buffered as they arrive; a ~30 Hz flush
renders each *finished* Markdown block once and shows the unfinished block as plain text.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from codeloop.frontends.tui.legibility import diff_text, theme_colour

FLUSH_S = 1 / 60
LINE_CACHE = 4000
CODE_THEME = "ansi_dark"
# item kind -> theme variable giving its colour ("" = the default text colour); the theme's
# text-* variants are its colours made to read as text (textual-dark: $secondary is 1.9:1 on
# the background, $text-secondary 4.7:1)
KIND_COLOURS = {"user": "text-accent", "tool": "text-secondary", "ok": "text-success",
                "error": "text-error"}
MUTED = ("note", "dim")


def block_ends(text: str) -> list[int]:
    """Where each finished Markdown block of `text` ends: at a blank line outside a code
    fence, or at the line closing a fence."""
    ends = []
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
                ends.append(position)
        elif not stripped and not in_fence:
            ends.append(position)
    return ends


def split_finished(text: str) -> tuple[str, str]:
    """Split streamed Markdown into finished blocks and the block still being written."""
    ends = block_ends(text)
    cut = ends[-1] if ends else 0
    return text[:cut], text[cut:]


def last_block(finished: str) -> str:
    """The last block of finished Markdown that is not blank: what spaces the next one."""
    starts = [0, *block_ends(finished)]
    return next((finished[s:] for s in reversed(starts) if finished[s:].strip()), finished)


def markdown(text: str) -> Markdown:
    return Markdown(text, code_theme=CODE_THEME, inline_code_theme=CODE_THEME)


@dataclass
class Item:
    """One entry of the transcript; `summary` (when set) is what shows while it is folded."""

    kind: str
    renderable: RenderableType
    text: str
    summary: RenderableType | None = None
    folded: bool = True
    strips: list[Strip] = field(default_factory=list)
    width: int = -1


class Transcript(ScrollView, can_focus=False):
    """The scrolling record of the session, as pre-rendered lines."""

    def __init__(self, on_display_lag: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter, **kwargs) -> None:
        super().__init__(**kwargs)
        self._clock = clock  # what display lag is measured with
        self.items: list[Item] = []
        self._lines: list[Strip] = []
        self._starts: list[int] = []
        self._live: Item | None = None
        self._live_lines: list[Strip] = []
        self._tail_lines: list[Strip] = []
        self._unrendered = ""
        self._last_block = ""  # the finished block last added to _live_lines
        self._pending: list[str] = []
        self._pending_since = 0.0
        self._on_display_lag = on_display_lag
        self._width = 0
        self.follow = True  # keep the newest line in view
        self._line_style = Style()
        self._shown_since: float | None = None
        # rendered screen lines by source strip; the strip is kept so its id stays unique
        self._line_cache: dict[tuple, tuple[Strip, Strip]] = {}

    def on_mount(self) -> None:
        self.set_interval(FLUSH_S, self.flush)

    def _strips(self, renderable: RenderableType, style: Style | None = None) -> list[Strip]:
        console = self.app.console
        options = console.options.update_width(self._width)
        lines = console.render_lines(renderable, options, style=style, pad=False)
        strips = Strip.from_lines(lines)
        for strip in strips:
            strip.adjust_cell_length(self._width)
        return strips

    def _style(self, kind: str) -> Style | None:
        """The item's colour: its theme colour, legible on the transcript's background."""
        return Style(dim=True) if kind in MUTED else theme_colour(
            self.app.get_css_variables(), KIND_COLOURS.get(kind, ""), self.background_colors[1])

    def _item_lines(self, item: Item) -> list[Strip]:
        if item.width != self._width:
            shown = item.summary if item.folded and item.summary is not None else item.renderable
            item.strips = [*self._strips(shown, self._style(item.kind)),
                           Strip.blank(self._width)]
            item.width = self._width
        return item.strips

    def _rebuild(self) -> None:
        self._lines, self._starts = [], []
        for item in self.items:
            self._starts.append(len(self._lines))
            self._lines.extend(self._item_lines(item))
        if self._live is not None:
            finished = self._live.text[:len(self._live.text) - len(self._unrendered)]
            self._live_lines = self._strips(markdown(finished)) if finished else []
            self._tail_lines = self._strips(Text(self._unrendered)) if self._unrendered else []
        self._resize_virtual()

    def _resize_virtual(self) -> None:
        """Grow the scrollable height. Only a change that shows or hides the scrollbar needs a
        screen re-layout; otherwise just this widget and its scrollbar repaint."""
        total = len(self._lines) + len(self._live_lines) + len(self._tail_lines)
        height = self.scrollable_content_region.height
        size = Size(self._width, total)
        old = self.virtual_size
        if old.width != size.width or (old.height > height) != (total > height):
            self.virtual_size = size
            if self.follow:
                self.call_after_refresh(self.scroll_end, animate=False, immediate=True)
        else:
            self.set_reactive(Transcript.virtual_size, size)
            if self.show_vertical_scrollbar:
                self.vertical_scrollbar.window_virtual_size = total
            if self.follow:
                self.scroll_to(y=max(0, total - height), animate=False, immediate=True)
        self.refresh()

    def on_mouse_scroll_up(self) -> None:
        self.follow = False  # the user looks back: stop following the tail

    def on_mouse_scroll_down(self) -> None:
        self.call_after_refresh(self._follow_if_at_end)

    def _follow_if_at_end(self) -> None:
        self.follow = self.scroll_y >= self.max_scroll_y - 1

    def on_resize(self, event: events.Resize) -> None:
        self._fit_width()

    def watch_show_vertical_scrollbar(self) -> None:
        # without a stable scrollbar gutter (app.tcss) the scrollbar takes a column from the
        # text when it appears, with no resize event: re-wrap to what is visible then
        self.call_after_refresh(self._fit_width)

    def _fit_width(self) -> None:
        """Wrap to the width actually visible: the content region less the scrollbar."""
        width = self.scrollable_content_region.width
        if width != self._width and width > 0:
            self._width = width
            self._rebuild()

    def render_lines(self, crop):
        """Compose this frame's lines; a flush waiting to be seen is on screen now."""
        self._line_style = self.rich_style  # once per frame, not once per line
        lines = super().render_lines(crop)
        if self._shown_since is not None and self._on_display_lag is not None:
            self._on_display_lag((self._clock() - self._shown_since) * 1000)
            self._shown_since = None
        return lines

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        style = self._line_style
        for block in (self._lines, self._live_lines, self._tail_lines):
            if index < len(block):
                strip = block[index]
                break
            index -= len(block)
        else:
            return Strip.blank(self.size.width, style)
        key = (id(strip), scroll_x, self.size.width, style)
        cached = self._line_cache.get(key)
        if cached is None:
            if len(self._line_cache) > LINE_CACHE:
                self._line_cache.clear()
            line = strip.crop_extend(scroll_x, scroll_x + self.size.width, style)
            cached = self._line_cache[key] = (strip, line.apply_style(style))
        return cached[1]

    # items

    def _add(self, item: Item) -> None:
        self.items.append(item)
        if self._width > 0:
            self._starts.append(len(self._lines))
            self._lines.extend(self._item_lines(item))
            self._resize_virtual()

    def add_text(self, text: str | Text, kind: str = "note") -> None:
        renderable = text if isinstance(text, Text) else Text(text)
        self._add(Item(kind, renderable, renderable.plain))

    def add_user(self, text: str) -> None:
        self._add(Item("user", Text.assemble(("› ", "bold"), text), text))

    def add_diff(self, title: str, diff: str, kind: str = "patch") -> None:
        # the item itself has no colour: the diff's lines carry their own
        heading = Text(title, style=Style(bold=True) + (self._style(kind) or Style()))
        body = diff_text(diff, self.app.get_css_variables(), self.background_colors[1],
                         self.app.no_color)
        self._add(Item("diff", Group(heading, body), f"{title}\n{diff}"))

    def add_folded(self, summary: Text, body: str, kind: str) -> None:
        """An item whose details sit behind a fold (e.g. a test run's full output)."""
        folded = Text.assemble(summary, ("\n  ▶ output (click, or Ctrl+O)", "dim"))
        unfolded = Group(Text.assemble(summary, ("\n  ▼ output", "dim")), Text(body))
        self._add(Item(kind, unfolded, f"{summary.plain}\n{body}", summary=folded))

    def toggle_fold(self, item: Item | None = None) -> None:
        """Open or close a fold: the given item, else the latest foldable one."""
        if item is None:
            item = next((i for i in reversed(self.items) if i.summary is not None), None)
        if item is None or item.summary is None:
            return
        item.folded, item.width = not item.folded, -1
        self._rebuild()

    def on_click(self, event: events.Click) -> None:
        line = self.scroll_offset.y + event.y
        index = bisect.bisect_right(self._starts, line) - 1
        if 0 <= index < len(self.items) and self.items[index].summary is not None:
            self.toggle_fold(self.items[index])

    def plain_text(self) -> str:
        """Everything shown so far as plain text (the live reply included)."""
        parts = [item.text for item in self.items]
        if self._live is not None:
            parts.append(self._live.text + "".join(self._pending))
        return "\n".join(parts)

    # the streamed reply

    def begin_model(self) -> None:
        self.end_model()
        self._live = Item("model", Text(""), "")
        self._unrendered = self._last_block = ""

    def stream(self, text: str) -> None:
        """Called per token: buffers, and flushes itself once the batch is a frame old (the
        timer covers slow streams; this covers a busy loop delaying the timer)."""
        now = self._clock()
        if not self._pending:
            self._pending_since = now
        self._pending.append(text)
        if now - self._pending_since >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        live = self._live
        if not self._pending or live is None or self._width <= 0:
            return
        arrived = self._pending_since
        chunk = "".join(self._pending)
        self._pending.clear()
        live.text += chunk
        finished, self._unrendered = split_finished(self._unrendered + chunk)
        if finished:
            self._add_finished(finished)
        self._tail_lines = self._strips(Text(self._unrendered)) if self._unrendered else []
        self._resize_virtual()
        if self._shown_since is None:
            self._shown_since = arrived  # the oldest token not yet on screen

    def _add_finished(self, blocks: str) -> None:
        """Add blocks that just finished under those shown, spaced as Markdown spaces them:
        rendered alone, a block loses the blank line Markdown puts before it (paragraphs
        streamed in separate frames ran together), so the block added last is rendered again
        in front of it and only the new lines are kept."""
        previous = self._last_block
        shown = len(self._strips(markdown(previous))) if previous else 0
        self._live_lines.extend(self._strips(markdown(previous + blocks))[shown:])
        self._last_block = last_block(blocks)

    def end_model(self) -> None:
        """The reply is complete: it becomes one item, its lines already rendered."""
        self.flush()
        live, self._live = self._live, None
        if live is None:
            return
        if self._unrendered.strip() and self._width > 0:
            self._add_finished(self._unrendered)
        self._unrendered = self._last_block = ""
        lines, self._live_lines, self._tail_lines = self._live_lines, [], []
        if not (live.text + "".join(self._pending)).strip():
            self._resize_virtual()
            return
        live.renderable = markdown(live.text)
        if self._width > 0:
            live.strips, live.width = [*lines, Strip.blank(self._width)], self._width
        self._add(live)

    def clear_all(self) -> None:
        self.end_model()
        self.items.clear()
        self._rebuild()

