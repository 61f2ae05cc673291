"""The status line: model, transport, sandbox branch, turn, tokens with the cached share
(`~` where a count includes an estimate), time."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from codeloop.core.port import Status


class StatusLine(Widget):
    """One line, refreshed once a second and on every turn boundary (in place, no re-layout)."""

    line = Text()

    def render(self) -> Text:
        return self.line

    def show(self, status: Status, *, branch: str, turn: int, seconds: float,
             state: str) -> None:
        prompt_tokens = status.prompt_tokens
        cached = f" ({status.cached_tokens / prompt_tokens:.0%} cached)" if prompt_tokens else ""
        about = "~" if status.estimated else ""  # a cancelled reply's count, from its text
        line = Text()
        line.append(f" {state} ", style="reverse")
        line.append(f" {status.model} · {status.transport} · {branch or 'sandbox…'} · "
                    f"turn {turn} · tokens {about}{prompt_tokens:,.0f}{cached} + "
                    f"{about}{status.completion_tokens:,.0f} · {seconds:,.0f}s")
        self.line = line
        self.refresh()
