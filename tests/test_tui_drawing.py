"""What the transcript really puts on the screen: text wrapped to the visible width, legible
diffs, no stale lines and one scrollbar.

Each test drives the real app (Pilot) against a real session and the scripted model server, and
reads the composited screen: the segments a terminal would be sent, filters included.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from rich.color import Color, ColorSystem
from rich.segment import Segment
from textual import events

from codeloop.frontends.tui.app import CodeloopApp
from codeloop.frontends.tui.transcript import Transcript
from tests.conftest import fix_diff, make_repo
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall
from tests.test_tui import make_app

# long unbroken prose: every word is unique, so a lost character shows as a missing word
PROSE = "\n\n".join(" ".join(f"prose{p}w{i:02d}+" for i in range(40)) for p in range(5))


@pytest.fixture(autouse=True)
def _caches_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def patch_reply(text: str = PROSE) -> Reply:
    return Reply(text=text, chunk_chars=24,
                 tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])


async def until(pilot, condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the app"
        await pilot.pause(0.02)


async def run_turn(pilot, app: CodeloopApp, task: str = "fix it") -> None:
    await until(pilot, lambda: app.opened)
    await pilot.press(*task, "enter")
    await until(pilot, lambda: app.busy is None and app.latency.turns
                and app.latency.turns[-1].done)
    await pilot.pause(0.1)


def screen(app: CodeloopApp) -> list[list[Segment]]:
    """The whole screen as composited (line filters such as NO_COLOR's applied): rows of
    one-cell segments."""
    return [[Segment(ch, segment.style) for segment in strip for ch in segment.text]
            for strip in app.screen._compositor.render_strips()]


def transcript_rows(app: CodeloopApp, scrollbar: bool = True) -> list[list[Segment]]:
    """The rows of the screen the transcript covers, with or without its scrollbar's column."""
    transcript = app.query_one(Transcript)
    region = transcript.region if scrollbar else transcript.scrollable_content_region
    return [row[region.x:region.right] for row in screen(app)[region.y:region.bottom]]


def text_of(row: list[Segment]) -> str:
    return "".join(segment.text for segment in row)


async def everything_in_the_transcript(pilot, app: CodeloopApp) -> list[str]:
    """The transcript's screen rows from top to bottom, a page at a time, each row once."""
    transcript = app.query_one(Transcript)
    transcript.follow = False
    height, rows = transcript.scrollable_content_region.height, []
    for y in range(0, transcript.max_scroll_y + height, height):
        top = min(y, transcript.max_scroll_y)
        transcript.scroll_to(y=top, animate=False, immediate=True)
        await pilot.pause(0.05)
        page = [text_of(row).strip() for row in transcript_rows(app, scrollbar=False)]
        rows.extend(page[y - top:])
    return rows


def squeezed(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_every_character_of_replies_summaries_and_help_is_visible(tmp_path, size):
    repo = make_repo(tmp_path, "offbyone")

    async def scenario() -> None:
        with ScriptedModelServer([patch_reply()], tokens_per_s=3000) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=size) as pilot:
                await run_turn(pilot, app)
                await pilot.press(*"/help", "enter")
                await until(pilot, lambda: "/undo" in app.query_one(Transcript).plain_text())
                await pilot.pause(0.1)
                rows = await everything_in_the_transcript(pilot, app)
                shown = squeezed("".join(rows))
                # paragraphs streamed in separate frames keep the gap between them
                for p in range(4):
                    end = next(i for i, row in enumerate(rows) if row.endswith(f"prose{p}w39+"))
                    assert rows[end + 1] == "" and rows[end + 2].startswith(f"prose{p + 1}w00+")
                items = app.query_one(Transcript).items
                sources = [item.summary.plain if item.summary is not None else item.text
                           for item in items]
                assert any("prose4w39+" in source for source in sources)
                assert any(source.startswith("turn 1:") for source in sources)
                for source in sources:
                    for line in source.splitlines():
                        assert squeezed(line) in shown, f"not all of {line!r} is on screen"

    asyncio.run(scenario())


# WCAG 2 relative luminance and contrast ratio
def luminance(rgb: tuple[int, int, int]) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: Color, bg: Color) -> float:
    high, low = sorted((luminance(fg.get_truecolor()), luminance(bg.get_truecolor())),
                       reverse=True)
    return (high + 0.05) / (low + 0.05)


