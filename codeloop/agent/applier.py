"""A reply's edits, from proposal to tested commit, and what the model is told about them.

Owns (e) collecting the edits and the answers to read-only tool calls from a reply, (f) applying
them all or nothing and committing them through the sandbox, (g) running the tests on the new
files, and the feedback text; the patches that failed, for a compaction's summary. The patch
engine, git and the test runner are their modules'.
"""

from __future__ import annotations

from collections.abc import Callable

from codeloop.agent.clock import TurnClock
from codeloop.agent.results import Results
from codeloop.agent.view import ModelView
from codeloop.context.tools import READ_ONLY, run_read_only
from codeloop.core.events import (
    ModelDone,
    ModelToolCall,
    PatchApplied,
    PatchProposed,
    PatchRejected,
    ToolResult,
)
from codeloop.core.kinds import CallKind, TurnOutcome
from codeloop.core.stream import EventStream
from codeloop.edits.errors import PatchError
from codeloop.edits.extract import ProposedEdit, operation_patch, patch_argument, scan_text
from codeloop.edits.patch import FileEdit, diffstat, plan
from codeloop.testrunner.service import TestService
from codeloop.workspace.errors import SandboxDamaged, SandboxError
from codeloop.workspace.sandbox import Sandbox


class Applier:
    """Turns a reply's proposals into a commit whose tests have run, or a precise refusal."""

    def __init__(self, sandbox: Sandbox, results: Results, tests: TestService, view: ModelView,
                 events: EventStream, tool_output_bytes: int) -> None:
        self.sandbox = sandbox
        self.results = results
        self.tests = tests
        self.view = view
        self.events = events
        self.tool_output_bytes = tool_output_bytes
        self.failed_patches: list[str] = []  # "turn N: why", for a compaction's summary

    def collect(self, turn: int, done: ModelDone, calls: list[ModelToolCall]
                ) -> tuple[list[ProposedEdit], dict[str, str]]:
        """The reply's edits (tool calls, then the edits in its text, then its edit-like text that
        is no usable edit) and the answers to the calls that are no edit."""
        proposals: list[ProposedEdit] = []
        answers: dict[str, str] = {}
        for call in calls:
            if call.name == "apply_patch":  # a function's, a freeform tool's or the built-in's
                read = operation_patch if call.kind is CallKind.PATCH else patch_argument
                try:
                    proposals.append(ProposedEdit(f"tool:{call.call_id}", read(call.arguments)))
                except ValueError as exc:  # the reply's change is one: none of it applies
                    proposals.append(ProposedEdit(f"tool:{call.call_id}", call.arguments,
                                                  f"apply_patch call {call.call_id}: {exc}"))
            elif call.name in READ_ONLY:
                answers[call.call_id] = self.view.reread(turn, call) or run_read_only(
                    self.sandbox.path, call.name, call.arguments, self.tool_output_bytes)
                self.events.emit(ToolResult(turn=turn, call_id=call.call_id, name=call.name,
                                            output=answers[call.call_id]))
            else:
                answers[call.call_id] = (f"error: there is no tool named {call.name!r}; use "
                                         "apply_patch, read_file, search or list_files")
        found = scan_text(done.text, cut_off=done.finish_reason == "length")
        proposals += [ProposedEdit("text", text) for text in found.edits]
        if not proposals:  # what is edit-like but no usable edit is refused by `plan`, precisely:
            # the turn never ends `no_edits` on an edit the model believes it sent (beside a
            # usable edit, a fragment is the model quoting itself: left alone, as before)
            proposals += [ProposedEdit("text", text) for text in found.unusable]
        for proposal in proposals:
            self.events.emit(PatchProposed(turn=turn, source=proposal.source,
                                           patch=proposal.diff))
        return proposals, answers

    async def apply_and_test(self, turn: int, proposals: list[ProposedEdit], clock: TurnClock,
                             meanwhile: Callable[[], None] | None = None
                             ) -> tuple[TurnOutcome, str]:
        """(f) apply and commit, (g) test (`meanwhile` beside the run); returns how the turn
        went and what to tell."""
        with clock.span("test_ms"):  # a baseline still confirming: stopped, the patch first
            await self.results.give_way()
        outcome, feedback = await self._apply_and_test(turn, proposals, clock, meanwhile)
        return outcome, "\n\n".join(n for n in (self.results.take_note(), feedback) if n)

    async def _apply_and_test(self, turn: int, proposals: list[ProposedEdit], clock: TurnClock,
                              meanwhile: Callable[[], None] | None
                              ) -> tuple[TurnOutcome, str]:
        if self.tests.self_checking:
            with clock.span("test_ms"):  # a test run still going: not overhead
                await self.tests.self_checked()  # trust is decided before the next run
        try:
            with clock.span("apply_ms"):
                changed, already, commit, stat = self._commit(turn, proposals)
        except SandboxDamaged:  # not a refusal: the session ends, saying what is left how
            raise
        except (PatchError, SandboxError) as exc:
            self.events.emit(PatchRejected(turn=turn, reason=str(exc)))
            self.failed_patches.append(f"turn {turn}: {str(exc).splitlines()[0][:300]}")
            return TurnOutcome.REJECTED, (
                "The patch was NOT applied; nothing was changed:\n" + str(exc)
                + "\n\nSend a corrected patch against the files as they are.")
        notes = [f"The patch was applied ({stat})."] if changed else [
            "Nothing changed: every hunk of the patch is already present in the files."]
        if already and changed:
            notes.append("Already present, skipped: " + "; ".join(already))
        # a result of other files (an /undo since) is never passed off as that of these
        if changed or not self.results.known_for(commit):
            result = await self.results.run(turn, meanwhile)
            clock.add("test_ms", result.duration_ms)
            if changed:  # the commit's message records the result: it is a new commit
                with clock.span("apply_ms"):
                    commit = self.sandbox.reword_head(f"codeloop turn {turn}: {stat}\n\n"
                                                      f"tests: {result.summary}")
            self.results.tested(commit)
        with clock.span("prompt_ms"):  # the feedback is the next request's prompt
            notes.append(self.view.report_once(turn, self.results.latest))
            if not self.results.latest.passed:
                notes.append(self.view.failure_files(self.results.latest))
        outcome = TurnOutcome.APPLIED if changed else TurnOutcome.UNCHANGED
        return outcome, "\n\n".join(n for n in notes if n)

    def _commit(self, turn: int, proposals: list[ProposedEdit]
                ) -> tuple[list[FileEdit], list[str], str, str]:
        """All the proposals' edits committed, or none (raises PatchError or SandboxError);
        returns the edits that change a file, the hunks already present, the commit, and the
        diff stat's summary line."""
        if refusals := [p.refusal for p in proposals if p.refusal]:
            raise PatchError("\n".join(refusals))
        edits = plan(self.sandbox.path, [p.diff for p in proposals], self.sandbox.index_modes)
        self.sandbox.refuse_submodule_edits(
            path for e in edits for path in (e.path, e.renamed_from) if path)
        changed = [e for e in edits if e.changed]
        already = [label for e in edits for label in e.already_applied]
        stat = diffstat(changed)
        commit = self.sandbox.head()
        if changed:
            commit = self.sandbox.commit_patch(
                changed, f"codeloop turn {turn}: {stat.splitlines()[-1]}")
        self.events.emit(PatchApplied(turn=turn, files=[e.path for e in changed], commit=commit,
                                      already_applied=already, diffstat=stat))
        return changed, already, commit, stat.splitlines()[-1] if changed else ""
