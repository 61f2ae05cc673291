"""The edit–test loop: a producer of events that reads like the steps it takes.

(a) create the sandbox, (b) run the baseline tests, then per turn: (c) build the prompt,
(d) stream the reply, (e) extract edits, (f) apply them atomically, (g) run the tests,
(h) feed failures back. It owns the conversation and the latency accounting of each turn; every
I/O detail lives in the module that owns it. Nothing here imports a UI.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeloop import __version__, prompt
from codeloop.config import Config
from codeloop.edits import ProposedEdit, diffs_in_text, patch_argument
from codeloop.events import (
    ErrorEvent,
    EventStream,
    ModelDone,
    ModelFirstByte,
    ModelRequest,
    ModelRetry,
    ModelToolCall,
    PatchApplied,
    PatchProposed,
    PatchRejected,
    SandboxReady,
    SessionEnd,
    SessionStart,
    TestDone,
    TestOutput,
    TestStart,
    ToolResult,
    TurnEnd,
    TurnStart,
)
from codeloop.patch import PatchError, diffstat, plan, render
from codeloop.sandbox import Sandbox, SandboxError
from codeloop.testrun import TestResult, run_tests
from codeloop.tools import READ_ONLY, run_read_only, tool_schemas
from codeloop.transport import ModelClient, TransportError
from codeloop.transport.retry import stream_with_retries

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SUMMED_SPANS = ("prompt_ms", "connect_ms", "ttft_ms", "decode_ms", "tools_ms", "apply_ms",
                "test_ms", "retry_wait_ms")


class StopLoop(Exception):
    """The loop ends normally; `outcome` names why (passed, no_edits, max_iterations)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@dataclass
class SessionSettings:
    """What one session is asked to do, beyond the configuration."""

    session_id: str
    task: str
    test_command: str
    apply_at_end: bool = False
    pinned_files: list[str] = field(default_factory=list)
    hidden_env: tuple[str, ...] = ()


@dataclass
class _Reply:
    """One streamed model reply, gathered from its events."""

    done: ModelDone | None = None
    calls: list[ModelToolCall] = field(default_factory=list)


