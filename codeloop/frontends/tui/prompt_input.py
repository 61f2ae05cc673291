"""The input box: Enter sends, Shift+Enter or Ctrl+J starts a new line, Up/Down walk the
history, Tab completes a slash command; a bracketed paste goes in as lines, unsent (TextArea's
own handling). History persists across sessions.

Every key is handled here, in the order the keys arrived: an app-level (priority) binding for
Enter ran before the widget had taken the characters that came in the same read (`tmux
send-keys "fix it" Enter`, a paste without bracketed paste), and sent an empty box.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from codeloop.core.port import complete
from codeloop.frontends.history import History


class PromptInput(TextArea):
    """A multi-line TextArea that submits on Enter."""

    # shown in the footer; the keys themselves are handled in `_on_key`, in arrival order
    BINDINGS = [
        Binding("enter", "submit", "Send"),
        Binding("ctrl+j", "newline", "New line"),
        Binding("shift+enter", "newline", "New line", show=False),
    ]
    KEY_ACTIONS = {"enter": "submit", "ctrl+j": "newline", "shift+enter": "newline"}

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, history: History, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         highlight_cursor_line=False, **kwargs)
        self.input_history = history

    def _replace_all(self, text: str) -> None:
        self.text = text
        self.move_cursor(self.document.end)

    def action_submit(self) -> None:
        text = self.text.strip()
        if text:
            self.input_history.add(self.text)
            self.text = ""
            self.post_message(self.Submitted(text))

    def action_newline(self) -> None:
        self.insert("\n")

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        handled = True
        if (action := self.KEY_ACTIONS.get(key)) is not None:
            getattr(self, f"action_{action}")()
        elif key == "tab" and self.text.startswith("/"):
            matches = complete(self.text)
            if len(matches) == 1:
                self._replace_all(matches[0] + " ")
            elif matches:
                self.notify("  ".join(matches), timeout=3)
        elif key == "up" and self.cursor_location[0] == 0:
            if (entry := self.input_history.previous()) is not None:
                self._replace_all(entry)
        elif key == "down" and self.cursor_location[0] == self.document.line_count - 1:
            if (entry := self.input_history.following()) is not None:
                self._replace_all(entry)
        else:
            handled = False
        if handled:
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)
