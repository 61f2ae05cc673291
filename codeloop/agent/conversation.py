"""The session's conversation with the model, as `core.conversation` items, and what is unsent.

Owns the item list, how much of it the wire has been sent, the notes for the next user message
(an /undo, a /test) and the user text waiting for the next request. Never reads files or talks
to the model: the turn composes what goes in, each wire renders it.
"""

from __future__ import annotations

from codeloop.core.conversation import (
    Instructions,
    Item,
    Reply,
    ToolCall,
    ToolOutput,
    UserText,
)
from codeloop.core.events import ModelToolCall
from codeloop.edits.extract import ProposedEdit


class Conversation:
    """The items of the conversation so far; append-only between compactions and a /clear."""

    def __init__(self, task: str) -> None:
        self.items: list[Item] = []
        self.sent = 0  # items[:sent] went out with an earlier request
        self.notes: list[str] = []  # told with the next user message
        self.pending: str | None = None  # a user message not yet in a request
        self.task = task  # the first message's text, for a compaction's summary

    def unsent(self) -> list[Item]:
        """The items the next request adds, now counted as sent."""
        new, self.sent = self.items[self.sent:], len(self.items)
        return new

    @property
    def replied(self) -> bool:
        """Whether the model has answered in this conversation."""
        return any(isinstance(item, Reply) for item in self.items)

    def begin(self, opening: list[Item], task: str) -> None:
        self.items, self.task = opening, task

    def follow_up(self, text: str, files: str) -> None:
        """A later user message: the notes gathered meanwhile, the text, the files to show."""
        self.items.append(UserText("\n\n".join([*self.notes, text, *([files] if files else [])])))
        self.notes = []

    def instruct(self, text: str) -> None:
        """New instructions: the whole conversation goes out again with the next request."""
        self.items[0] = Instructions(text)
        self.sent = 0

    def add_reply(self, text: str, calls: list[ModelToolCall]) -> None:
        self.items.append(Reply(text, tuple(ToolCall(c.call_id, c.name, c.arguments, c.kind)
                                            for c in calls)))

    def feed_back(self, calls: list[ModelToolCall], answers: dict[str, str],
                  proposals: list[ProposedEdit], feedback: str, failed: bool) -> None:
        """The turn's results: one tool output per call, else a user message. `failed`: the
        change was refused (a built-in apply_patch call's output then says `failed`)."""
        patch_calls = [p.source.removeprefix("tool:") for p in proposals
                       if p.source.startswith("tool:")]
        for call in calls:
            if call.call_id in answers:
                output = answers[call.call_id]
                refused = output.startswith("error:")
            elif patch_calls and call.call_id == patch_calls[0]:
                output, refused = feedback, failed
            else:
                output, refused = (f"Handled together with the patch of call {patch_calls[0]}; "
                                   "see its result."), failed
            self.items.append(ToolOutput(call.call_id, output, call.kind, refused))
        if feedback and not patch_calls:
            self.items.append(UserText(feedback))

    def answer_open_calls(self, output: str) -> None:
        """Every call of the last reply that made any gets an output (a cancelled turn's)."""
        answered = {item.call_id for item in self.items if isinstance(item, ToolOutput)}
        for reply in [i for i in self.items if isinstance(i, Reply) and i.calls][-1:]:
            for call in reply.calls:
                if call.call_id not in answered:
                    self.items.append(ToolOutput(call.call_id, output, call.kind,
                                                 failed=True))

    def replace(self, items: list[Item]) -> None:
        """A compacted conversation: the next request carries all of it."""
        self.items, self.sent = items, 0

    def clear(self) -> None:
        self.items, self.sent, self.notes = [], 0, []
