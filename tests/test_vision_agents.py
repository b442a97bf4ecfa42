"""Vision agents end to end: chart images in the prompt, in the records and on replay.

A backtest over the synthetic sample data runs in-process through the real CLI against the
fake OpenAI-compatible server (which decodes image parts, checks the PNG signature and reads
the size): a Qwen3-VL agent's requests carry the charts, a text agent's carry none and its
prompt is what it always was; the replay sends no request; each image is stored once and
linked to the calls that sent it; a model that refuses images costs one cycle and the agent
goes on text-only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from app.charts.png import expand_png
from app.db import models
from app.db.session import make_engine
from app.market.sample import SAMPLE_END, write_sample_data
from tests.arena_cli import arena
from tests.fakes.openai_server import FakeOpenAIServer, text_of
from tests.fakes.traders import by_model, trend_trader

VL_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct"
TEXT_MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Two hours of 5-minute cycles, both ends included.
START = SAMPLE_END - timedelta(hours=3)
END = START + timedelta(hours=2)
CYCLES = 25


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    responder = by_model({VL_MODEL: trend_trader, TEXT_MODEL: trend_trader})
    with FakeOpenAIServer("modelscope", responder=responder) as server:
        yield server


@pytest.fixture
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_data(tmp_path_factory.mktemp("data") / "sample", days=12)


def _env(llm: FakeOpenAIServer, folder: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{folder / 'arena.db'}",
        "MODELSCOPE_API_KEY": "ms-test-not-a-real-key",
        "MODELSCOPE_BASE_URL": llm.base_url,
    }


def _backtest(sample: Path, env: dict[str, str], folder: Path, *extra: str) -> dict[str, object]:
    result = arena(
        "backtest",
        "--data",
        str(sample),
        "--symbols",
        "BTC,ETH,SOL",
        "--start",
        START.strftime("%Y-%m-%dT%H:%M"),
        "--end",
        END.strftime("%Y-%m-%dT%H:%M"),
        "--interval",
        "5m",
        "--json",
        *extra,
        cwd=folder,
        env=env,
    )
    assert result.exit_code == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def test_a_vision_agent_sends_charts_a_text_agent_none_and_the_replay_sends_nothing(
    llm: FakeOpenAIServer, sample: Path, tmp_path: Path
) -> None:
    env = _env(llm, tmp_path)
    agents = ("--agent", f"vl=modelscope:{VL_MODEL}", "--agent", f"txt=modelscope:{TEXT_MODEL}")
    first = _backtest(sample, env, tmp_path, *agents, "--llm-mode", "cached")
    assert first["cycles"] == CYCLES

    vision = llm.requests_for(VL_MODEL)
    text = llm.requests_for(TEXT_MODEL)
    assert len(vision) == len(text) == CYCLES
    # The text agent's requests are plain strings, as before vision existed.
    for request in text:
        assert request.images == ()
        assert all(isinstance(m["content"], str) for m in request.body["messages"])
    # The vision agent's user message: the same text prompt, then the charts (intraday, 4h).
    for seen, plain in zip(vision, text, strict=True):
        assert seen.image_problem is None
        kinds = [image.media_type for image in seen.images]
        assert kinds == ["image/png", "image/png"]
        for image in seen.images:
            assert image.data.startswith(PNG_SIGNATURE)
            assert (image.width_px, image.height_px) == (896, 576)  # three coins: a 2 x 2 grid
            assert image.size_bytes < 1_000_000
        user = seen.body["messages"][-1]["content"]
        assert user[0]["type"] == "text"
        assert user[0]["text"] == plain.body["messages"][-1]["content"]
        assert text_of(plain.body["messages"]) in text_of(seen.body["messages"])

    # Stored once by content hash, linked to the calls that sent them.
    engine = make_engine(env["DATABASE_URL"])
    with engine.connect() as connection:
        stored = [
            (sha, expand_png(data) if encoding == "compact" else data)
            for sha, encoding, data in connection.execute(
                select(models.ChartImage.sha256, models.ChartImage.encoding, models.ChartImage.data)
            )
        ]
        links = connection.execute(select(func.count()).select_from(models.LlmCallImage)).scalar()
    sent = {image.sha256 for request in vision for image in request.images}
    assert {sha for sha, _ in stored} == sent
    assert all(hashlib.sha256(png).hexdigest() == sha for sha, png in stored)
    with engine.connect() as connection:
        encodings = set(connection.execute(select(models.ChartImage.encoding)).scalars())
    assert encodings == {"compact"}, "charts are kept a quarter smaller than the PNG sent"
    # 25 intraday charts (a new candle each cycle) and the 4h chart, which changed at most once.
    assert len(stored) <= CYCLES + 2
    assert links == 2 * CYCLES

    # The replay finds every answer by the charts' keys and sends nothing.
    asked = llm.request_count
    second = _backtest(sample, env, tmp_path, *agents, "--llm-mode", "replay")
    assert llm.request_count == asked, "a replay must not call the model"

    def results(summary: dict[str, object]) -> list[object]:
        return [
            {k: v for k, v in agent.items() if k not in ("llm_calls", "cache_hits")}
            for agent in summary["agents"]  # type: ignore[attr-defined]
        ]

    assert results(first) == results(second)
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(models.ChartImage)).scalar()
        links = connection.execute(select(func.count()).select_from(models.LlmCallImage)).scalar()
    assert count == len(stored), "the replay's images are the ones already stored"
    assert links == 4 * CYCLES

    # `arena chat --images DIR` writes what the model saw, byte for byte.
    folder = tmp_path / "seen"
    chat = arena(
        "chat",
        "--run",
        str(second["run_id"]),
        "--agent",
        "vl",
        "-n",
        "2",
        "--images",
        str(folder),
        cwd=tmp_path,
        env=env,
    )
    assert chat.exit_code == 0, chat.stderr
    assert "wrote 4 chart image(s)" in chat.stderr
    written = sorted(folder.iterdir())
    assert len(written) == 4
    assert {hashlib.sha256(path.read_bytes()).hexdigest() for path in written} <= sent
    assert any(path.name.endswith("-1-intraday.png") for path in written)

    # `arena chat --json` lists them too: hash, caption, size, and the file `--images` wrote.
    listed = arena(
        "chat",
        "--run",
        str(second["run_id"]),
        "--agent",
        "vl",
        "-n",
        "2",
        "--json",
        "--images",
        str(tmp_path / "listed"),
        cwd=tmp_path,
        env=env,
    )
    assert listed.exit_code == 0, listed.stderr
    shown = [image for call in json.loads(listed.stdout) for image in call["images"]]
    assert [image["kind"] for image in shown] == ["intraday", "context"] * 2
    for image in shown:
        png = Path(image["file"]).read_bytes()
        assert hashlib.sha256(png).hexdigest() == image["sha256"] in sent
        assert len(png) == image["size_bytes"] and image["caption"]


def test_a_model_refusing_images_costs_one_cycle_then_the_agent_goes_on_text_only(
    llm: FakeOpenAIServer, sample: Path, tmp_path: Path
) -> None:
    llm.refuse_images_for(TEXT_MODEL)
    (tmp_path / "arena.toml").write_text(
        f'[[agents]]\nname = "forced"\nprovider = "modelscope"\nmodel = "{TEXT_MODEL}"\n'
        "vision = true\n",
        encoding="utf-8",
    )
    env = _env(llm, tmp_path)
    summary = _backtest(sample, env, tmp_path, "--llm-mode", "cached")
    assert summary["cycles"] == CYCLES

    requests = llm.requests_for(TEXT_MODEL)
    # One refused request with images (not retried), then text only for every other cycle.
    assert len(requests) == CYCLES
    assert requests[0].images and all(r.images == () for r in requests[1:])

    engine = make_engine(env["DATABASE_URL"])
    with engine.connect() as connection:
        failed = connection.execute(
            select(models.LlmCall.outcome, models.LlmCall.error).where(
                models.LlmCall.outcome != "ok"
            )
        ).all()
        cycle_errors = connection.execute(
            select(models.Cycle.error).where(models.Cycle.status == "failed")
        ).all()
    assert [outcome for outcome, _ in failed] == ["images_refused"]
    assert "takes no images" in failed[0][1]
    assert len(cycle_errors) == 1
    assert "falls back to text-only prompts for the rest of the run" in cycle_errors[0][0]


def test_changing_every_candle_after_t_leaves_every_image_sent_by_t_byte_identical(
    llm: FakeOpenAIServer, sample: Path, tmp_path: Path
) -> None:
    """The images as sent (decoded by the server), not only as drawn: two backtests, the second
    over candles changed from T on (prices x 1.07, volume x 3)."""
    cut = START + timedelta(minutes=55)  # the 12th cycle
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in sample.iterdir():
        frame = pd.read_csv(path)
        if "volume" in frame.columns:
            after = frame["timestamp_ms"] >= int(cut.timestamp() * 1000)
            frame.loc[after, ["open", "high", "low", "close"]] *= 1.07
            frame.loc[after, "volume"] *= 3.0
        frame.to_csv(changed / path.name, index=False)

    def sent(data: Path, folder: Path) -> list[tuple[bytes, ...]]:
        folder.mkdir()
        llm.clear()
        _backtest(data, _env(llm, folder), folder, "--agent", f"vl=modelscope:{VL_MODEL}")
        return [tuple(image.data for image in r.images) for r in llm.requests_for(VL_MODEL)]

    original = sent(sample, tmp_path / "one")
    redrawn = sent(changed, tmp_path / "two")
    times = [START + i * timedelta(minutes=5) for i in range(CYCLES)]
    assert len(original) == len(redrawn) == CYCLES
    by_t = [i for i, moment in enumerate(times) if moment <= cut]
    assert len(by_t) == 12
    for i in by_t:
        assert redrawn[i] == original[i], f"an image sent at {times[i]} saw a candle after {cut}"
    assert redrawn[12][0] != original[12][0], "the change must show after T"


def test_a_chart_over_the_byte_limit_stops_the_run_with_the_setting_named(
    llm: FakeOpenAIServer, sample: Path, tmp_path: Path
) -> None:
    """A six-coin chart is about 16 kB; a 10,000-byte limit refuses it before any request,
    and the backtest stops with one line naming the setting (exit 2, nothing to retry)."""
    env = {**_env(llm, tmp_path), "VISION_MAX_IMAGE_BYTES": "10000"}
    result = arena(
        "backtest",
        "--data",
        str(sample),
        "--start",
        START.strftime("%Y-%m-%dT%H:%M"),
        "--end",
        END.strftime("%Y-%m-%dT%H:%M"),
        "--interval",
        "5m",
        "--agent",
        f"vl=modelscope:{VL_MODEL}",
        cwd=tmp_path,
        env=env,
    )
    assert result.exit_code == 2
    assert "the intraday chart of BTC, ETH, SOL, BNB, XRP, DOGE is" in result.stderr
    assert "over the limit of 10000 (VISION_MAX_IMAGE_BYTES)" in result.stderr
    assert "Traceback" not in result.stderr
    assert llm.requests_for(VL_MODEL) == []
    engine = make_engine(env["DATABASE_URL"])
    with engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(models.ChartImage)).scalar()
    assert stored == 0
