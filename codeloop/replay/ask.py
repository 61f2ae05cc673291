"""Re-asking a recording (`replay --ask`): its requests sent again, figures compared, SLOs.

Owns rebuilding each recorded request's conversation, sending them once more on a client built
from the configuration as a live session's is (`max_output_tokens`, `request_timeout_s`,
`service_tier` from the file, the variables and the flags; the model and server the recorded ones
unless a flag names others), the figures per turn (TTFT, decode, round trip, and the server's
own prefill, queue and network where it reported them, and the tier that served) and their
table, and the SLO checks. Never retries: a failure is the measurement's end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeloop.config import BUILTIN_PATCH_MODELS, FLAG_KEYS, ConfigError, load_config
from codeloop.context.tools import offers_builtin_patch, tool_schemas
from codeloop.core.conversation import Instructions, Item, from_chat_messages
from codeloop.core.events import ModelDone, ModelRequest
from codeloop.core.kinds import EditTool, ExitCode
from codeloop.core.stats import percentile
from codeloop.replay.playback import Recording, RecordingError, reply_events
from codeloop.transport import ModelClient


@dataclass
class AskFigures:
    """One reply's figures; the server's parts None where it did not report them."""

    turn: int
    ttft_ms: float
    tokens_per_s: float
    round_trip_ms: float
    server_prefill_ms: float | None = None
    server_queue_ms: float | None = None
    network_ms: float | None = None
    service_tier: str = ""  # the tier that served ("" when the server did not say)

    @classmethod
    def of(cls, turn: int, done: ModelDone, round_trip_ms: float) -> AskFigures:
        server = done.server
        return cls(turn, done.ttft_ms, done.tokens_per_s, round_trip_ms,
                   server.get("prefill_ms"), server.get("queue_ms"), server.get("network_ms"),
                   done.service_tier)


def recorded_requests(recording: Recording) -> list[tuple[int, list[Item]]]:
    """Each request's whole conversation, rebuilt from the new messages each one recorded;
    raises RecordingError on a message that is no conversation's."""
    items: list[Item] = []
    requests = []
    for event in recording.events:
        if isinstance(event, ModelRequest):
            try:
                new = from_chat_messages(event.messages)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise RecordingError(f"turn {event.turn}'s request holds a message codeloop "
                                     f"cannot read: {exc!r}") from None
            # the whole conversation (the start, a compaction) begins with the instructions
            items = new if new and isinstance(new[0], Instructions) else [*items, *new]
            requests.append((event.turn, items))
    return requests


def recorded_figures(recording: Recording) -> list[AskFigures]:
    figures = []
    replies = reply_events(recording)
    for turn, events in sorted(replies.items()):
        first = events[0]
        done = next(e for e in events if isinstance(e, ModelDone))
        figures.append(AskFigures.of(turn, done, round((done.t - first.t) * 1000 + done.ttft_ms,
                                                       3)))
    return figures


async def ask_again(recording: Recording, client: ModelClient,
                    tools: list[dict[str, Any]]) -> list[AskFigures]:
    """Each recorded request sent once more (no retries: a failure is the measurement's end);
    raises TransportError as the client does."""
    await client.connect()
    figures = []
    try:
        for turn, items in recorded_requests(recording):
            started = time.perf_counter()
            done: ModelDone | None = None
            async for event in client.stream(turn, items, tools):
                if isinstance(event, ModelDone):
                    done = event
            assert done is not None
            figures.append(AskFigures.of(turn, done,
                                         round((time.perf_counter() - started) * 1000, 3)))
    finally:
        await client.aclose()
    return figures


