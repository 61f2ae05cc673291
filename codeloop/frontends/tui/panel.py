"""The live latency panel: the running turn's timeline and the session's figures.

Draws what `frontends.latency.LatencyModel` computes, ten times a second while a turn runs,
in place (plain Rich Text lines, no re-layout), so watching it costs the stream nothing.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from codeloop.frontends.latency import PHASES, SERVER_PARTS, LatencyModel

REFRESH_S = 0.1
LAST_TURNS = 12
PHASE_STYLES = {"prompt": "magenta", "connect": "yellow", "first token": "red",
                "decode": "green", "apply": "cyan", "tests": "blue", "overhead": "bright_black"}
# the server's parts of the first token's wait, in the first token's colour family
SERVER_STYLES = {"server queue": "bright_red", "server prefill": "red", "network": "yellow"}
# (label, label where the panel is narrow, figure)
STATS = (("TTFT ms", "TTFT", "ttft_ms"), ("decode t/s", "tok/s", "tokens_per_s"),
         ("tests ms", "tests", "test_ms"), ("overhead ms", "ovhd", "overhead_ms"),
         ("display lag ms", "lag", "display_lag_ms"))


def _ms(value: float) -> str:
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.1f} ms"


def figure(value: float | None) -> str:
    """A median or p95 in at most 6 characters (so the columns never run together at 20k
    tokens/s), or a dash before there is anything to measure."""
    if value is None:
        return "–"
    if value < 1000:
        return f"{value:.1f}"
    if value < 100_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1000:.0f}k"


def _line(out: Text, width: int, *parts: tuple[str, str]) -> None:
    """One line of the panel, cut to `width` cells: it never wraps onto a second line."""
    line = Text(no_wrap=True, overflow="crop")
    for text, style in parts:
        line.append(text, style=style)
    line.truncate(width)
    out.append_text(line)
    out.append("\n")


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


def _server_rows(out: Text, width: int, value_width: int, spans: dict[str, float]) -> None:
    """Under the first token: the server's queue and prefill and the network left of it, each
    a bar on the first token's scale and its figure, where the server reported it."""
    whole = spans.get("ttft_ms", 0.0)
    label_width = min(19, max(width - value_width - 1, 1))  # "    server prefill" and a space
    bar_width = max(width - label_width - value_width, 0)
    for label, _, key in SERVER_PARTS:
        if key not in spans:
            continue
        value = spans[key]
        cells = min(round(bar_width * value / whole), bar_width) if whole > 0 else 0
        bar = ("█" * cells).ljust(bar_width)
        _line(out, width, (f"    {label}"[:label_width - 1].ljust(label_width),
                                 SERVER_STYLES[label]),
              (bar, SERVER_STYLES[label]), (f"{_ms(value):>{value_width}}", ""))


def _tier(served: str, asked: str) -> str:
    """The tier that served the turn, and the one asked for where it differs."""
    if not served:
        return f"  tier asked {asked}, served: not reported"
    return f"  tier {served}" + (f" (asked {asked})" if asked and asked != served else "")


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
        # (the width left of the scrollbar, which `overflow-y: auto` may show)
        return self.render_figures(max(self.scrollable_content_region.width, 12))

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
            value_width = 10  # "8360.0 ms", "10.00 s"
            for phase, key in PHASES:
                active = not current.done and current.phase == phase
                label = (("▶ " if active else "  ") + phase)[:max(width - value_width - 1, 1)]
                _line(out, width, (f"{label:<{width - value_width}}", PHASE_STYLES[phase]),
                      (f"{_ms(spans.get(key, 0.0)):>{value_width}}", ""))
                if key == "ttft_ms":
                    _server_rows(out, width, value_width, spans)
            if current.service_tier or model.tier_asked:
                _line(out, width, (_tier(current.service_tier, model.tier_asked), "dim"))
            if current.retries:
                out.append(f"  retries this turn: {current.retries}\n", style="yellow")
            if current.prefix_changed and current.prefix_changed != "history":
                out.append(f"  prompt prefix changed in: {current.prefix_changed}\n",
                           style="yellow")
        if model.compactions:
            last = model.compactions[-1]
            out.append("\n")
            _line(out, width, (f"compactions: {len(model.compactions)}", "bold"),
                  (f"  last {last.tokens_before:,}→{last.tokens_after:,} tok, "
                   f"{last.duration_ms / 1000:.1f} s", "dim"))
        if model.transport_changes:
            change = model.transport_changes[-1]
            out.append(f"\nwire: {change.transport} · {change.kind}\n", style="bold")
            out.append(change.message[:3 * width] + "\n", style="dim")
        finished = [t for t in model.turns if t.done][-LAST_TURNS:]
        if finished:
            out.append("\n")
            _line(out, width, ("last turns", "bold"), (" · prefix reuse · cache hit", "dim"))
            scale = max(sum(t.spans.get(k, 0.0) for _, k in PHASES) for t in finished)
            for turn in finished:
                cache = f"{turn.cache_share:>4.0%}" if turn.cache_share is not None else "   –"
                reuse = f"{turn.prefix_reuse:>4.0%}" if turn.prefix_reuse is not None else "   –"
                out.append(f"{turn.turn:>3} ", style="dim")
                out.append_text(stacked_bar(turn.spans, max(width - 15, 6), scale))
                out.append(f" {reuse}{cache}\n", style="dim")
        out.append("\n")
        label_width = max(width - 14, 5)  # two columns of 6, each after a space
        _line(out, width, (f"{'session':<{label_width}} {'median':>6} {'p95':>6}", "bold"))
        stats = model.stats()
        for label, short, key in STATS:
            median, p95 = stats[key]
            name = label if len(label) <= label_width else short
            _line(out, width, (f"{name:<{label_width}} {figure(median):>6} {figure(p95):>6}",
                               ""))
        return out
