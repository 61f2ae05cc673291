"""What each wire costs per turn, against the scripted server over TLS with a 20 ms round trip.

A 20-turn conversation (the history grows by a reply and ~3 KB of test output per turn) is sent
over each transport: responses-ws, responses-http and chat (one pre-opened keep-alive
connection each), and the usual client that opens a new HTTPS connection per request. Per turn
it prints round-trip overhead (turn wall time - the server's generation time, which the server
measures itself: request read -> last byte written, without its emulated network delay), the
same as the client sees it (wall time - first-to-last token), TTFT, bytes uploaded and client
CPU per token; then CPU per event at 5,000 events/s and import times.

The round trip is a network namespace with netem delay when the kernel offers netem, else the
scripted server's own delay (one RTT before every response, plus the TCP, TLS and WebSocket
handshakes of a new connection); the output says which ran.

    python benchmarks/transport.py [--turns 20] [--rtt-ms 20] [--tokens-per-s 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codeloop.core.conversation import from_chat_messages  # noqa: E402
from codeloop.core.events import ModelDone, ModelFirstByte  # noqa: E402
from codeloop.transport import make_client  # noqa: E402
from tests.scripted_server import make_self_signed_cert  # noqa: E402

MODES = ("responses-ws", "responses-http", "responses-http, store", "chat",
         "chat, new connection per request")
TEST_OUTPUT = "tests/test_pager.py::test_case FAILED assert 3 == 2\n" * 60  # ~3 KB a turn
REPLY_TEXT = "The page count is off by one; here is the fix. " * 12  # ~150 tokens of 4 chars


def netem(rtt_ms: float) -> str:
    """Try a netns with netem on its loopback; return why not when it cannot be used."""
    name = "codeloop-bench"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"no network namespaces ({made.stderr.strip()})"
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
    delay = subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo",
                            "root", "netem", "delay", f"{rtt_ms / 2}ms"],
                           capture_output=True, text=True)
    if delay.returncode != 0:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        return f"netem unavailable ({delay.stderr.strip()})"
    return ""


@contextlib.contextmanager
def serve(replies: list[dict], tmp: Path, cert: Path, key: Path, *extra: str):
    """The scripted server in its own process (its CPU must not count as the client's).
    Yields (base URL, the file where it appends its time on each reply)."""
    script, timings = tmp / "script.json", tmp / "timings.jsonl"
    script.write_text(json.dumps(replies))
    timings.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.scripted_server", "--script", str(script), "--quiet",
         "--certfile", str(cert), "--keyfile", str(key), "--timings", str(timings), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip(), timings
    finally:
        process.terminate()
        process.wait(timeout=10)


def server_ms(timings: Path) -> list[float]:
    """The server's own milliseconds on each generated reply, in order."""
    lines = [json.loads(line) for line in timings.read_text().splitlines()]
    return [t["server_ms"] for t in lines if not t["warmup"]]


async def one_session(mode: str, base_url: str, turns: int) -> list[dict]:
    wire = mode.split(",")[0]
    per_request = mode.endswith("per request")
    store = mode.endswith("store")  # the server keeps responses: previous_response_id over HTTP
    messages = [{"role": "system", "content": "You are codeloop. " * 40},
                {"role": "user", "content": "Fix the pager. " + TEST_OUTPUT}]
    client = None if per_request else make_client(wire, base_url, "bench", "sk-bench", 1024,
                                                  30.0, responses_store=store)
    if client is not None:
        await client.connect()
    rows = []
    for turn in range(1, turns + 1):
        turn_client = client or make_client(wire, base_url, "bench", "sk-bench", 1024, 30.0)
        cpu0, started = time.process_time(), time.perf_counter()
        first: ModelFirstByte | None = None
        done: ModelDone | None = None
        async for event in turn_client.stream(turn, from_chat_messages(messages), []):
            if isinstance(event, ModelFirstByte):
                first = event
            elif isinstance(event, ModelDone):
                done = event
        wall_ms = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu0) * 1000
        if client is None:
            await turn_client.aclose()
        assert first is not None and done is not None
        tokens = max(done.usage.get("completion_tokens", 0), 1)
        rows.append({"turn": turn, "wall_ms": wall_ms, "seen_ms": wall_ms - done.decode_ms,
                     "ttft_ms": done.ttft_ms + first.connect_ms, "connect_ms": first.connect_ms,
                     "bytes": first.request_bytes, "cpu_us_per_token": cpu_ms * 1000 / tokens,
                     "client_us_per_token": done.client_us_per_token})
        messages += [{"role": "assistant", "content": done.text},
                     {"role": "user", "content": f"Turn {turn} tests:\n{TEST_OUTPUT}"}]
    if client is not None:
        await client.aclose()
    return rows


