"""One turn of the loop, step by step: (c) the prompt, (d) the reply, (e) the edits, (f) apply,
(g) test, (h) feed back; and the named conditions that end a user message's turns.

Owns the order of the steps, the turn's `turn.start`/`turn.end` events and its clock; each
step is a call into the part that owns it. A turn cancelled (Ctrl-C) still ends: `turn.end`
with outcome `interrupted`, its spans so far, and the tokens it cost (the server's usage if it
came, else estimated from the streamed text and the request: `cache["estimated"]`). Never
imports a front end.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from codeloop.agent.applier import Applier
from codeloop.agent.clock import Totals, TurnClock
from codeloop.agent.conversation import Conversation
from codeloop.agent.model import ModelLink, Streamed
from codeloop.agent.view import ModelView
from codeloop.context import prompt
from codeloop.context.layout import estimate_tokens
from codeloop.core.conversation import from_chat_messages
from codeloop.core.events import (
    ErrorEvent,
    Event,
    ModelDone,
    ModelRequest,
    ModelTextDelta,
    ModelToolCall,
    TurnEnd,
    TurnStart,
)
from codeloop.core.kinds import ErrorKind, SessionOutcome, TurnOutcome
from codeloop.core.stream import EventStream
from codeloop.transport import TransportError

# `ModelDone.server` token counts that `turn.end` keeps in `cache`
SERVER_TOKENS = ("prompt_tokens_processed", "prompt_tokens_reused")
CUT_OFF = ("Your reply was cut off at the output token limit. Send a shorter reply: only the "
           "patch.")


def stop_condition(outcome: TurnOutcome, passed: bool) -> SessionOutcome | None:
    """Why the turns for a user message end after a turn with `outcome` (None: they go on)."""
    if outcome is TurnOutcome.NO_EDITS:
        return SessionOutcome.NO_EDITS  # the model has nothing more to change
    if outcome in (TurnOutcome.APPLIED, TurnOutcome.UNCHANGED) and passed:
        return SessionOutcome.PASSED  # (a patch already in the files changes nothing to do)
    return None


@dataclass
class Heard:
    """What the running turn has sent and streamed so far, for a turn cut short."""

    turn: int = 0
    prompt_tokens: int = 0  # the request's own estimate
    streamed: list[str] = field(default_factory=list)
    done: ModelDone | None = None  # the reply's end (the server's usage), once it is complete
    tokens_per_s: float = 0.0
    counted: bool = False  # the session totals have the reply's tokens

    def begin(self, turn: int) -> None:
        self.turn, self.prompt_tokens, self.streamed, self.done = turn, 0, [], None
        self.counted = False

    def __call__(self, event: Event) -> None:
        if getattr(event, "turn", None) != self.turn:
            return
        if isinstance(event, ModelRequest):
            self.prompt_tokens = event.prompt_tokens_estimate
        elif isinstance(event, ModelTextDelta):
            self.streamed.append(event.text)
        elif isinstance(event, ModelToolCall):
            self.streamed.append(event.arguments)
        elif isinstance(event, ModelDone):
            self.done, self.tokens_per_s = event, event.tokens_per_s


class TurnRunner:
    """Runs one turn at a time on the session's conversation."""

    def __init__(self, conversation: Conversation, model: ModelLink, view: ModelView,
                 applier: Applier, events: EventStream, totals: Totals) -> None:
        self.conversation = conversation
        self.model = model
        self.view = view
        self.applier = applier
        self.events = events
        self.totals = totals
        self.heard = Heard()
        events.subscribe(self.heard)

    async def run(self, turn: int) -> TurnOutcome:
        clock = TurnClock()
        self.totals.turn_started(turn)
        self.heard.begin(turn)
        self.events.emit(TurnStart(turn=turn))
        try:
            return await self._steps(turn, clock)
        except asyncio.CancelledError:
            self._cut_short(turn, clock)
            raise

    async def _steps(self, turn: int, clock: TurnClock) -> TurnOutcome:
        reply = await self._request(turn, clock)  # (c) the prompt and (d) the reply
        self.totals.replied(reply.done.usage, clock.spans)
        self.heard.counted = True
        self.conversation.add_reply(reply.done.text, reply.calls)
        with clock.span("tools_ms"):  # (e) the edits, and answers to read-only looks
            proposals, answers = self.applier.collect(turn, reply.done, reply.calls)
        outcome = TurnOutcome.LOOKED if reply.calls else TurnOutcome.NO_EDITS
        feedback = ""
        if proposals:  # (f) apply, (g) test
            # the next request's prompt is prepared while the verification runs
            outcome, feedback = await self.applier.apply_and_test(
                turn, proposals, clock, lambda: self.model.prepare(self.conversation.items))
        elif reply.done.finish_reason == "length":
            outcome, feedback = TurnOutcome.CUT_OFF, CUT_OFF
        with clock.span("prompt_ms"):  # (h) feed back
            self.conversation.feed_back(reply.calls, answers, proposals, feedback,
                                        failed=outcome is TurnOutcome.REJECTED)
        spans = clock.stop(reply.done.tokens_per_s)
        self.totals.turn_ended(spans)
        self.events.emit(TurnEnd(turn=turn, outcome=outcome, spans=spans,
                                 cache=self._cache(reply.done.usage, reply.done)))
        return outcome

    def _cache(self, usage: dict[str, int], done: ModelDone | None = None) -> dict[str, object]:
        """Prefix reuse next to the server's cache; the prompt tokens the server processed and
        reused, and the tier that served, where it said."""
        cache: dict[str, object] = {
            "prefix_reuse": self.model.probe.reuse, "prefix_changed": self.model.probe.changed,
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "cached_tokens": usage.get("cached_tokens", 0)}
        if done is not None:
            for key in SERVER_TOKENS:
                if key in done.server:
                    cache[key] = int(done.server[key])
            if done.service_tier:
                cache["service_tier"] = done.service_tier
        return cache

    def _cut_short(self, turn: int, clock: TurnClock) -> None:
        """Ctrl-C: the turn ends now, in the recording and on the panel, with its cost so far."""
        heard = self.heard
        decode_ms, tokens_per_s = clock.cut_short(), heard.tokens_per_s
        if heard.done is not None:  # the reply was complete: the server's usage
            clock.server_side(heard.done)
            cache = self._cache(heard.done.usage, heard.done)
            if not heard.counted:
                self.totals.replied(heard.done.usage, clock.spans)
        else:
            completion = estimate_tokens("".join(heard.streamed))
            usage = {"prompt_tokens": heard.prompt_tokens, "completion_tokens": completion}
            self.totals.replied(usage, clock.spans, estimated=True)
            cache = {**self._cache(usage), "completion_tokens": completion, "estimated": True}
            tokens_per_s = round(completion / decode_ms * 1000, 1) if decode_ms else 0.0
        spans = clock.stop(tokens_per_s)
        self.totals.turn_ended(spans)
        self.events.emit(TurnEnd(turn=turn, outcome=TurnOutcome.INTERRUPTED, spans=spans,
                                 cache=cache))

    async def _request(self, turn: int, clock: TurnClock) -> Streamed:
        """Send the conversation (the opening once, then what the last turn appended); a server
        that refuses tools on the first request gets it again without them."""
        with clock.span("prompt_ms"):
            if self.conversation.pending is not None:
                self._add_user_message(self.conversation.pending)
                self.conversation.pending = None
            new = self.conversation.unsent()
        try:
            return await self.model.send(turn, self.conversation.items, new, clock)
        except TransportError as exc:
            if self.model.refuses_builtin(exc):
                self.model.drop_builtin()
                self.conversation.sent -= len(new)  # the refused request's items go again
                message = (f"the server refused the built-in apply_patch tool ({exc}); "
                           "offering the apply_patch function instead")
            elif self.model.refuses_tools(exc, first=not self.conversation.replied):
                self.conversation.instruct(self.model.drop_tools())
                message = (f"the server refused tools ({exc}); asking for ```diff blocks in "
                           "text instead")
            else:
                raise
        self.events.emit(ErrorEvent(kind=ErrorKind.FALLBACK, message=message))
        return await self._request(turn, clock)

    def _add_user_message(self, text: str) -> None:
        """The opening for the first message; later ones append, with what changed meanwhile."""
        if self.conversation.items:
            self.conversation.follow_up(text, self.view.pinned_files())
            return
        opening = prompt.opening_messages(self.view.root, text, self.applier.results.latest,
                                          self.model.with_tools, self.view.pinned)
        self.conversation.begin(from_chat_messages(opening), text)
        self.view.remember(opening)
