"""Compaction: when the context is too full, older turns give way to a summary.

Owns when a compaction is due (past `compact_at` of the window, then only once the context has
grown by a chunk again: each one breaks the provider's cache), what is kept verbatim, and the
summary: codeloop's own facts plus the model's account, asked for in a request that repeats the
current prompt, so it is served from the provider's cache. Only ever runs between turns.
"""

from __future__ import annotations

import json
import time

from codeloop.agent.applier import Applier
from codeloop.agent.clock import ms_since
from codeloop.agent.conversation import Conversation
from codeloop.agent.model import ModelLink
from codeloop.agent.view import ModelView
from codeloop.context import prompt
from codeloop.context.layout import (
    SUMMARY_REQUEST,
    estimate_tokens,
    summary_message,
    turn_groups,
)
from codeloop.core import encoded
from codeloop.core.conversation import Item, Reply, UserText, chat_messages
from codeloop.core.encoded import chat_json
from codeloop.core.events import Compaction, ErrorEvent, Notice
from codeloop.core.kinds import ErrorKind, NoticeKind
from codeloop.core.stream import EventStream
from codeloop.transport import TransportError

CHUNK = 0.15  # after a compaction, the context grows this share of the window before the next
AFTER_COMPACTION = 0.6  # a compaction aims below this share of the compaction threshold


def _tokens(items: list[Item]) -> int:
    return estimate_tokens(encoded.array(chat_json(item) for item in items))


class Compactor:
    """Replaces the older turns of the conversation by a summary."""

    def __init__(self, conversation: Conversation, model: ModelLink, view: ModelView,
                 applier: Applier, events: EventStream, compact_at: float, keep_recent_turns: int,
                 window: int) -> None:
        self.conversation = conversation
        self.model = model
        self.view = view
        self.applier = applier
        self.events = events
        self.compact_at = compact_at
        self.keep_recent_turns = keep_recent_turns
        self.window = window
        self._compacted_to: int | None = None  # context size right after the last compaction

    def context_tokens(self) -> int:
        return _tokens(self.conversation.items) + estimate_tokens(json.dumps(self.model.tools))

    def due(self) -> bool:
        tokens = self.context_tokens()
        if tokens <= self.compact_at * self.window:
            return False
        return self._compacted_to is None or tokens > self._compacted_to + CHUNK * self.window

    def _kept(self, groups: list[list[Item]]) -> list[list[Item]]:
        """The latest `keep_recent_turns` turns, fewer (down to one) when they alone would leave
        the context too full."""
        head = self.conversation.items[:2]
        keep = [g for g in groups if isinstance(g[0], Reply)][-self.keep_recent_turns:]
        target = AFTER_COMPACTION * self.compact_at * self.window
        while len(keep) > 1 and _tokens([*head, *[i for g in keep for i in g]]) > target:
            keep = keep[1:]
        return keep

    async def compact(self, reason: str, turn: int) -> bool:
        """Replace the older turns by a summary; False when there is nothing old enough."""
        items = self.conversation.items
        if len(items) < 3:
            return False
        groups = turn_groups(items[2:])
        keep = self._kept(groups)
        old = groups[:len(groups) - len(keep)]
        if not any(isinstance(g[0], Reply) for g in old):
            self.events.emit(Notice(kind=NoticeKind.COMPACTION,
                                    message="nothing old enough to compact"))
            return False
        started, before = time.perf_counter(), self.context_tokens()
        model_summary = ""
        try:
            model_summary = await self.model.summarise(turn, [*items, UserText(SUMMARY_REQUEST)])
        except TransportError as exc:
            self.events.emit(ErrorEvent(kind=ErrorKind.COMPACTION, message=f"the model could "
                                        f"not summarise ({exc}); keeping codeloop's own summary"))
        summary = summary_message(self._facts(), model_summary)
        self.conversation.replace([*items[:2], summary, *[i for g in keep for i in g]])
        self.view.forget()
        self.view.remember(chat_messages(self.conversation.items))  # the kept turns' files
        self._compacted_to = self.context_tokens()
        self.events.emit(Compaction(
            reason=reason, tokens_before=before, tokens_after=self._compacted_to,
            turns_replaced=sum(isinstance(g[0], Reply) for g in old), turns_kept=len(keep),
            duration_ms=ms_since(started), summary=summary.text))
        return True

    def _facts(self) -> str:
        """The part of a summary codeloop writes itself, deterministically."""
        facts = [f"Task: {self.conversation.task}", "",
                 prompt.test_report(self.applier.results.latest), "",
                 "Files changed so far (diff stat against the start of the session):",
                 self.applier.sandbox.diffstat() or "(none)"]
        if self.applier.failed_patches:
            facts += ["", "Patches that did not apply, and why:",
                      *self.applier.failed_patches[-10:]]
        return "\n".join(facts)