class Session:
    """One run of codeloop on one task, from sandbox creation to the final result."""

    def __init__(self, repo_root: Path, config: Config, settings: SessionSettings,
                 client: ModelClient, events: EventStream) -> None:
        self.repo_root = repo_root
        self.config = config
        self.settings = settings
        self.client = client
        self.events = events
        self.with_tools = config.edit_mode in ("auto", "tools")
        self.tools = tool_schemas() if self.with_tools else []
        self.sandbox: Sandbox | None = None
        self.messages: list[dict[str, Any]] = []
        self.sent = 0
        self.result: TestResult | None = None
        self.shown_files: dict[str, str] = {}
        self.totals: dict[str, float] = {"turns": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                         "cached_tokens": 0, "model_ms": 0.0, "test_ms": 0.0,
                                         "overhead_ms": 0.0}

    async def run(self) -> int:
        """Run the whole session; always ends with a `session.end` event. Returns the exit code."""
        started = time.perf_counter()
        self.events.emit(SessionStart(
            session_id=self.settings.session_id, task=self.settings.task,
            repo=str(self.repo_root), model=self.config.model, base_url=self.config.base_url,
            transport=self.client.name, edit_mode=self.config.edit_mode,
            test_command=self.settings.test_command, max_iterations=self.config.max_iterations,
            version=__version__,
        ))
        connecting = asyncio.create_task(self.client.connect())
        outcome, exit_code, applied = "failed", EXIT_FAILED, False
        try:
            outcome = await self._steps()
            exit_code = EXIT_PASSED if self.result and self.result.passed else EXIT_FAILED
            if self.settings.apply_at_end:
                applied = self._apply_to_worktree()
        except asyncio.CancelledError:
            outcome, exit_code = "interrupted", EXIT_INTERRUPTED
            self.events.emit(ErrorEvent(kind="interrupted", message="interrupted by the user; "
                                        "the sandbox is at its last commit"))
            if self.sandbox:
                self.sandbox.discard_uncommitted()
        except TransportError as exc:
            outcome, exit_code = "model_error", EXIT_MODEL
            self.events.emit(ErrorEvent(kind="transport", message=str(exc)))
        except SandboxError as exc:
            outcome, exit_code = "sandbox_error", EXIT_USAGE
            self.events.emit(ErrorEvent(kind="sandbox", message=str(exc)))
        finally:
            connecting.cancel()
            await self.client.aclose()
        self.totals["wall_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.events.emit(SessionEnd(
            outcome=outcome, exit_code=exit_code,
            branch=self.sandbox.branch if self.sandbox else "",
            diffstat=self.sandbox.diffstat() if self.sandbox else "",
            applied_to_worktree=applied, totals=self.totals,
        ))
        if self.sandbox:
            self.sandbox.close()
        return exit_code

    async def _steps(self) -> str:
        # (a) the sandbox: checkout can take seconds, so it runs in a thread while we connect
        began = time.perf_counter()
        self.sandbox = await asyncio.to_thread(Sandbox.create, self.repo_root,
                                               self.settings.session_id)
        self.events.emit(SandboxReady(
            path=str(self.sandbox.path), branch=self.sandbox.branch,
            base_commit=self.sandbox.base_commit, head_commit=self.sandbox.head(),
            elapsed_ms=round((time.perf_counter() - began) * 1000, 3)))
        # (b) the baseline
        self.result = await self._run_tests(0)
        try:
            for turn in range(1, self.config.max_iterations + 1):
                await self._turn(turn)
        except StopLoop as stop:
            return stop.outcome
        return "max_iterations"

    async def _turn(self, turn: int) -> None:
        assert self.sandbox is not None and self.result is not None
        began = time.perf_counter()
        spans: dict[str, float] = dict.fromkeys(SUMMED_SPANS, 0.0)
        self.totals["turns"] = turn
        self.events.emit(TurnStart(turn=turn))
        # (c) the prompt and (d) the reply
        reply = await self._ask(turn, spans)
        done = reply.done
        assert done is not None
        self._remember_reply(done, reply.calls)
        # (e) the edits, and answers to read-only looks
        mark = time.perf_counter()
        proposals, tool_answers = self._collect(turn, done, reply.calls)
        spans["tools_ms"] = _ms_since(mark)
        outcome = "looked" if reply.calls else "no_edits"
        feedback = ""
        if proposals:
            # (f) apply, (g) test
            outcome, feedback = await self._apply_and_test(turn, proposals, spans)
        elif done.finish_reason == "length":
            outcome, feedback = "cut_off", ("Your reply was cut off at the output token limit. "
                                            "Send a shorter reply: only the patch.")
        # (h) feed back
        self._feed_back(reply.calls, tool_answers, proposals, feedback)
        spans["overhead_ms"] = round(_ms_since(began) - sum(spans[k] for k in SUMMED_SPANS), 3)
        spans["tokens_per_s"] = done.tokens_per_s
        self.totals["overhead_ms"] = round(self.totals["overhead_ms"] + spans["overhead_ms"], 3)
        self.events.emit(TurnEnd(turn=turn, outcome=outcome, spans=spans))
        if outcome == "no_edits":
            raise StopLoop("no_edits")
        if outcome == "applied" and self.result.passed:
            raise StopLoop("passed")

    async def _ask(self, turn: int, spans: dict[str, float]) -> _Reply:
        """Build the request (the opening once, then what the last turn appended) and send it.

        In `auto` edit mode, a server that refuses tools on the first request gets the same
        request again without them, asking for ```diff blocks instead.
        """
        assert self.sandbox is not None and self.result is not None
        mark = time.perf_counter()
        if turn == 1:
            self.messages = prompt.opening_messages(
                self.sandbox.path, self.settings.task, self.result, self.with_tools,
                self.settings.pinned_files)
            self.sent = 0
            self._remember_shown(self.messages)
        new_messages, self.sent = self.messages[self.sent:], len(self.messages)
        spans["prompt_ms"] += _ms_since(mark)
        self.events.emit(ModelRequest(turn=turn, messages=new_messages,
                                      tools=[t["function"]["name"] for t in self.tools]))
        try:
            return await self._stream(turn, spans)
        except TransportError as exc:
            refused = (turn == 1 and self.tools and self.config.edit_mode == "auto"
                       and exc.status == 400 and "tool" in str(exc).lower())
            if not refused:
                raise
            reason = str(exc)
        self.with_tools, self.tools = False, []
        self.events.emit(ErrorEvent(kind="fallback", message=f"the server refused tools "
                                    f"({reason}); asking for ```diff blocks in text instead"))
        return await self._ask(turn, spans)

    async def _stream(self, turn: int, spans: dict[str, float]) -> _Reply:
        reply = _Reply()
        async for event in stream_with_retries(self.client, turn, self.messages, self.tools):
            self.events.emit(event)
            if isinstance(event, ModelFirstByte):
                spans["connect_ms"] += event.connect_ms
                spans["ttfb_ms"] = event.ttfb_ms
            elif isinstance(event, ModelToolCall):
                reply.calls.append(event)
            elif isinstance(event, ModelRetry):
                spans["retry_wait_ms"] += event.delay_s * 1000
            elif isinstance(event, ModelDone):
                reply.done = event
        assert reply.done is not None
        spans["ttft_ms"], spans["decode_ms"] = reply.done.ttft_ms, reply.done.decode_ms
        usage = reply.done.usage
        for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            self.totals[key] += usage.get(key, 0)
        self.totals["model_ms"] += round(spans["connect_ms"] + spans["ttft_ms"]
                                         + spans["decode_ms"], 3)
        return reply

    def _remember_reply(self, done: ModelDone, calls: list[ModelToolCall]) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": done.text or None}
        if calls:
            message["tool_calls"] = [
                {"id": c.call_id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        self.messages.append(message)

    def _collect(self, turn: int, done: ModelDone, calls: list[ModelToolCall]
                 ) -> tuple[list[ProposedEdit], dict[str, str]]:
        assert self.sandbox is not None
        proposals: list[ProposedEdit] = []
        answers: dict[str, str] = {}
        for call in calls:
            if call.name == "apply_patch":
                try:
                    proposals.append(ProposedEdit(f"tool:{call.call_id}",
                                                  patch_argument(call.arguments)))
                except ValueError as exc:
                    answers[call.call_id] = f"error: {exc}"
            elif call.name in READ_ONLY:
                answers[call.call_id] = run_read_only(self.sandbox.path, call.name,
                                                      call.arguments)
                self.events.emit(ToolResult(turn=turn, call_id=call.call_id, name=call.name,
                                            output=answers[call.call_id]))
            else:
                answers[call.call_id] = (f"error: there is no tool named {call.name!r}; use "
                                         "apply_patch, read_file, search or list_files")
        proposals += [ProposedEdit("text", diff) for diff in diffs_in_text(done.text)]
        for proposal in proposals:
            self.events.emit(PatchProposed(turn=turn, source=proposal.source,
                                           patch=proposal.diff))
        return proposals, answers

    async def _apply_and_test(self, turn: int, proposals: list[ProposedEdit],
                              spans: dict[str, float]) -> tuple[str, str]:
        assert self.sandbox is not None and self.result is not None
        mark = time.perf_counter()
        try:
            edits = plan(self.sandbox.path, [p.diff for p in proposals])
            changed = [e for e in edits if e.before != e.after]
            already = [label for e in edits for label in e.already_applied]
            stat = diffstat(changed)
            commit = self.sandbox.head()
            if changed:
                commit = self.sandbox.commit_patch(
                    render(changed), f"codeloop turn {turn}: {stat.splitlines()[-1]}")
        except (PatchError, SandboxError) as exc:
            spans["apply_ms"] = _ms_since(mark)
            self.events.emit(PatchRejected(turn=turn, reason=str(exc)))
            return "rejected", ("The patch was NOT applied; nothing was changed:\n" + str(exc)
                                + "\n\nSend a corrected patch against the files as they are.")
        self.events.emit(PatchApplied(turn=turn, files=[e.path for e in changed], commit=commit,
                                      already_applied=already, diffstat=stat))
        spans["apply_ms"] = _ms_since(mark)
        notes = [f"The patch was applied ({stat.splitlines()[-1]})."] if changed else [
            "Nothing changed: every hunk of the patch is already present in the files."]
        if already and changed:
            notes.append("Already present, skipped: " + "; ".join(already))
        if changed:
            self.result = await self._run_tests(turn)
            spans["test_ms"] = self.result.duration_ms
            mark = time.perf_counter()
            self.sandbox.reword_head(f"codeloop turn {turn}: {stat.splitlines()[-1]}\n\n"
                                     f"tests: {self.result.summary}")
            spans["apply_ms"] += _ms_since(mark)
        notes.append(prompt.test_report(self.result))
        if not self.result.passed:
            notes.append(self._files_to_show())
        return "applied" if changed else "unchanged", "\n\n".join(n for n in notes if n)

    async def _run_tests(self, turn: int) -> TestResult:
        assert self.sandbox is not None
        self.events.emit(TestStart(turn=turn, command=self.settings.test_command))
        result = await run_tests(
            self.settings.test_command, self.sandbox.path, self.config.test_timeout_s,
            lambda text: self.events.emit(TestOutput(turn=turn, text=text)),
            hidden_env=self.settings.hidden_env)
        self.totals["test_ms"] = round(self.totals["test_ms"] + result.duration_ms, 3)
        self.events.emit(TestDone(
            turn=turn, exit_code=result.exit_code, passed=result.passed, summary=result.summary,
            counts=result.counts, failures=result.failures, duration_ms=result.duration_ms,
            timed_out=result.timed_out, output=result.output))
        return result

    def _files_to_show(self) -> str:
        """Files the failures point to whose current content the model has not seen yet."""
        assert self.sandbox is not None and self.result is not None
        root = self.sandbox.path
        wanted = prompt.files_for_failures(root, self.result)
        fresh = [rel for rel in wanted if self.shown_files.get(rel) != _digest(root / rel)]
        if not fresh:
            return ""
        for rel in fresh:
            self.shown_files[rel] = _digest(root / rel)
        return "Files the failures point to (current content):\n" + prompt.files_section(
            root, fresh)

    def _remember_shown(self, messages: list[dict[str, Any]]) -> None:
        assert self.sandbox is not None
        text = "\n".join(str(m.get("content") or "") for m in messages)
        for rel in prompt.tracked_files(self.sandbox.path):
            if f"### {rel}\n" in text:
                self.shown_files[rel] = _digest(self.sandbox.path / rel)

    def _feed_back(self, calls: list[ModelToolCall], answers: dict[str, str],
                   proposals: list[ProposedEdit], feedback: str) -> None:
        """Append the turn's results: one tool message per call, else a user message."""
        patch_calls = [p.source.removeprefix("tool:") for p in proposals
                       if p.source.startswith("tool:")]
        for call in calls:
            if call.call_id in answers:
                content = answers[call.call_id]
            elif patch_calls and call.call_id == patch_calls[0]:
                content = feedback
            else:
                content = f"Applied together with the patch of call {patch_calls[0]}."
            self.messages.append({"role": "tool", "tool_call_id": call.call_id,
                                  "content": content})
        if feedback and not patch_calls:
            self.messages.append({"role": "user", "content": feedback})

    def _apply_to_worktree(self) -> bool:
        assert self.sandbox is not None
        try:
            return bool(self.sandbox.apply_to_worktree())
        except SandboxError as exc:
            self.events.emit(ErrorEvent(kind="apply", message=str(exc)))
            return False


def _ms_since(mark: float) -> float:
    return round((time.perf_counter() - mark) * 1000, 3)


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""
