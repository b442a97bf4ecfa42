"""The gateway's overhead: per non-streamed call, to the first streamed chunk, under 50 clients.

    .venv/bin/python benchmarks/bench_gateway.py [--calls 150] [--streams 60] [--rounds 4]

The fake ModelScope and `arena gateway` each run in their own process, as in use; the client is
the real `openai` SDK. Every figure is measured twice, straight to the fake and through the
gateway (which routes over a pool, checks the quota skips and writes the `quota_usage` row of
every request to SQLite), and the overhead is the difference of the medians. Each model's quota
on the fake is 500 calls a day, so the calls are spread to stay under it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MESSAGES: list[Any] = [
    {"role": "system", "content": "You trade crypto perpetuals. Answer with one JSON object."},
    {"role": "user", "content": "BTC is at 100000. ETH is at 3400. Decide as json." * 20},
]
POOL_MODELS = ("Qwen/Gateway-A", "Qwen/Gateway-B")


@contextmanager
def fake_server() -> Iterator[str]:
    """Run the fake ModelScope in a subprocess; yield its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"the fake did not start: {line!r}")
        yield line.removeprefix("READY ")
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def cpu_s(pid: int) -> float:
    """Return the CPU seconds (user + system) process `pid` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def gateway(upstream: str, folder: Path) -> Iterator[tuple[str, int]]:
    """Run `arena gateway` on a free port in a subprocess; yield its /v1 URL and its pid."""
    pools = [{"name": "default", "models": [{"id": model, "tier": 1} for model in POOL_MODELS]}]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODELSCOPE_", "DATABASE_", "POOLS", "GATEWAY_", "AGENTS"))
    }
    env.update(
        MODELSCOPE_API_KEY="bench",
        MODELSCOPE_BASE_URL=upstream,
        DATABASE_URL=f"sqlite:///{folder / 'gateway.db'}",
        POOLS=json.dumps(pools),
        AGENTS="qwen=pool:default",
        LLM_MAX_RETRIES="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "--env-file",
            str(folder / "none.env"),
            "gateway",
            "--port",
            "0",
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("gateway: "):
            raise RuntimeError(f"the gateway did not start: {line!r}")
        yield line.removeprefix("gateway: ").split(" ")[0], process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def plain_calls(client: openai.OpenAI, model: str, calls: int) -> list[float]:
    """Return the seconds of each of `calls` non-streamed calls, one after another."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        client.chat.completions.create(model=model, messages=MESSAGES)
        times.append(time.perf_counter() - started)
    return times


def first_chunks(client: openai.OpenAI, model: str, calls: int) -> list[float]:
    """Return the seconds to the first content chunk of `calls` streamed calls."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        first = None
        for chunk in stream:
            if first is None and chunk.choices:
                first = time.perf_counter() - started
        assert first is not None
        times.append(first)
    return times


async def concurrent_round(base_url: str, model: str, clients: int) -> tuple[float, int]:
    """Fire `clients` calls at once; return the wall time and how many failed."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                client.chat.completions.create(model=model, messages=MESSAGES)
                for _ in range(clients)
            ),
            return_exceptions=True,
        )
        return time.perf_counter() - started, sum(isinstance(r, BaseException) for r in results)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--streams", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, fake_server() as upstream:
        with gateway(upstream, Path(folder)) as (via, pid):
            direct = openai.OpenAI(base_url=upstream, api_key="bench", max_retries=0)
            through = openai.OpenAI(base_url=via, api_key="bench", max_retries=0)
            plain_calls(direct, "Qwen/Direct", 10)  # warm both paths up
            plain_calls(through, "pool", 10)
            # Interleaved, one direct call then one through the gateway, so both see the same
            # load on a shared machine; the overhead is taken pair by pair.
            direct_s: list[float] = []
            gateway_s: list[float] = []
            direct_first: list[float] = []
            gateway_first: list[float] = []
            busy_s = 0.0
            for _ in range(args.calls):
                direct_s += plain_calls(direct, "Qwen/Direct", 1)
                before_s = cpu_s(pid)
                gateway_s += plain_calls(through, "pool", 1)
                busy_s += cpu_s(pid) - before_s
            for _ in range(args.streams):
                direct_first += first_chunks(direct, "Qwen/Direct", 1)
                gateway_first += first_chunks(through, "pool", 1)
            rounds = [
                asyncio.run(concurrent_round(via, "pool", args.clients)) for _ in range(args.rounds)
            ]
    ms = 1000.0
    added = [g - d for g, d in zip(gateway_s, direct_s, strict=True)]
    added_first = [g - d for g, d in zip(gateway_first, direct_first, strict=True)]
    print(
        f"non-streamed call, direct:   p50 {statistics.median(direct_s) * ms:.2f} ms, "
        f"p95 {percentile(direct_s, 0.95) * ms:.2f} ms"
    )
    print(
        f"non-streamed call, gateway:  p50 {statistics.median(gateway_s) * ms:.2f} ms, "
        f"p95 {percentile(gateway_s, 0.95) * ms:.2f} ms"
    )
    print(
        f"gateway overhead per call (pairwise): p50 {statistics.median(added) * ms:.2f} ms, "
        f"p95 {percentile(added, 0.95) * ms:.2f} ms"
    )
    print(
        f"first streamed chunk: direct p50 {statistics.median(direct_first) * ms:.2f} ms, "
        f"gateway p50 {statistics.median(gateway_first) * ms:.2f} ms; added (pairwise) p50 "
        f"{statistics.median(added_first) * ms:.2f} ms, "
        f"p95 {percentile(added_first, 0.95) * ms:.2f} ms"
    )
    print(
        f"gateway CPU per non-streamed call: {busy_s / args.calls * ms:.2f} ms "
        "(less sensitive to a loaded machine than wall time)"
    )
    walls = [wall for wall, _ in rounds]
    errors = sum(failed for _, failed in rounds)
    print(
        f"{args.clients} concurrent clients x {args.rounds} rounds: median wall "
        f"{statistics.median(walls) * ms:.0f} ms (max {max(walls) * ms:.0f} ms), errors {errors}"
    )


if __name__ == "__main__":
    main()
