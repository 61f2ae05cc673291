"""How fast the TUI renders a streamed reply, and how responsive it stays meanwhile.

Drives the real app (headless `run_test`, which still lays out and composites every frame) with
a scripted token stream through the session's event stream at 1k, 5k and 20k tokens/s, with 0
and 50 finished messages already on screen. Prints tokens/s rendered, frames/s, arrival-to-screen
lag (p50/p95/max: from a token's arrival to the first frame composed with it), keystroke echo
latency (p50/p90) and CPU ms per 1,000 tokens.

    python benchmarks/render_throughput.py [--seconds 3] [--rates 1000,5000,20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402

from codeloop.core.events import ModelDone, ModelTextDelta, TurnStart  # noqa: E402
from codeloop.core.port import Status  # noqa: E402
from codeloop.core.stats import percentile  # noqa: E402
from codeloop.core.stream import EventStream  # noqa: E402
from codeloop.frontends.history import History  # noqa: E402
from codeloop.frontends.tui.prompt_input import PromptInput  # noqa: E402
from codeloop.frontends.tui.view import EventsApp  # noqa: E402

SECTION = """## Step {n}: what changes

The pager computes the number of pages with floor division and then adds one, which is one
too many whenever `total` is an exact multiple of `per_page`. Here is the *corrected* version:

```python
def page_count(total: int, per_page: int) -> int:
    if per_page <= 0:
        raise ValueError("per_page must be positive")
    return (total + per_page - 1) // per_page
```

- keeps the guard for bad input
- **no** special case for zero items
- matches `math.ceil(total / per_page)` without floats

"""


def tokens(count: int) -> list[str]:
    """An LLM-style Markdown answer cut into ~4-character tokens."""
    text, n = "", 0
    while len(text) < count * 4:
        n += 1
        text += SECTION.format(n=n)
    return [text[i:i + 4] for i in range(0, count * 4, 4)]


class BenchApp(EventsApp):
    """The app's screen (transcript, panel, status line, input) fed by a scripted stream."""

    def __init__(self, events: EventStream, history: History) -> None:
        super().__init__(events, history)
        self.events = events

    def begin(self) -> None:
        return None

    def figures(self) -> Status:
        return Status(model="bench", transport="scripted", prompt_tokens=0, cached_tokens=0,
                      completion_tokens=0)

    def state(self) -> str:
        return "working"


def make_app(workdir: Path) -> BenchApp:
    return BenchApp(EventStream(), History(workdir / "history"))


async def scenario(rate: int, history: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Path(tmp))
        frames: list[float] = []
        original = app._display

        def counting_display(*args, **kwargs):
            frames.append(time.perf_counter())
            return original(*args, **kwargs)

        app._display = counting_display  # type: ignore[method-assign]
        async with app.run_test(size=(120, 40)) as pilot:
            emit = app.events.emit
            for turn in range(1, history + 1):  # finished messages already on screen
                emit(TurnStart(turn=turn))
                for token in tokens(500):
                    emit(ModelTextDelta(turn=turn, text=token))
                emit(ModelDone(turn=turn, finish_reason="stop", text="", usage={},
                               ttft_ms=0, decode_ms=0, tokens_per_s=0))
            await pilot.pause(0.3)
            app.latency.display_lag_ms.clear()
            stream = tokens(int(rate * seconds))
            echo: list[float] = []
            field = app.query_one(PromptInput)

            async def typist() -> None:
                while True:
                    await asyncio.sleep(0.1)
                    before, pressed = len(field.text), time.perf_counter()
                    app.post_message(events.Key("x", "x"))
                    while len(field.text) == before:
                        await asyncio.sleep(0.0005)
                    seen = len(frames)
                    while len(frames) == seen:
                        await asyncio.sleep(0.0005)
                    echo.append((frames[-1] - pressed) * 1000)

            typing = asyncio.create_task(typist())
            emit(TurnStart(turn=history + 1))
            frames.clear()
            cpu0, start = time.process_time(), time.perf_counter()
            sent = 0
            while sent < len(stream):
                due = min(len(stream), int((time.perf_counter() - start) * rate) + 1)
                for token in stream[sent:due]:
                    emit(ModelTextDelta(turn=history + 1, text=token))
                sent = due
                await asyncio.sleep(0.001)
            emit(ModelDone(turn=history + 1, finish_reason="stop", text="", usage={},
                           ttft_ms=0, decode_ms=0, tokens_per_s=0))
            shown = len(frames)
            while len(frames) == shown:  # the last tokens on screen
                await asyncio.sleep(0.0005)
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            typing.cancel()
            lag = app.latency.display_lag_ms
            result = {
                "rendered_tps": len(stream) / elapsed,
                "fps": len(frames) / elapsed,
                "lag_max": max(lag, default=0.0),
                "lag_p50": statistics.median(lag) if lag else float("nan"),
                "lag_p95": percentile(lag, 0.95),
                "echo_p50": statistics.median(echo) if echo else float("nan"),
                "echo_p90": percentile(echo, 0.9) if echo else float("nan"),
                "cpu_per_1k": cpu * 1000 / (len(stream) / 1000),
            }
            await app.action_quit()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="1000,5000,20000")
    args = parser.parse_args()
    print(f"{'target tok/s':>12} {'history':>7} {'rendered tok/s':>14} {'fps':>5} "
          f"{'lag p50':>7} {'lag p95':>7} {'lag max':>7} {'echo p50':>8} {'echo p90':>8} "
          f"{'CPU ms/1k tok':>13}")
    for rate in (int(r) for r in args.rates.split(",")):
        for history in (0, 50):
            r = asyncio.run(scenario(rate, history, args.seconds))
            print(f"{rate:>12} {history:>7} {r['rendered_tps']:>14.0f} {r['fps']:>5.1f} "
                  f"{r['lag_p50']:>7.1f} {r['lag_p95']:>7.1f} {r['lag_max']:>7.1f} "
                  f"{r['echo_p50']:>8.1f} {r['echo_p90']:>8.1f} {r['cpu_per_1k']:>13.1f}")


if __name__ == "__main__":
    main()
