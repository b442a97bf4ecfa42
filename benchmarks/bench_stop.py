"""How long `arena run` takes to stop on SIGTERM while a model never answers (the worst case).

    .venv/bin/python benchmarks/bench_stop.py [--runs 3]

Each run starts the daemon (its own process, `python -m app run`) on a fresh database with the
fake exchange and the fake model server on loopback (`tests/fakes/`): one model agent whose
model never answers and one baseline. Once the model has been asked, SIGTERM; the time from the
signal to the process's end is printed, with the exit code. The promise is 30 s at most.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fakes.exchange import FakeExchange  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer, hang  # noqa: E402
from tests.test_live import TREND_MODEL, arena_env  # noqa: E402


def one_stop(folder: Path) -> tuple[int, float]:
    """Start the daemon, SIGTERM it while its model thinks; return (exit code, seconds)."""
    with FakeExchange() as exchange, FakeOpenAIServer("modelscope") as llm:
        llm.script(TREND_MODEL, hang())
        env = arena_env(exchange, llm, folder / "arena.db")
        env["LLM_TIMEOUT_S"] = "600"  # the model call outlives any stop
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "run",
                "--agent",
                f"trend=modelscope:{TREND_MODEL}",
                "--agent",
                "hodl=baseline:buy_and_hold",
            ],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not llm.requests_for(TREND_MODEL):
                if daemon.poll() is not None:
                    raise SystemExit(f"the daemon ended early (exit code {daemon.returncode})")
                time.sleep(0.05)
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=120)
            return code, time.monotonic() - started
        finally:
            if daemon.poll() is None:
                daemon.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    seconds = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            code, elapsed_s = one_stop(Path(folder))
        seconds.append(elapsed_s)
        print(f"run {run + 1}: exit code {code}, stopped {elapsed_s:.2f} s after SIGTERM")
    print(
        f"stop time over {len(seconds)} runs: median {statistics.median(seconds):.2f} s, "
        f"max {max(seconds):.2f} s (promise: 30 s)"
    )


if __name__ == "__main__":
    main()
