"""The status line: model, transport, sandbox branch, turn, tokens with the cached share, time."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget


class StatusLine(Widget):
    """One line, refreshed once a second and on every turn boundary (in place, no re-layout)."""

    line = Text()

    def render(self) -> Text:
        return self.line

    def show(self, *, model: str, transport: str, branch: str, turn: int, prompt_tokens: float,
             cached_tokens: float, completion_tokens: float, seconds: float, state: str) -> None:
        cached = f" ({cached_tokens / prompt_tokens:.0%} cached)" if prompt_tokens else ""
        line = Text()
        line.append(f" {state} ", style="reverse")
        line.append(f" {model} · {transport} · {branch or 'sandbox…'} · turn {turn} · "
                    f"tokens {prompt_tokens:,.0f}{cached} + {completion_tokens:,.0f} · "
                    f"{seconds:,.0f}s")
        self.line = line
        self.refresh()
