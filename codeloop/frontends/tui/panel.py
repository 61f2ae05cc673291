"""The live latency panel: the running turn's timeline and the session's figures.

Draws what `frontends.latency.LatencyModel` computes, ten times a second while a turn runs,
in place (plain Rich Text lines, no re-layout), so watching it costs the stream nothing.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from codeloop.frontends.latency import PHASES, LatencyModel

REFRESH_S = 0.1
LAST_TURNS = 12
PHASE_STYLES = {"prompt": "magenta", "connect": "yellow", "first token": "red",
                "decode": "green", "apply": "cyan", "tests": "blue", "overhead": "bright_black"}
STATS = (("TTFT ms", "ttft_ms"), ("decode t/s", "tokens_per_s"), ("tests ms", "test_ms"),
         ("overhead ms", "overhead_ms"), ("display lag", "display_lag_ms"))


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.1f} ms"


def stacked_bar(spans: dict[str, float], width: int, scale_ms: float) -> Text:
    """One bar, a coloured segment per phase, `scale_ms` filling `width` cells."""
    bar = Text()
    if scale_ms <= 0:
        return bar
    for phase, key in PHASES:
        value = spans.get(key, 0.0)
        cells = round(width * value / scale_ms)
        if value > 0 and cells == 0 and value / scale_ms > 0.002:
            cells = 1
        bar.append("█" * cells, style=PHASE_STYLES[phase])
    bar.truncate(width)
    return bar


class LatencyPanel(Widget):
    """Where every millisecond of each turn went."""

    def __init__(self, model: LatencyModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self._drawn_turns = -1

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self.redraw)

    def redraw(self) -> None:
        """Repaint while a turn runs, or once when a turn has just finished."""
        current = self.model.current
        finished = sum(t.done for t in self.model.turns)
        if self.display and (current is not None and not current.done
                             or finished != self._drawn_turns):
            self._drawn_turns = finished
            self.refresh()

    def render(self) -> Text:
        return self.render_figures(max(self.content_region.width - 1, 16))

    def render_figures(self, width: int) -> Text:
        model = self.model
        out = Text()
        current = model.current
        out.append("latency", style="bold")
        if current is None:
            out.append("\nno turn yet\n", style="dim")
        else:
            out.append(f"  turn {current.turn} · {'done' if current.done else current.phase}\n",
                       style="dim")
            spans = model.live_spans()
            out.append_text(stacked_bar(spans, width, sum(spans.get(k, 0.0) for _, k in PHASES)))
            out.append("\n")
            for phase, key in PHASES:
                active = not current.done and current.phase == phase
                label = ("▶ " if active else "  ") + phase
                out.append(f"{label:<13}", style=PHASE_STYLES[phase])
                out.append(f"{_ms(spans.get(key, 0.0)):>11}\n")
            if current.retries:
                out.append(f"  retries this turn: {current.retries}\n", style="yellow")
            if current.prefix_changed and current.prefix_changed != "history":
                out.append(f"  prompt prefix changed in: {current.prefix_changed}\n",
                           style="yellow")
        if model.compactions:
            last = model.compactions[-1]
            out.append(f"\ncompactions: {len(model.compactions)}", style="bold")
            out.append(f"  last {last.tokens_before:,}→{last.tokens_after:,} tok, "
                       f"{last.duration_ms / 1000:.1f} s\n", style="dim")
        if model.transport_changes:
            change = model.transport_changes[-1]
            out.append(f"\nwire: {change.transport} · {change.kind}\n", style="bold")
            out.append(change.message[:3 * width] + "\n", style="dim")
        finished = [t for t in model.turns if t.done][-LAST_TURNS:]
        if finished:
            out.append("\nlast turns", style="bold")
            out.append(" · prefix reuse · cache hit\n", style="dim")
            scale = max(sum(t.spans.get(k, 0.0) for _, k in PHASES) for t in finished)
            for turn in finished:
                cache = f"{turn.cache_share:>4.0%}" if turn.cache_share is not None else "   –"
                reuse = f"{turn.prefix_reuse:>4.0%}" if turn.prefix_reuse is not None else "   –"
                out.append(f"{turn.turn:>3} ", style="dim")
                out.append_text(stacked_bar(turn.spans, max(width - 15, 6), scale))
                out.append(f" {reuse}{cache}\n", style="dim")
        out.append(f"\n{'session':<11}{'median':>7}{'p95':>7}\n", style="bold")
        stats = model.stats()
        for label, key in STATS:
            median, p95 = stats[key]
            out.append(f"{label:<11}{median:>7.1f}{p95:>7.1f}\n")
        return out