async def events_per_second(mode: str, base_url: str) -> tuple[float, float]:
    """CPU µs per streamed event at 5,000 events/s (10,000 events), and the rate reached."""
    client = make_client(mode, base_url, "bench", "sk-bench", 1024, 30.0)
    await client.connect()
    messages = [{"role": "user", "content": "stream"}]
    count, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    async for _ in client.stream(1, from_chat_messages(messages), []):
        count += 1
    cpu = time.process_time() - cpu0
    rate = count / (time.perf_counter() - wall0)
    await client.aclose()
    return cpu * 1e6 / count, rate


def import_ms(module: str) -> float:
    """Cumulative import time of `module` in a fresh interpreter, best of 5."""
    best = float("inf")
    for _ in range(5):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                             capture_output=True, text=True, cwd=ROOT).stderr
        line = next(x for x in out.splitlines() if x.rstrip().endswith(f"| {module}"))
        best = min(best, int(line.split("|")[1]) / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--tokens-per-s", type=float, default=1000,
                        help="the server's generation speed (0: unlimited, when the client's "
                             "own processing of the burst becomes the overhead)")
    parser.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside_netns:
        why = ""
        print(f"RTT: netem {args.rtt_ms / 2:g} ms each way on the loopback of a namespace")
    else:
        why = netem(args.rtt_ms)
        if not why:  # run again inside the namespace, where loopback carries the delay
            code = subprocess.run(["ip", "netns", "exec", "codeloop-bench", sys.executable,
                                   __file__, "--inside-netns", *sys.argv[1:]]).returncode
            subprocess.run(["ip", "netns", "del", "codeloop-bench"], capture_output=True)
            raise SystemExit(code)
        print(f"RTT: scripted server's own delay of {args.rtt_ms:g} ms per round trip — {why}")
    rtt_s = args.rtt_ms / 1000 if why else 0.0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cert, key = make_self_signed_cert(tmp)
        os.environ["SSL_CERT_FILE"] = str(cert)  # httpx and websockets trust our certificate
        summary = {}
        for mode in MODES:
            replies = [{"text": REPLY_TEXT}] * args.turns
            flags = ["--rtt-s", str(rtt_s), "--tokens-per-s", str(args.tokens_per_s)]
            if mode.endswith("store"):
                flags.append("--store")
            with serve(replies, tmp, cert, key, *flags) as (base_url, timings):
                rows = asyncio.run(one_session(mode, base_url, args.turns))
                for row, server in zip(rows, server_ms(timings), strict=True):
                    row["overhead_ms"] = row["wall_ms"] - server
            summary[mode] = rows
            print(f"\n{mode}")
            print("  turn  overhead ms  (as seen)   TTFT ms  connect ms  bytes up  CPU µs/token")
            for row in rows:
                print(f"  {row['turn']:>4} {row['overhead_ms']:>12.1f} {row['seen_ms']:>10.1f} "
                      f"{row['ttft_ms']:>9.1f} {row['connect_ms']:>11.1f} {row['bytes']:>9} "
                      f"{row['cpu_us_per_token']:>13.1f}")
        print(f"\nsummary over {args.turns} turns (RTT {args.rtt_ms:g} ms); overhead = turn wall "
              "time - server generation time; 'as seen' = wall time - first-to-last token")
        print("  transport                             overhead median   -RTT  p95  as seen-RTT"
              "   bytes turn 1 -> last   client µs/token")
        baseline = statistics.median(r["overhead_ms"] for r in summary[MODES[-1]])
        for mode, rows in summary.items():
            overheads = [r["overhead_ms"] for r in rows]
            median = statistics.median(overheads)
            p95 = sorted(overheads)[round(0.95 * (len(overheads) - 1))]
            saving = f"{100 * (1 - median / baseline):.0f}% less" if mode != MODES[-1] else ""
            seen = statistics.median(r["seen_ms"] for r in rows) - args.rtt_ms
            print(f"  {mode:<36} {median:>8.1f} ms {median - args.rtt_ms:>6.1f} {p95:>6.1f} "
                  f"{seen:>10.1f}   {rows[0]['bytes']:>7} -> {rows[-1]['bytes']:<8} "
                  f"{statistics.median(r['client_us_per_token'] for r in rows):>8.1f}  {saving}")
        print("\nclient CPU per event at 5,000 events/s (10,000 events, TLS on loopback, no delay;"
              " the server runs in its own process)")
        for mode in ("responses-ws", "responses-http", "chat"):
            with serve([{"text": "abcd" * 10_000, "chunk_chars": 4}], tmp, cert, key,
                       "--tokens-per-s", "5000") as (base_url, _):
                micros, rate = asyncio.run(events_per_second(mode, base_url))
            print(f"  {mode:<16} {micros:6.1f} µs CPU per event at {rate:,.0f} events/s")
    print("\nimport time (python -X importtime, best of 5)")
    for module in ("codeloop.transport.chat", "codeloop.transport.responses_http",
                   "codeloop.transport.responses_ws"):
        print(f"  {module:<36} {import_ms(module):6.1f} ms")


if __name__ == "__main__":
    main()
