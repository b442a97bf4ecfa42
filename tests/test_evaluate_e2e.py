"""`arena evaluate` end to end, in real processes: 12 windows of 7 days on the real data, the
baselines, five seeds of random and a model agent replayed from its cache; resuming; a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_data
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer
from tests.fakes.traders import by_model, trend_trader

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
WINDOWS = 12
CYCLES_PER_WINDOW = 7 * 24 + 1  # 7 days every hour, both ends


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(
        "modelscope",
        responder=by_model({MODEL: trend_trader}),
        requests_limit=UNLIMITED_QUOTA,
        model_requests_limit=UNLIMITED_QUOTA,
    ) as server:
        yield server


def start(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    # A session of its own: the kill below reaches the pool's workers too, as a Ctrl-C would.
    return subprocess.Popen(
        [sys.executable, "-m", "app", "evaluate", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def evaluate(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = start(*args, env=env, cwd=cwd)
    out, err = process.communicate(timeout=1200)
    return process.returncode, out, err


def finished_windows(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM evaluation_window").fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet
            return 0


def figures(report: dict[str, object]) -> dict[str, object]:
    """The report without the run ids of its windows (new for every run)."""
    windows = [{**w, "run_id": None} for w in report["windows"]]  # type: ignore[attr-defined]
    return {**report, "windows": windows}


@pytest.mark.slow
def test_evaluate_replays_resumes_and_finishes_the_rest_after_a_kill(
    llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    market = shared_data("market")
    database = tmp_path / "arena.db"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        DATABASE_URL=f"sqlite:///{database}",
        MODELSCOPE_API_KEY="ms-test-not-a-real-key",
        MODELSCOPE_BASE_URL=llm.base_url,
    )
    common = (
        "--data", str(market), "--windows", str(WINDOWS), "--window-days", "7",
        "--interval", "1h", "--random-seeds", "5", "--agent", f"qwen=modelscope:{MODEL}",
    )  # fmt: skip

    # Fill the cache: every prompt of the plan asked once.
    code, _, err = evaluate(
        *common, "--workers", "2", "--llm-mode", "cached", env=env, cwd=tmp_path
    )
    assert code == 0, err
    assert llm.request_count == WINDOWS * CYCLES_PER_WINDOW
    backup = tmp_path / "cached.db"
    shutil.copy(database, backup)

    # The evaluation itself: replayed from the cache, no model call.
    report_dir = tmp_path / "report"
    args = (*common, "--llm-mode", "replay", "--json")
    code, out, err = evaluate(
        *args, "--workers", "2", "--report", str(report_dir), env=env, cwd=tmp_path
    )
    assert code == 0, err
    assert llm.request_count == WINDOWS * CYCLES_PER_WINDOW, "a replay must not call the model"
    assert f"0 finished before, {WINDOWS} to run" in err
    report = json.loads(out)
    names = [line["name"] for line in report["agents"]]
    assert names == ["qwen", "ema_trend", "random", "buy_and_hold"]
    assert report["agents"][2]["members"] == [f"random-{seed}" for seed in range(1, 6)]
    assert report["agents"][0]["metrics"]["return_pct"]["n"] == WINDOWS
    assert report["agents"][0]["metrics"]["trades"]["mean"] > 0
    assert {p.name for p in report_dir.iterdir()} >= {"summary.md", "returns.png"}

    # The same command again: nothing to do, the same report.
    code, out_again, err_again = evaluate(*args, "--workers", "2", env=env, cwd=tmp_path)
    assert code == 0, err_again
    assert f"{WINDOWS} finished before, 0 to run" in err_again
    assert json.loads(out_again) == report

    # Killed halfway (one worker, SIGKILL once some windows are recorded), then run again: the
    # second run runs the rest only, and the figures are those of the uninterrupted run.
    shutil.copy(backup, database)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    one_worker = (*args, "--workers", "1")
    before = finished_windows(database)  # the cache-filling plan's windows
    killed = start(*one_worker, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 900
    # The count is read under the database's write lock, which is still held at the kill: no
    # window can be recorded between seeing half of them done and the kill, however fast the
    # machine (the limit only keeps a broken run from hanging).
    holder = sqlite3.connect(database, isolation_level=None, timeout=60)
    while True:
        holder.execute("BEGIN IMMEDIATE")
        if finished_windows(database) - before >= WINDOWS // 2 or killed.poll() is not None:
            break
        holder.execute("COMMIT")
        assert time.monotonic() < deadline, "the evaluation did not get halfway"
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    holder.execute("COMMIT")
    holder.close()
    done = finished_windows(database) - before
    assert WINDOWS // 2 <= done < WINDOWS
    code, out_rest, err_rest = evaluate(*one_worker, env=env, cwd=tmp_path)
    assert code == 0, err_rest
    assert f"{done} finished before, {WINDOWS - done} to run" in err_rest
    assert finished_windows(database) - before == WINDOWS
    assert figures(json.loads(out_rest)) == figures(report)
