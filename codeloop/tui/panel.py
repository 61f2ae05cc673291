"""The live latency panel: the running turn's timeline and the session's figures.

Draws what `codeloop.latency.LatencyModel` computes, ten times a second while shown.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from codeloop.latency import PHASES, LatencyModel

REFRESH_S = 0.1
LAST_TURNS = 12
PHASE_STYLES = {"prompt": "magenta", "connect": "yellow", "first token": "red",
                "decode": "green", "apply": "cyan", "tests": "blue", "overhead": "bright_black"}


def _ms(value: float) -> str:
    return f"{value / 1000:.2f}s" if value >= 10_000 else f"{value:.1f}"


def stacked_bar(spans: dict[str, float], width: int, scale_ms: float) -> Text:
    """One bar, a coloured segment per phase, `scale_ms` filling `width` cells."""
    bar = Text()
    if scale_ms <= 0:
        return bar
    for phase, key in PHASES:
        value = spans.get(key, 0.0)
        cells = round(width * value / scale_ms)
        if value > 0 and cells == 0:
            cells = 1 if value / scale_ms > 0.002 else 0
        bar.append("█" * cells, style=PHASE_STYLES[phase])
    return bar


class LatencyPanel(Static):
    """Where every millisecond of each turn went."""

    def __init__(self, model: LatencyModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self.redraw)
        self.redraw()

    def redraw(self) -> None:
        if self.display:
            self.update(self.render_figures(max(self.size.width - 4, 20)))

    def render_figures(self, width: int) -> Group:
        model = self.model
        parts: list = []
        current = model.current
        title = Text("latency", style="bold")
        if current is None:
            parts += [title, Text("no turn yet", style="dim")]
        else:
            state = "done" if current.done else current.phase
            title.append(f"  turn {current.turn} · {state}", style="dim")
            parts.append(title)
            spans = model.live_spans()
            wall = sum(spans.get(key, 0.0) for _, key in PHASES)
            parts.append(stacked_bar(spans, width, wall))
            table = Table.grid(padding=(0, 1))
            table.add_column()
            table.add_column(justify="right")
            for phase, key in PHASES:
                active = not current.done and current.phase == phase
                label = Text(("▶ " if active else "  ") + phase, style=PHASE_STYLES[phase])
                table.add_row(label, _ms(spans.get(key, 0.0)) + " ms")
            parts.append(table)
        finished = [t for t in model.turns if t.done][-LAST_TURNS:]
        if finished:
            parts.append(Text("\nlast turns", style="bold"))
            scale = max(sum(t.spans.get(k, 0.0) for _, k in PHASES) for t in finished)
            for turn in finished:
                cache = f"{turn.cache_share:>4.0%}" if turn.cache_share is not None else "   –"
                row = Text(f"{turn.turn:>3} ", style="dim")
                row.append_text(stacked_bar(turn.spans, max(width - 10, 10), scale))
                row.append(f" {cache}", style="dim")
                parts.append(row)
            parts.append(Text("    bar: turn time · %: cache hit", style="dim"))
        stats = model.stats()
        table = Table.grid(padding=(0, 1))
        table.add_column()
        table.add_column(justify="right")
        table.add_column(justify="right")
        table.add_row(Text("session", style="bold"), Text("median", style="dim"),
                      Text("p95", style="dim"))
        for label, key, unit in (("TTFT", "ttft_ms", "ms"), ("decode", "tokens_per_s", "tok/s"),
                                 ("tests", "test_ms", "ms"), ("overhead", "overhead_ms", "ms"),
                                 ("display lag", "display_lag_ms", "ms")):
            median, p95 = stats[key]
            table.add_row(label, f"{median:.1f} {unit}", f"{p95:.1f}")
        parts += [Text(""), table]
        return Group(*parts)
