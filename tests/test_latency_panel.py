"""The latency panel as it is drawn on screen: its lines never wrap or run together, whatever
the terminal's width and however fast the model streams, and it shows no figure before there
is one to show.

A real session behind the real app (real sandbox, real pytest), the scripted model server at
unlimited speed (its decode rate runs to tens of thousands of tokens/s); the panel's lines are
read as Textual renders them (`render_line`), at the sizes people use.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from codeloop.frontends.tui.panel import LatencyPanel, figure
from tests.conftest import fix_diff, make_repo
from tests.scripted_server import Reply, ScriptedModelServer, ToolCall
from tests.test_tui import make_app, type_and_send, until

# a session row: its label, then the median and the p95, each a figure or a dash
ROW = re.compile(r"^(?P<label>\S.*?)\s+(?P<median>–|\d+(\.\d)?k?)\s+(?P<p95>–|\d+(\.\d)?k?)$")
ROWS = ("TTFT", "decode t/s|tok/s", "tests", "overhead|ovhd", "display lag|lag")


def screen_lines(panel: LatencyPanel) -> list[str]:
    """The panel's lines as Textual drew them (wrapped, cropped), trailing blanks removed."""
    return [panel.render_line(y).text.rstrip() for y in range(panel.size.height)]


def session_rows(lines: list[str]) -> list[re.Match]:
    start = next(n for n, line in enumerate(lines) if line.startswith("session"))
    rows = [ROW.match(line) for line in lines[start + 1:start + 1 + len(ROWS)]]
    assert all(rows), lines[start:start + 1 + len(ROWS)]
    for row, label in zip(rows, ROWS, strict=True):
        assert re.fullmatch(f"({label})( ms)?", row["label"]), row["label"]
    return rows


@pytest.mark.parametrize("size", [(120, 40), (80, 24), (64, 24)])
def test_the_panel_fits_its_width_before_and_after_a_fast_turn(tmp_path, size):
    repo = make_repo(tmp_path, "offbyone")
    reply = Reply(text="The count is off by one. " * 40, chunk_chars=2,
                  tool_calls=[ToolCall("apply_patch", json.dumps({"patch": fix_diff("offbyone")}))])

    async def scenario() -> None:
        with ScriptedModelServer([reply]) as server:
            app = make_app(repo, server, tmp_path)
            async with app.run_test(size=size) as pilot:
                await until(pilot, lambda: app.opened)
                panel = app.query_one(LatencyPanel)
                await pilot.pause(0.2)
                before = screen_lines(panel)
                # before any turn: no invented zeros
                assert all(r["median"] == "–" and r["p95"] == "–" for r in session_rows(before))
                await type_and_send(pilot, "fix the pager")
                await until(pilot, lambda: app.latency.turns and app.latency.turns[-1].done
                            and app.busy is None)
                await pilot.pause(0.3)
                after = screen_lines(panel)
                width = panel.scrollable_content_region.width
                assert all(len(line) <= width for line in after), after
                # no value's unit wrapped onto a line of its own
                assert not [line for line in after if line.strip() in ("ms", "s")], after
                rows = session_rows(after)
                decode = app.latency.stats()["tokens_per_s"][0]
                assert decode and decode > 1000  # a rate that used to run into its neighbour
                assert rows[1]["median"] == figure(decode), (rows[1].group(0), decode)
                assert rows[0]["median"] != "–" and rows[2]["median"] != "–"
                await pilot.press("ctrl+c")

    asyncio.run(scenario())


@pytest.mark.parametrize(("value", "shown"), [
    (None, "–"), (0.0, "0.0"), (3.25, "3.2"), (999.94, "999.9"), (13896.4, "13.9k"),
    (99_949.0, "99.9k"), (240_000.0, "240k")])
def test_a_figure_takes_at_most_six_characters(value, shown):
    assert figure(value) == shown and len(shown) <= 6