def summary(figures: list[AskFigures]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("ttft_ms", "tokens_per_s", "round_trip_ms"):
        values = [getattr(f, name) for f in figures]
        out[f"{name}_median"] = round(statistics.median(values), 3) if values else 0.0
        out[f"{name}_p95"] = round(percentile(values, 0.95), 3)
    return out


_SLO = re.compile(r"^\s*(ttft|decode_tps|round_trip)_?(p95|median)?\s*([<>]=?)\s*([\d.]+)\s*"
                  r"(ms|s)?\s*$")


@dataclass
class Slo:
    figure: str
    stat: str
    op: str
    limit: float
    text: str = field(default="")

    def holds(self, stats: dict[str, float]) -> tuple[bool, float]:
        key = {"ttft": "ttft_ms", "decode_tps": "tokens_per_s",
               "round_trip": "round_trip_ms"}[self.figure] + f"_{self.stat}"
        value = stats[key]
        ok = {"<": value < self.limit, "<=": value <= self.limit, ">": value > self.limit,
              ">=": value >= self.limit}[self.op]
        return ok, value


def parse_slo(text: str) -> list[Slo]:
    """`ttft_p95<500ms,decode_tps>800` -> checks; raises ValueError naming a bad clause."""
    checks = []
    for clause in text.split(","):
        match = _SLO.match(clause)
        if not match:
            raise ValueError(f"cannot read SLO clause {clause!r} (e.g. ttft_p95<500ms, "
                             "decode_tps>800, round_trip_median<=2s)")
        figure, stat, op, number, unit = match.groups()
        limit = float(number) * (1000 if unit == "s" else 1)
        checks.append(Slo(figure, stat or "p95", op, limit, clause.strip()))
    return checks


def _error(message: str, exit_code: int = ExitCode.USAGE) -> int:
    print(f"codeloop: error: {message}", file=sys.stderr)
    return exit_code


def _client(recording: Recording, args: argparse.Namespace, repo_root: Path | None
            ) -> tuple[ModelClient, str | None]:
    """The client a live session here would build (raises ConfigError), on the recorded model
    and server unless a flag names others, and the API key it uses."""
    import os

    from codeloop.transport import make_client

    names = {key: flag for flag, key in FLAG_KEYS.items()}
    flags = {key: getattr(args, key, None) for key in names}
    config, origin = load_config(repo_root or Path.cwd(), flags, flag_names=names)
    start = recording.start
    by_flag = {key for key, where in origin.items() if where.startswith("--")}
    model = config.model if "model" in by_flag else start.model
    base_url = config.base_url if "base_url" in by_flag else start.base_url
    key = os.environ.get(config.api_key_env) or None
    client = make_client(config.transport if "transport" in origin else "chat", base_url, model,
                         key, config.max_output_tokens, config.request_timeout_s,
                         service_tier=config.service_tier)
    return client, key


def ask(recording: Recording, args: argparse.Namespace, repo_root: Path | None = None) -> int:
    """Send the recorded requests again to another model/transport; compare the latency."""
    from codeloop.core.redact import redact
    from codeloop.transport import TransportError

    start = recording.start
    try:
        checks = parse_slo(args.slo) if args.slo else []
        client, key = _client(recording, args, repo_root)
    except (ValueError, ConfigError) as exc:
        return _error(str(exc))
    tools = [] if start.edit_tool == EditTool.TEXT else tool_schemas(offers_builtin_patch(
        start.edit_tool, client.builtin_tools, client.model, BUILTIN_PATCH_MODELS))
    before = recorded_figures(recording)
    try:
        after = asyncio.run(ask_again(recording, client, tools))
    except TransportError as exc:  # a server may echo the key it refused: never shown
        return _error(f"--ask stopped: {redact(str(exc), (key,) if key else ())}", ExitCode.MODEL)
    stats = {"recorded": summary(before), "now": summary(after)}
    if args.json:
        print(json.dumps({"turns": [{"turn": a.turn, "recorded": vars(b), "now": vars(a)}
                                    for b, a in zip(before, after, strict=False)],
                          "summary": stats}))
    else:
        print_table(before, after, stats)
    failed = False
    for check in checks:
        ok, value = check.holds(stats["now"])
        failed |= not ok
        print(f"SLO {check.text}: {'ok' if ok else 'VIOLATED'} (measured {value:.1f})",
              file=sys.stderr)
    return 1 if failed else 0


def _server_ms(value: float | None, width: int) -> str:
    return f"{value:>{width}.1f}" if value is not None else f"{'–':>{width}}"


def print_table(before: list[AskFigures], after: list[AskFigures],
                stats: dict[str, dict[str, float]]) -> None:
    """Per turn, recorded and now side by side, then the server's account of the new reply
    (a dash where it gave none); then the medians and p95s."""
    print(f"{'turn':>4}  {'TTFT ms':>17}  {'decode tok/s':>19}  {'round trip ms':>19}  "
          f"{'server, now (ms)':>26}")
    print(f"{'':>4}  {'recorded':>8} {'now':>8}  {'recorded':>9} {'now':>9}  "
          f"{'recorded':>9} {'now':>9}  {'prefill':>8} {'queue':>8} {'network':>8}  tier")
    for old, new in zip(before, after, strict=False):
        print(f"{new.turn:>4}  {old.ttft_ms:>8.1f} {new.ttft_ms:>8.1f}  "
              f"{old.tokens_per_s:>9.1f} {new.tokens_per_s:>9.1f}  "
              f"{old.round_trip_ms:>9.1f} {new.round_trip_ms:>9.1f}  "
              f"{_server_ms(new.server_prefill_ms, 8)} {_server_ms(new.server_queue_ms, 8)} "
              f"{_server_ms(new.network_ms, 8)}  {new.service_tier or '–'}")
    for stat in ("median", "p95"):
        r, n = stats["recorded"], stats["now"]
        print(f"{stat:>6}{r[f'ttft_ms_{stat}']:>8.1f} {n[f'ttft_ms_{stat}']:>8.1f}  "
              f"{r[f'tokens_per_s_{stat}']:>9.1f} {n[f'tokens_per_s_{stat}']:>9.1f}  "
              f"{r[f'round_trip_ms_{stat}']:>9.1f} {n[f'round_trip_ms_{stat}']:>9.1f}")