def diff_kind(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith(("--- a/", "+++ b/", "diff --git", "index ")):
        return "file"
    if stripped.startswith("@@"):
        return "hunk"
    if stripped.startswith("-    return total"):
        return "removed"
    if stripped.startswith("+    return (total"):
        return "added"
    if stripped.startswith(("raise ValueError", "if total < 0")):
        return "context"
    return None


async def diff_rows(pilot, app: CodeloopApp) -> dict[str, list[list[Segment]]]:
    """The screen rows of the shown patch, by diff line kind, its title row at the top."""
    transcript = app.query_one(Transcript)
    transcript.follow = False
    start = next(i for i, item in enumerate(transcript.items) if "apply_patch" in item.text)
    # two rows above it: the reply's last line and the gap
    transcript.scroll_to(y=max(0, transcript._starts[start] - 2), animate=False, immediate=True)
    await pilot.pause(0.1)
    rows: dict[str, list[list[Segment]]] = {}
    for row in transcript_rows(app, scrollbar=False):
        if (kind := diff_kind(text_of(row))) is not None:
            rows.setdefault(kind, []).append(row)
    assert set(rows) == {"file", "hunk", "added", "removed", "context"}, list(rows)
    return rows


def test_every_kind_of_diff_line_reads_at_4_5_to_1_in_truecolor_and_256_colours(tmp_path):
    repo = make_repo(tmp_path, "offbyone")

    async def scenario() -> None:
        with ScriptedModelServer([patch_reply("Here is the fix.")]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(120, 40)) as pilot:
                await run_turn(pilot, app)
                for kind, rows in (await diff_rows(pilot, app)).items():
                    for row in rows:
                        for cell in row:
                            if not cell.text.strip():
                                continue
                            fg, bg = cell.style.color, cell.style.bgcolor
                            assert fg is not None and bg is not None
                            assert contrast(fg, bg) >= 4.5, (kind, cell)
                            fg8 = fg.downgrade(ColorSystem.EIGHT_BIT)
                            bg8 = bg.downgrade(ColorSystem.EIGHT_BIT)
                            assert contrast(fg8, bg8) >= 4.5, (kind, cell, fg8, bg8)

    asyncio.run(scenario())


def test_under_no_color_diff_lines_differ_by_attributes_not_colours(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    repo = make_repo(tmp_path, "offbyone")

    async def scenario() -> None:
        with ScriptedModelServer([patch_reply("Here is the fix.")]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(120, 40)) as pilot:
                await run_turn(pilot, app)
                rows = await diff_rows(pilot, app)
                prose = next(row for row in transcript_rows(app) if "Here is" in text_of(row))
                plain = next(cell.style for cell in prose if cell.text == "H")
                attributes = {}
                for kind, kind_rows in rows.items():
                    for row in kind_rows:
                        for cell in row:
                            if not cell.text.strip():
                                continue
                            style = cell.style
                            # no colours of its own: those of plain text on the transcript
                            assert (style.color, style.bgcolor) == (plain.color, plain.bgcolor), (
                                kind, cell)
                            attributes.setdefault(kind, set()).add(
                                (style.bold, style.dim, style.reverse, style.underline,
                                 style.strike, style.italic))
                assert all(len(found) == 1 for found in attributes.values()), attributes
                assert len({found.pop() for found in attributes.values()}) == len(attributes)

    asyncio.run(scenario())


def thumbs(rows: list[list[Segment]]) -> int:
    """How many scrollbar thumbs the screen shows: groups of cells a mouse can grab."""
    def grabbable(cell: Segment) -> bool:
        return cell.style is not None and cell.style.meta.get("@mouse.down") == "grab"
    cells = {(x, y) for y, row in enumerate(rows) for x, cell in enumerate(row) if grabbable(cell)}
    groups, seen = 0, set()
    for cell in cells:
        if cell in seen:
            continue
        groups += 1
        todo = [cell]
        while todo:
            x, y = todo.pop()
            if (x, y) in seen or (x, y) not in cells:
                continue
            seen.add((x, y))
            todo += [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)]
    return groups


def test_a_fast_stream_leaves_no_stale_prose_and_one_scrollbar_after_mouse_scrolling(tmp_path):
    repo = make_repo(tmp_path, "offbyone")

    async def scenario() -> None:
        with ScriptedModelServer([patch_reply()], tokens_per_s=20000) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=(80, 24)) as pilot:
                await until(pilot, lambda: app.opened)
                await pilot.press(*"fix it", "enter")
                frames = []
                while not (app.busy is None and app.latency.turns and app.latency.turns[-1].done):
                    frames.append([text_of(row) for row in transcript_rows(app)])
                    await pilot.pause(0.005)
                await pilot.pause(0.1)
                frames.append([text_of(row) for row in transcript_rows(app)])
                # each frame while it streamed: nothing of the reply below the patch shown after it
                for frame in frames:
                    title = next((i for i, row in enumerate(frame) if "apply_patch" in row), None)
                    if title is not None:
                        assert not any("prose" in row for row in frame[title:]), frame
                transcript = app.query_one(Transcript)
                # the wheel, as Pilot's own click and hover send mouse events
                for scroll in [events.MouseScrollUp] * 6 + [events.MouseScrollDown] * 2:
                    await pilot._post_mouse_events([scroll], transcript, (5, 5))
                await pilot.pause(0.1)
                assert transcript.scroll_y < transcript.max_scroll_y  # it did scroll
                assert thumbs(screen(app)) == 1

    asyncio.run(scenario())
