"""`arena run` serves the dashboard from its own process: a real daemon (fake exchange and fake
model on loopback, a 1-minute cadence) and a browser watching its live page."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import models
from app.db.session import make_engine
from tests.fakes.exchange import FakeExchange
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.traders import by_model, trend_trader
from tests.test_live import _Lines
from tests.web.browser import chromium, console_errors, require_chromium
from tests.web.test_browser import css, open_page, wait

REPO_ROOT = Path(__file__).resolve().parents[2]
TREND_MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"


def cycles_recorded(database: Path) -> int:
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count(func.distinct(models.Cycle.scheduled_at)))
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_arena_run_serves_its_live_page_and_a_new_cycle_shows_within_5_s(tmp_path: Path) -> None:
    require_chromium()
    database = tmp_path / "arena.db"
    with (
        FakeExchange() as exchange,
        FakeOpenAIServer("modelscope", responder=by_model({TREND_MODEL: trend_trader})) as llm,
    ):
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            EXCHANGE_ID="binanceusdm",
            EXCHANGE_API_URL=exchange.url,
            DATABASE_URL=f"sqlite:///{database}",
            MODELSCOPE_API_KEY="ms-test-not-a-real-key",
            MODELSCOPE_BASE_URL=llm.base_url,
            LLM_MAX_RETRIES="0",
            SCHEDULE_INTERVAL="1m",
            SCHEDULE_MONITOR_INTERVAL="1m",
            SERVE_PORT="0",
            LOG_LEVEL="INFO",
        )
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "run",
                "--agent",
                "hodl=baseline:buy_and_hold",
                "--agent",
                f"trend=modelscope:{TREND_MODEL}",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = _Lines(daemon.stderr)
        try:
            lines.wait_for("dashboard: http://127.0.0.1:", 90, daemon)
            found = next(
                re.search(r"(http://127\.0\.0\.1:\d+/)", line)
                for line in lines.lines
                if "dashboard:" in line
            )
            assert found is not None
            url = found.group(1)
            lines.wait_for("hodl ok", 90, daemon)
            with chromium(tmp_path / "profile") as browser:
                open_page(browser, url)
                wait(browser, lambda d: len(css(d, "#equity-chart polyline")) >= 2)
                label = css(browser, "#last-cycle")[0]
                shown = int(label.get_attribute("data-cycles"))
                assert shown >= 1
                # The next cycle lands at the next minute: note when it is committed ... (a
                # state to reach: the limit only keeps a broken run from hanging)
                deadline = time.monotonic() + 300
                while cycles_recorded(database) <= shown:
                    assert time.monotonic() < deadline, "no second cycle within 300 s"
                    assert daemon.poll() is None, "".join(lines.lines)
                    time.sleep(0.05)
                # ... and from then on the page shows it without a reload (the page polls every
                # 2 s; the seconds it takes are measured by benchmarks/bench_web.py, not here).
                wait(
                    browser, lambda d: int(label.get_attribute("data-cycles")) > shown, timeout_s=30
                )
                assert console_errors(browser) == []
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert not any("Traceback" in line for line in lines.lines), "".join(lines.lines)
