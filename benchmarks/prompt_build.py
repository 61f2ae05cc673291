"""The path from a test result to the next request: encoding the prompt, cold and prepared.

Builds a conversation of turns like a long session's (a reply with a patch, its answer with test
failures) up to each size, then times what the next request costs between the test result and
the socket: the prefix-reuse probe, the compaction check and the chat body, once with every item
encoded anew and once prepared (`ModelLink.prepare`, which runs beside the verification), only
the test result's item being new. Median of --repeat, in ms.

    python benchmarks/prompt_build.py [--sizes 50,200,500] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeloop.agent.compactor import _tokens  # noqa: E402
from codeloop.context.layout import PrefixTracker  # noqa: E402
from codeloop.context.tools import tool_schemas  # noqa: E402
from codeloop.core import encoded  # noqa: E402
from codeloop.core.conversation import (  # noqa: E402
    Instructions,
    Item,
    Reply,
    ToolCall,
    ToolOutput,
    UserText,
)
from codeloop.transport.chat import ChatCompletionsClient  # noqa: E402


def conversation(kb: int, salt: str) -> list[Item]:
    """About `kb` KB of history: instructions, the task, then turns of ~8 KB."""
    items: list[Item] = [Instructions(f"{salt} you fix code. " * 100),
                         UserText(f"{salt} the task and the repo map. " * 200)]
    turn = 0
    while sum(len(encoded.chat_json(i)) for i in items) < kb * 1000:
        turn += 1
        patch = "".join(f"+    value_{turn}_{n} = compute({n})\n" for n in range(100))
        items.append(Reply(f"Turn {turn}: trying again.", (
            ToolCall(f"call_{turn}", "apply_patch", json.dumps({"patch": patch})),)))
        items.append(ToolOutput(f"call_{turn}", "".join(
            f"FAILED tests/test_x.py::test_{n} - assert {n} == {n + 1}\n" for n in range(60))))
    return items


def next_request(tracker: PrefixTracker, client: ChatCompletionsClient, items: list[Item],
                 tools: list[dict]) -> float:
    started = time.perf_counter()
    tracker.measure(items, tools)
    _tokens(items)
    client.request_body(items, tools)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,500", help="history sizes, KB")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    client = ChatCompletionsClient("http://127.0.0.1:9/v1", "m", None, 4096, 30.0)
    tools = tool_schemas()
    print(f"the next request's prompt, from the test result to the body (median of "
          f"{args.repeat}, ms)")
    for kb in (int(size) for size in args.sizes.split(",")):
        cold, prepared = [], []
        for n in range(args.repeat):
            for times, ahead in ((cold, False), (prepared, True)):
                items = conversation(kb, f"{kb}-{n}-{ahead}")  # nothing encoded before
                encoded.chat_json.cache_clear()
                encoded.canonical_json.cache_clear()
                tracker = PrefixTracker()
                next_request(tracker, client, items, tools)  # the last request
                items = [*items, UserText(f"tests: 3 failed ({n}, {ahead})")]
                if ahead:  # as while the verification runs: the items it repeats
                    encoded.prepare(items[:-1], encoded.chat_json)
                    client.prepare(items[:-1])
                else:
                    encoded.chat_json.cache_clear()
                    encoded.canonical_json.cache_clear()
                times.append(next_request(tracker, client, items, tools))
        print(f"  {kb:>4} KB of history: every item encoded {statistics.median(cold):6.2f}, "
              f"prepared {statistics.median(prepared):6.2f}")


if __name__ == "__main__":
    main()
