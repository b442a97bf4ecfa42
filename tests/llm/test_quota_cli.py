"""`arena quota`: today's calls, last-seen limits and runway per configured model; `--probe`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from app import cli
from app.db.llm_store import add_quota_usage
from app.db.migrate import upgrade
from app.db.session import make_engine, make_session_factory
from app.domain import QuotaDelta
from tests.arena_cli import arena
from tests.fakes.openai_server import FakeOpenAIServer, rate_limited

Server = Callable[..., FakeOpenAIServer]
AGENTS = "qwen=modelscope:Qwen/A|Qwen/B,hodl=baseline:buy_and_hold"


def headers(model_left: int, account_left: int) -> dict[str, str]:
    return {
        "modelscope-ratelimit-requests-limit": "2000",
        "modelscope-ratelimit-requests-remaining": str(account_left),
        "modelscope-ratelimit-model-requests-limit": "500",
        "modelscope-ratelimit-model-requests-remaining": str(model_left),
    }


def record(db_url: str, at: datetime, *, calls: int, model_left: int) -> None:
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)
    with make_session_factory(engine).begin() as session:
        add_quota_usage(
            session,
            QuotaDelta(
                "modelscope",
                "Qwen/A",
                at.date(),
                at,
                calls=calls,
                successes=calls,
                headers=headers(model_left, 1895),
                last_status="200 ok",
            ),
        )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[None]:
    monkeypatch.setenv("AGENTS", AGENTS)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SCHEDULE_INTERVAL", "3m")
    # Wide enough that the table's cells are not folded.
    monkeypatch.setattr(cli.stdout, "width", 200)
    yield


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("model_left", "enough", "runs_out_at"), [(477, True, None), (40, False, "23:00 UTC")]
)
def test_quota_json_shows_calls_limits_and_calls_left_at_the_cadence(
    db_url: str, model_left: int, enough: bool, runs_out_at: str | None
) -> None:
    """At 21:00 UTC, 3 hours remain in the quota day: 10,800 s / 180 s = 60 cycles.

    One agent asks Qwen/A first, so it needs 60 calls. With 477 left that is enough; with 40
    left it lasts 40 cycles x 3 min = 2 h, until 23:00 UTC.
    """
    at = datetime(2026, 3, 14, 21, 0, tzinfo=UTC)
    record(db_url, at, calls=23, model_left=model_left)

    with freeze_time(at):
        result = arena("quota", "--json")

    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    first, fallback = payload["models"]
    assert (first["model"], first["agents"], first["primary_for"]) == ("Qwen/A", ["qwen"], 1)
    assert (first["calls_today"], first["model_requests_remaining"]) == (23, model_left)
    assert (first["requests_remaining"], first["requests_limit"]) == (1895, 2000)
    assert (first["cycles_left_today"], first["calls_needed_today"]) == (60, 60)
    assert (first["calls_left"], first["enough_for_today"]) == (model_left, enough)
    assert first["runs_out_at"] == runs_out_at
    assert (fallback["model"], fallback["calls_left"], fallback["calls_needed_today"]) == (
        "Qwen/B",
        None,
        0,
    )


@pytest.mark.usefixtures("env")
def test_limits_seen_on_an_earlier_day_give_an_estimate_from_the_limit(db_url: str) -> None:
    """Yesterday's headers said the model's limit is 500; 0 calls today: about 500 left."""
    record(db_url, datetime(2026, 3, 13, 12, 0, tzinfo=UTC), calls=5, model_left=3)

    with freeze_time(datetime(2026, 3, 14, 12, 0, tzinfo=UTC)):
        result = arena("quota", "--json")

    first = json.loads(result.stdout)["models"][0]
    assert (first["calls_today"], first["limits_seen_on"]) == (0, "2026-03-13")
    assert (first["calls_left"], first["calls_left_estimated"]) == (500, True)


@pytest.mark.usefixtures("env")
def test_quota_table_names_each_model_and_its_verdict(db_url: str) -> None:
    # Frozen, so the quota day cannot turn between the record and the command.
    at = datetime.now(UTC)
    record(db_url, at, calls=3, model_left=0)

    with freeze_time(at):
        result = arena("quota")

    assert result.exit_code == 0, result.stderr
    assert "modelscope:Qwen/A" in result.stdout and "modelscope:Qwen/B" in result.stdout
    assert "runs out" in result.stdout and "0/500" in result.stdout


@pytest.mark.usefixtures("env")
def test_probe_says_it_spends_quota_and_records_fresh_headers(
    fake_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake_server("modelscope")
    server.script("Qwen/B", rate_limited())
    monkeypatch.setenv("MODELSCOPE_API_KEY", "key")
    monkeypatch.setenv("MODELSCOPE_BASE_URL", server.base_url)

    result = arena("quota", "--probe", "--json")

    assert result.exit_code == 0, result.stderr
    assert "spends quota" in result.stderr
    payload = json.loads(result.stdout)
    assert [(p["model"], p["outcome"]) for p in payload["probes"]] == [
        ("Qwen/A", "ok"),
        ("Qwen/B", "rate_limited"),
    ]
    first, fallback = payload["models"]
    assert (first["calls_today"], first["model_requests_remaining"]) == (1, 499)
    assert (fallback["calls_today"], fallback["model_requests_remaining"]) == (1, 0)
    assert [r.body["max_tokens"] for r in server.requests] == [16, 16]
