"""The edit–test loop: a producer of events that reads like the steps it takes.

(a) create the sandbox, (b) run the baseline tests, then per turn: (c) build the prompt,
(d) stream the reply, (e) extract edits, (f) apply them atomically, (g) run the tests,
(h) feed failures back. It owns the conversation and the latency accounting of each turn; every
I/O detail lives in the module that owns it. Nothing here imports a UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeloop import __version__
from codeloop.config import Config
from codeloop.context import prompt
from codeloop.context.layout import (
    BYTES_PER_TOKEN,
    SUMMARY_REQUEST,
    PrefixProbe,
    PrefixTracker,
    estimate_tokens,
    summary_message,
    turn_groups,
    window_for,
)
from codeloop.context.tools import READ_ONLY, run_read_only, tool_schemas
from codeloop.core.events import (
    Compaction,
    ErrorEvent,
    EventStream,
    ModelDone,
    ModelFirstByte,
    ModelRequest,
    ModelRetry,
    ModelToolCall,
    Notice,
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
    TransportChange,
    TurnEnd,
    TurnStart,
    UserMessage,
)
from codeloop.edits.extract import ProposedEdit, diffs_in_text, patch_argument
from codeloop.edits.patch import PatchError, check_path, diffstat, plan
from codeloop.interrupts import EXIT_INTERRUPTED
from codeloop.testrunner.run import TestResult
from codeloop.testrunner.service import TestService
from codeloop.testrunner.warm import WarmRunner
from codeloop.transport import ModelClient, TransportError
from codeloop.transport.retry import stream_with_retries
from codeloop.workspace.sandbox import (
    Sandbox,
    SandboxDamaged,
    SandboxError,
    preload_gitpython,
    start_sandbox,
)

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3
CHUNK = 0.15  # after a compaction, the context grows this share of the window before the next
AFTER_COMPACTION = 0.6  # a compaction aims below this share of the compaction threshold
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
    at: str = ""  # start the sandbox at this revision instead of HEAD + uncommitted work


@dataclass
class _Reply:
    """One streamed model reply, gathered from its events."""

    done: ModelDone | None = None
    calls: list[ModelToolCall] = field(default_factory=list)


class Session:
    """One run of codeloop on one task, from sandbox creation to the final result."""

    def __init__(self, repo_root: Path, config: Config, settings: SessionSettings,
                 client: ModelClient, events: EventStream, runner: WarmRunner | None = None,
                 sandbox_start: Future[Sandbox] | None = None) -> None:
        self.repo_root = repo_root
        self.config = config
        self.settings = settings
        self.client = client
        self.events = events
        self.with_tools = config.edit_mode in ("auto", "tools")
        self.tools = tool_schemas() if self.with_tools else []
        self.sandbox: Sandbox | None = None
        self._creating = sandbox_start  # by the CLI (`start_sandbox`), else `open` starts it
        self.messages: list[dict[str, Any]] = []
        self.sent = 0
        self.result: TestResult | None = None
        self.shown_files: dict[str, str] = {}
        self.prefix = PrefixTracker()
        self.window = window_for(config.model, config.context_window)
        self.failed_patches: list[str] = []
        self.reads: dict[str, tuple[str, int]] = {}  # read_file arguments -> (digest, turn)
        self._last_report: tuple[str, int] | None = None  # (test report, turn it was shown)
        self._tested_at: str | None = None  # the commit `result` is of (None: none yet)
        self._results: dict[str, TestResult] = {}  # commit -> the result of its files
        self._compacted_to: int | None = None  # context size right after the last compaction
        self._probe = PrefixProbe(0.0, 0, "")
        self._checking: asyncio.Task[None] | None = None  # the warm runner's self-check
        self.tests = TestService(settings.test_command, config.test_timeout_s,
                                 settings.hidden_env, config.warm_tests, config.fail_fast,
                                 self.events.emit, runner)
        self.pinned: list[str] = list(settings.pinned_files)
        self.notes: list[str] = []
        self.turn = 0
        self._pending_user: str | None = None
        self.task_text = settings.task
        self._started = time.perf_counter()
        self._connecting: asyncio.Task[None] | None = None
        self.totals: dict[str, float] = {"turns": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                         "cached_tokens": 0, "model_ms": 0.0,
                                         "baseline_test_ms": 0.0,
                                         **dict.fromkeys((*SUMMED_SPANS, "overhead_ms"), 0.0)}

    async def run(self) -> int:
        """Headless: the whole session for `settings.task`. Returns the exit code."""
        outcome, exit_code, applied = "failed", EXIT_FAILED, False
        try:
            await self.open()
            outcome = await self.ask(self.settings.task)
            exit_code = EXIT_PASSED if self.result and self.result.passed else EXIT_FAILED
            if self.settings.apply_at_end:
                applied = self._apply_to_worktree()
        except asyncio.CancelledError:
            outcome, exit_code = "interrupted", EXIT_INTERRUPTED
        except TransportError as exc:
            outcome, exit_code = "model_error", EXIT_MODEL
            self.events.emit(ErrorEvent(kind="transport", message=str(exc)))
        except SandboxError as exc:
            outcome, exit_code = "sandbox_error", EXIT_USAGE
            self.events.emit(ErrorEvent(kind="sandbox", message=str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug must still end the recording cleanly
            outcome, exit_code = "internal_error", EXIT_FAILED
            self.events.emit(ErrorEvent(kind="internal", message=f"{type(exc).__name__}: {exc}"))
        closing = asyncio.ensure_future(self.close(outcome, exit_code, applied))
        while not closing.done():  # a Ctrl-C now does not cut the end short: it is recorded
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(closing)
        closing.result()
        return exit_code

    async def open(self) -> None:
        """(a) the sandbox (started by the CLI, or now), (b) the baseline tests, while the
        connection opens and the warm runner gets ready."""
        self._started = time.perf_counter()
        self.events.emit(SessionStart(
            session_id=self.settings.session_id, task=self.settings.task,
            repo=str(self.repo_root), model=self.config.model, base_url=self.config.base_url,
            transport=self.client.name, edit_mode=self.config.edit_mode,
            test_command=self.settings.test_command, max_iterations=self.config.max_iterations,
            version=__version__,
        ))
        creating = self._creating or start_sandbox(
            self.repo_root, self.settings.session_id, self.settings.at)
        warming: asyncio.Task[None] | None = None
        baseline: asyncio.Future[TestResult] | None = None
        try:
            if not creating.done():  # (started by the CLI, it usually is by now)
                try:
                    await asyncio.wrap_future(creating)  # (it cannot be cancelled)
                except asyncio.CancelledError:  # let git finish: the sandbox is then reported
                    self._sandbox_ready(creating.result())
                    raise
            self._sandbox_ready(creating.result())
            trusted = self.tests.trusted_before(self.sandbox.path)
            if trusted:  # a self-check passed before: the baseline itself runs warm
                warming = self._connect_and_warm()
                await warming
            baseline = asyncio.ensure_future(self._run_tests(0))
            await asyncio.sleep(0)  # the tests' process starts, then (unless the baseline
            # waited for the runner) connecting and warming, which overlap the run
            warming = warming or self._connect_and_warm()
            if not trusted and self.tests.wanted:  # the baseline runs cold; beside it, once
                # warm, the runner runs it too (in a copy) and must match it to be trusted
                self._checking = asyncio.create_task(self._self_check(
                    warming, baseline, self.tests.check_alone(self.sandbox.path)))
            preload_gitpython()  # the first commit's import, while the main thread idles
            self.result = await baseline
            self._tested(self.sandbox.base_commit)
        except asyncio.CancelledError:
            if warming is not None:
                warming.cancel()
            if baseline is not None:  # its process group is gone before the files are reset
                baseline.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await baseline
            self._interrupted()
            raise

    def _sandbox_ready(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.events.emit(SandboxReady(
            path=str(sandbox.path), branch=sandbox.branch, base_commit=sandbox.base_commit,
            head_commit=sandbox.base_commit, elapsed_ms=_ms_since(self._started)))

    def _connect_and_warm(self) -> asyncio.Task[None]:
        """Open the model connection and warm the test runner, each in a task of its own (the
        runner reads only the dependency files, the same in the repo as in the sandbox);
        returns the runner's."""
        self._connecting = asyncio.create_task(self._prepare_model())
        return asyncio.create_task(self.tests.prepare(self.repo_root))

    async def _prepare_model(self) -> None:
        """Connect, and warm the server up where the wire supports it, while the baseline
        runs."""
        await self.client.connect()
        note = await self.client.warm_up(prompt.system_prompt(self.with_tools), self.tools)
        if note:
            self.events.emit(TransportChange(kind="warmup", transport=self.client.name,
                                             message=note))

    async def ask(self, text: str) -> str:
        """Work on one user message: turns until a patch (new, or already in the files) leaves
        the tests passing, the model stops proposing edits, or `max_iterations` turns. Returns
        the outcome. Cancelling it (Ctrl-C) stops the stream and the test process and leaves the
        sandbox at its last commit."""
        self.events.emit(UserMessage(text=text))
        self._pending_user = text
        try:
            for _ in range(self.config.max_iterations):
                if self._compaction_due():
                    await self.compact("auto")  # only ever between turns
                self.turn += 1
                await self._turn(self.turn)
        except StopLoop as stop:
            return stop.outcome
        except asyncio.CancelledError:
            self._interrupted()
            raise
        return "max_iterations"

    async def close(self, outcome: str, exit_code: int, applied: bool = False) -> None:
        """End the session: the `session.end` event, the connection, git handles."""
        if self._connecting is not None:
            self._connecting.cancel()
        await self.client.aclose()
        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)  # its copy is removed
        await self.tests.close()
        self.totals["wall_ms"] = _ms_since(self._started)
        diffstat = ""
        if self.sandbox:
            try:
                diffstat = self.sandbox.diffstat()
            except SandboxError as exc:  # removed from under the session: it still ends
                self.events.emit(ErrorEvent(
                    kind="sandbox", message=f"the sandbox {self.sandbox.path} is gone: {exc}"))
        self.events.emit(SessionEnd(
            outcome=outcome, exit_code=exit_code,
            branch=self.sandbox.branch if self.sandbox else "", diffstat=diffstat,
            applied_to_worktree=applied, totals=self.totals,
        ))
        if self.sandbox:
            self.sandbox.close()

    # context size

    def _context_tokens(self) -> int:
        return estimate_tokens(json.dumps(self.messages, ensure_ascii=False)) + estimate_tokens(
            json.dumps(self.tools))

    def _reread(self, turn: int, call: ModelToolCall) -> str:
        """A read of a file already in context and unchanged: a reference instead of the bytes."""
        if call.name != "read_file" or self.sandbox is None:
            return ""
        try:
            path = self.sandbox.path / json.loads(call.arguments or "{}").get("path", "")
        except (ValueError, AttributeError, TypeError):
            return ""
        digest = _digest(path) if path.is_file() else ""
        seen = self.reads.get(call.arguments)
        self.reads[call.arguments] = (digest, seen[1] if seen and seen[0] == digest else turn)
        if digest and seen and seen[0] == digest:
            return (f"(unchanged since you read it in turn {seen[1]}: that content is still "
                    "current, so it is not repeated here)")
        return ""

    def _compaction_due(self) -> bool:
        """Past `compact_at` of the window, and — after a compaction — only once the context has
        grown by a chunk again, so compactions (each one a cache break) stay rare."""
        tokens = self._context_tokens()
        if tokens <= self.config.compact_at * self.window:
            return False
        return self._compacted_to is None or tokens > self._compacted_to + CHUNK * self.window

    async def compact(self, reason: str) -> bool:
        """Replace the older turns by a summary; the latest `keep_recent_turns` stay verbatim
        (fewer, down to one, when they alone would leave the context too full).

        The summary is codeloop's own facts (task, failing tests, files touched, patches that
        failed) plus the model's account of decisions and attempts, asked for in a request that
        repeats the current prompt, so it is served from the provider's cache.
        """
        assert self.sandbox is not None and self.result is not None
        if len(self.messages) < 3:
            return False
        groups = turn_groups(self.messages[2:])
        turns = [g for g in groups if g[0]["role"] == "assistant"]
        keep = turns[-self.config.keep_recent_turns:]
        target = AFTER_COMPACTION * self.config.compact_at * self.window
        while len(keep) > 1 and estimate_tokens(json.dumps(
                [*self.messages[:2], *[m for g in keep for m in g]], ensure_ascii=False)
        ) > target:
            keep = keep[1:]
        old = groups[:len(groups) - len(keep)]
        if not any(g[0]["role"] == "assistant" for g in old):
            self.events.emit(Notice(kind="compaction", message="nothing old enough to compact"))
            return False
        started, before = time.perf_counter(), self._context_tokens()
        model_summary = ""
        request = [*self.messages, {"role": "user", "content": SUMMARY_REQUEST}]
        try:
            async for event in stream_with_retries(self.client, self.turn, request, self.tools):
                if isinstance(event, ModelDone):
                    model_summary = event.text
        except TransportError as exc:
            self.events.emit(ErrorEvent(kind="compaction", message=f"the model could not "
                                        f"summarise ({exc}); keeping codeloop's own summary"))
        summary = summary_message(self._facts(), model_summary)
        self.messages = [*self.messages[:2], summary, *[m for g in keep for m in g]]
        self.sent = 0  # the next request carries the whole (new) conversation
        self._forget_shown()
        self._remember_shown(self.messages)  # files in the kept turns are still in view
        self._compacted_to = self._context_tokens()
        self.events.emit(Compaction(
            reason=reason, tokens_before=before, tokens_after=self._compacted_to,
            turns_replaced=sum(g[0]["role"] == "assistant" for g in old), turns_kept=len(keep),
            duration_ms=_ms_since(started), summary=summary["content"]))
        return True

    def _facts(self) -> str:
        """The part of a summary codeloop writes itself, deterministically."""
        assert self.sandbox is not None and self.result is not None
        facts = [f"Task: {self.task_text}", "", prompt.test_report(self.result), "",
                 "Files changed so far (diff stat against the start of the session):",
                 self.sandbox.diffstat() or "(none)"]
        if self.failed_patches:
            facts += ["", "Patches that did not apply, and why:", *self.failed_patches[-10:]]
        return "\n".join(facts)

    # commands from an interactive user (the TUI and the line REPL)

    def undo(self) -> str:
        """Sandbox back to the previous turn's commit; the model hears of it next time. The
        test result is again that commit's (known unless its test run was interrupted: then
        the next patch, or /test, runs them)."""
        assert self.sandbox is not None
        head = self.sandbox.undo()
        if head in self._results:
            self.result = self._results[head]
            self._tested_at = head
        self.notes.append(f"The user undid your last change: the files are back at commit "
                          f"{head[:10]}.")
        self.events.emit(Notice(kind="undo", message=f"sandbox back at {head[:10]}"))
        return head

    def diff(self) -> str:
        """The whole session's diff (base snapshot to the sandbox head)."""
        assert self.sandbox is not None
        return self.sandbox.diff()

    def apply(self) -> list[str]:
        """Apply the session's diff to the user's working tree, as `--apply` does."""
        assert self.sandbox is not None
        files = self.sandbox.apply_to_worktree()
        self.events.emit(Notice(kind="apply", message="applied to your working tree: "
                                + (", ".join(files) or "nothing to apply")))
        return files

    async def rerun_tests(self) -> TestResult:
        """Run the tests now; the model sees the result with the next message."""
        assert self.sandbox is not None
        self.result = await self._run_tests(self.turn)
        self._tested(self.sandbox.head())
        self.notes.append("The user re-ran the tests. " + prompt.test_report(self.result))
        return self.result

    def pin(self, rel: str) -> str:
        """Put a file into the model's context (now if nothing was asked yet, else next time)."""
        assert self.sandbox is not None
        path = check_path(self.sandbox.path, rel)
        if not (self.sandbox.path / path).is_file():
            raise PatchError(f"{path}: no such file in the sandbox")
        if path not in self.pinned:
            self.pinned.append(path)
        self.events.emit(Notice(kind="pin", message=f"pinned {path} into the context"))
        return path

    def set_model(self, name: str) -> None:
        self.client.model = self.config.model = name
        self.events.emit(Notice(kind="model", message=f"model is now {name}"))

    def clear(self) -> None:
        """Forget the conversation; the next message starts a fresh one on the current files."""
        self.messages, self.sent, self.notes = [], 0, []
        self._forget_shown()
        self.events.emit(Notice(kind="clear", message="conversation cleared"))

    def _forget_shown(self) -> None:
        """What the model has seen is gone from its context: show it again when relevant."""
        self.shown_files.clear()
        self.reads.clear()
        self._last_report = None

    def _interrupted(self) -> None:
        """After a cancel: files back to the last commit, every tool call answered."""
        self.events.emit(ErrorEvent(kind="interrupted", message="interrupted by the user; "
                                    "the sandbox is at its last commit"))
        if self.sandbox:
            self.sandbox.discard_uncommitted()
        self._pending_user = None
        answered = {m.get("tool_call_id") for m in self.messages if m["role"] == "tool"}
        for message in [m for m in self.messages if m.get("tool_calls")][-1:]:
            for call in message["tool_calls"]:
                if call["id"] not in answered:
                    self.messages.append({"role": "tool", "tool_call_id": call["id"],
                                          "content": "cancelled by the user"})

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
        mark = time.perf_counter()
        self._feed_back(reply.calls, tool_answers, proposals, feedback)
        spans["prompt_ms"] += _ms_since(mark)
        spans["overhead_ms"] = round(_ms_since(began) - sum(spans[k] for k in SUMMED_SPANS), 3)
        spans["tokens_per_s"] = done.tokens_per_s
        for key in (*SUMMED_SPANS, "overhead_ms"):
            self.totals[key] = round(self.totals.get(key, 0.0) + spans[key], 3)
        self.events.emit(TurnEnd(turn=turn, outcome=outcome, spans=spans, cache={
            "prefix_reuse": self._probe.reuse, "prefix_changed": self._probe.changed,
            "prompt_tokens": done.usage.get("prompt_tokens", 0),
            "cached_tokens": done.usage.get("cached_tokens", 0)}))
        if outcome == "no_edits":
            raise StopLoop("no_edits")
        if outcome in ("applied", "unchanged") and self.result.passed:
            raise StopLoop("passed")  # (a patch already in the files changes nothing to do)

    async def _ask(self, turn: int, spans: dict[str, float]) -> _Reply:
        """Build the request (the opening once, then what the last turn appended) and send it.

        In `auto` edit mode, a server that refuses tools on the first request gets the same
        request again without them, asking for ```diff blocks instead.
        """
        assert self.sandbox is not None and self.result is not None
        mark = time.perf_counter()
        if self._pending_user is not None:
            self._add_user_message(self._pending_user)
            self._pending_user = None
        new_messages, self.sent = self.messages[self.sent:], len(self.messages)
        spans["prompt_ms"] += _ms_since(mark)
        if self._connecting is not None and not self._connecting.done():
            await asyncio.shield(self._connecting)  # never race the warm-up on one socket
        probe = self._probe = self.prefix.measure(self.messages, self.tools)
        self.events.emit(ModelRequest(turn=turn, messages=new_messages,
                                      tools=[t["function"]["name"] for t in self.tools],
                                      prompt_tokens_estimate=probe.sent_tokens,
                                      prefix_reuse=probe.reuse, prefix_changed=probe.changed))
        try:
            return await self._stream(turn, spans)
        except TransportError as exc:
            first = not any(m["role"] == "assistant" for m in self.messages)
            refused = (first and self.tools and self.config.edit_mode == "auto"
                       and exc.status == 400 and "tool" in str(exc).lower())
            if not refused:
                raise
            reason = str(exc)
        self.with_tools, self.tools = False, []
        self.messages[0] = {"role": "system", "content": prompt.system_prompt(False)}
        self.sent = 0
        self.events.emit(ErrorEvent(kind="fallback", message=f"the server refused tools "
                                    f"({reason}); asking for ```diff blocks in text instead"))
        return await self._ask(turn, spans)

    async def _stream(self, turn: int, spans: dict[str, float]) -> _Reply:
        reply = _Reply()
        attempt_connect_ms = 0.0  # booked as connect_ms during the attempt now running
        async for event in stream_with_retries(self.client, turn, self.messages, self.tools):
            self.events.emit(event)
            if isinstance(event, ModelFirstByte):
                spans["connect_ms"] += event.connect_ms
                attempt_connect_ms += event.connect_ms
                spans["ttfb_ms"] = event.ttfb_ms
            elif isinstance(event, ModelToolCall):
                reply.calls.append(event)
            elif isinstance(event, ModelRetry):
                # the failed attempt (a stall up to the request timeout, say) and the back-off:
                # time lost to the server, not codeloop's own
                spans["retry_wait_ms"] = round(
                    spans["retry_wait_ms"] + event.elapsed_ms - attempt_connect_ms
                    + event.delay_s * 1000, 3)
                attempt_connect_ms = 0.0
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
        message: dict[str, Any] = {"role": "assistant",
                                   "content": done.text or (None if calls else "")}
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
                answers[call.call_id] = self._reread(turn, call) or run_read_only(
                    self.sandbox.path, call.name, call.arguments,
                    self.config.tool_output_tokens * BYTES_PER_TOKEN)
                self.events.emit(ToolResult(turn=turn, call_id=call.call_id, name=call.name,
                                            output=answers[call.call_id]))
            else:
                answers[call.call_id] = (f"error: there is no tool named {call.name!r}; use "
                                         "apply_patch, read_file, search or list_files")
        proposals += [ProposedEdit("text", diff) for diff in
                      diffs_in_text(done.text, cut_off=done.finish_reason == "length")]
        for proposal in proposals:
            self.events.emit(PatchProposed(turn=turn, source=proposal.source,
                                           patch=proposal.diff))
        return proposals, answers

    async def _self_check(self, warming: asyncio.Task[None],
                          baseline: asyncio.Future[TestResult], alone: bool) -> None:
        """Once the runner is warm (a slow warm-up never delays the first turn), its run of the
        baseline must match the cold one to be trusted: beside the cold baseline, in a copy of
        the sandbox, or (`alone`) after it, in the sandbox itself. Never raises: a check that
        fails means cold runs."""
        assert self.sandbox is not None
        try:
            if alone:
                cold = await asyncio.shield(baseline)
                await warming
                await self.tests.self_check(cold, self.sandbox.path)
            else:
                await self._check_beside(warming, baseline, self.sandbox)
        except Exception as exc:  # noqa: BLE001 - the session goes on, cold
            self.tests.fall_back(f"tests run cold: the self-check failed "
                                 f"({type(exc).__name__}: {exc})")
            await self.tests.close()

    async def _check_beside(self, warming: asyncio.Task[None],
                            baseline: asyncio.Future[TestResult], sandbox: Sandbox) -> None:
        making = sandbox.start_scratch_copy()
        try:
            copy = await asyncio.wrap_future(making)
        except asyncio.CancelledError:  # once made, the copy is still removed
            making.add_done_callback(lambda done: done.exception() is None
                                     and sandbox.discard_scratch(done.result()))
            raise
        except SandboxError as exc:
            self.tests.fall_back(f"tests run cold: no copy of the sandbox for the self-check "
                                 f"({exc})")
            return
        try:
            await warming
            warm = await self.tests.check_run(copy)
            await self.tests.judge(warm, await asyncio.shield(baseline), copy, sandbox.path)
        finally:
            sandbox.discard_scratch(copy)

    async def _apply_and_test(self, turn: int, proposals: list[ProposedEdit],
                              spans: dict[str, float]) -> tuple[str, str]:
        assert self.sandbox is not None and self.result is not None
        if self._checking is not None and not self._checking.done():
            mark = time.perf_counter()
            await asyncio.shield(self._checking)  # trust is decided before the next run
            spans["test_ms"] += _ms_since(mark)  # a test run still going: not overhead
        mark = time.perf_counter()
        try:
            edits = plan(self.sandbox.path, [p.diff for p in proposals])
            self.sandbox.refuse_submodule_edits(
                path for e in edits for path in (e.path, e.renamed_from) if path)
            changed = [e for e in edits if e.changed]
            already = [label for e in edits for label in e.already_applied]
            stat = diffstat(changed)
            commit = self.sandbox.head()
            if changed:
                commit = self.sandbox.commit_patch(
                    changed, f"codeloop turn {turn}: {stat.splitlines()[-1]}")
        except SandboxDamaged:  # not a refusal: the session ends, saying what is left how
            raise
        except (PatchError, SandboxError) as exc:
            spans["apply_ms"] = _ms_since(mark)
            self.events.emit(PatchRejected(turn=turn, reason=str(exc)))
            self.failed_patches.append(f"turn {turn}: {str(exc).splitlines()[0][:300]}")
            return "rejected", ("The patch was NOT applied; nothing was changed:\n" + str(exc)
                                + "\n\nSend a corrected patch against the files as they are.")
        self.events.emit(PatchApplied(turn=turn, files=[e.path for e in changed], commit=commit,
                                      already_applied=already, diffstat=stat))
        spans["apply_ms"] = _ms_since(mark)
        notes = [f"The patch was applied ({stat.splitlines()[-1]})."] if changed else [
            "Nothing changed: every hunk of the patch is already present in the files."]
        if already and changed:
            notes.append("Already present, skipped: " + "; ".join(already))
        # a result of other files (an /undo since) is never passed off as that of these
        if changed or commit != self._tested_at:
            self.result = await self._run_tests(turn)
            spans["test_ms"] = round(spans["test_ms"] + self.result.duration_ms, 3)
            if changed:  # the commit's message records the result: it is a new commit
                mark = time.perf_counter()
                commit = self.sandbox.reword_head(f"codeloop turn {turn}: "
                                                  f"{stat.splitlines()[-1]}\n\ntests: "
                                                  f"{self.result.summary}")
                spans["apply_ms"] += _ms_since(mark)
            self._tested(commit)
        mark = time.perf_counter()  # the feedback is the next request's prompt
        notes.append(self._report_once(turn))
        if not self.result.passed:
            notes.append(self._files_to_show())
        spans["prompt_ms"] += _ms_since(mark)
        return "applied" if changed else "unchanged", "\n\n".join(n for n in notes if n)

    def _tested(self, commit: str) -> None:
        """`result` is that of `commit`'s files: remembered, for an /undo back to it."""
        assert self.result is not None
        self._tested_at = commit
        self._results[commit] = self.result

    async def _run_tests(self, turn: int) -> TestResult:
        assert self.sandbox is not None
        self.events.emit(TestStart(turn=turn, command=self.settings.test_command))
        mode = self.tests.label
        with self.sandbox.test_run():  # (what it writes there is the session's own)
            result = await self.tests.run(
                self.sandbox.path, lambda text: self.events.emit(TestOutput(turn=turn,
                                                                            text=text)))
        if turn == 0:
            self.totals["baseline_test_ms"] = result.duration_ms
        self.events.emit(TestDone(
            turn=turn, exit_code=result.exit_code, passed=result.passed, summary=result.summary,
            counts=result.counts, failures=result.failures, duration_ms=result.duration_ms,
            timed_out=result.timed_out, output=result.output, mode=mode))
        return result

    def _report_once(self, turn: int) -> str:
        """The test report, or a one-line reference when the same failures were reported before
        (they are already in the conversation; repeating them only costs tokens). A passing
        report is one line: it is always given as it is."""
        assert self.result is not None
        report = prompt.test_report(self.result, self.config.tool_output_tokens * BYTES_PER_TOKEN)
        if (not self.result.passed and self._last_report is not None
                and self._last_report[0] == report):
            return (f"Test command result: {self.result.summary}: the same failures as after "
                    f"turn {self._last_report[1]}, word for word.")
        self._last_report = (report, turn)
        return report

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

    def _add_user_message(self, text: str) -> None:
        """The opening for the first message; later ones append, with what changed meanwhile."""
        assert self.sandbox is not None and self.result is not None
        if not self.messages:
            self.task_text = text
            self.messages = prompt.opening_messages(
                self.sandbox.path, text, self.result, self.with_tools, self.pinned)
            self._remember_shown(self.messages)
            return
        parts = [*self.notes, text]
        fresh = [rel for rel in self.pinned
                 if self.shown_files.get(rel) != _digest(self.sandbox.path / rel)]
        if fresh:
            parts.append("Pinned files (current content):\n"
                         + prompt.files_section(self.sandbox.path, fresh))
            for rel in fresh:
                self.shown_files[rel] = _digest(self.sandbox.path / rel)
        self.notes = []
        self.messages.append({"role": "user", "content": "\n\n".join(parts)})

    def _remember_shown(self, messages: list[dict[str, Any]]) -> None:
        assert self.sandbox is not None
        text = "\n".join(str(m.get("content") or "") for m in messages)
        for rel in prompt.tracked_files(self.sandbox.path):
            path = self.sandbox.path / rel
            # shown, and shown as it is now (an older version does not count)
            if f"### {rel}\n" in text and path.read_text(errors="replace")[:2000] in text:
                self.shown_files[rel] = _digest(path)

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
                content = (f"Handled together with the patch of call {patch_calls[0]}; "
                           "see its result.")
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
