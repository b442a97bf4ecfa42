"""The quota query: five models asked at once with the caller's key; the key goes nowhere else."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from app.config import Settings
from app.db.session import Database
from app.llm.quota_query import query_quota
from app.wiring import build_gateway
from tests.fakes.openai_server import FakeOpenAIServer, not_served
from tests.gateway.conftest import FrozenClock, make_settings, served
from tests.llm.test_secrets import dump_rows

CANARY = "ms-canary-7f3d9a51-0b8e-4c1e-9d2f-5a6b7c8d9e0f"
ANSWERING = [f"Qwen/Probe-{n}" for n in range(4)]
MISSING = "Qwen/Qwen2.5-7B-Instruct-1M"


@pytest.fixture
def canary_upstream() -> Iterator[FakeOpenAIServer]:
    """A ModelScope taking only the canary key, whose answering models wait for each other."""
    # The four answering models only answer once all four requests have arrived: asked one
    # after another, the first would wait out the barrier and fail.
    barrier = threading.Barrier(len(ANSWERING), timeout=20)

    def responder(_body: dict[str, Any]) -> None:
        barrier.wait()

    server = FakeOpenAIServer("modelscope", api_key=CANARY, responder=responder).start()
    server.script(MISSING, not_served())
    try:
        yield server
    finally:
        server.stop()


def test_the_quota_query_asks_five_models_at_once_and_never_keeps_the_key(
    canary_upstream: FakeOpenAIServer,
    database: Database,
    clock: FrozenClock,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Four models give their four figures, the unserved one an error; the canary key reached
    the upstream and appears in no log line, response or table."""
    caplog.set_level(logging.DEBUG)
    settings: Settings = make_settings(canary_upstream, db_url)
    app = build_gateway(settings, reload_settings=lambda: settings, database=database, clock=clock)
    with served(app) as url:
        response = httpx2.post(
            f"{url}/api/quota/query",
            json={"models": [*ANSWERING, MISSING]},
            headers={"X-API-Key": CANARY},
            timeout=60,
        )
        page = httpx2.get(f"{url}/quota").text
        status = httpx2.get(f"{url}/status").text
    assert response.status_code == 200
    results = {r["model"]: r for r in response.json()["results"]}
    for model in ANSWERING:
        assert results[model]["error"] is None
        assert results[model]["request_limit"] == 2000
        assert results[model]["model_request_limit"] == 500
        assert results[model]["model_request_remaining"] == 499
    assert {results[m]["request_remaining"] for m in [*ANSWERING, MISSING]} == set(
        range(1995, 2000)
    )
    assert "has no provider supported" in results[MISSING]["error"]
    assert results[MISSING]["status_code"] == 400
    assert "spent one request" in response.json()["note"]
    assert "spends one request" in page

    sent = [r.headers.get("authorization") for r in canary_upstream.requests]
    assert sent == [f"Bearer {CANARY}"] * 5
    assert CANARY not in response.text + page + status
    assert CANARY not in caplog.text
    database.engine.dispose()
    dump = dump_rows(db_url)
    assert CANARY not in dump
    assert CANARY[-12:] not in dump


def test_the_quota_query_needs_a_key_and_a_model_list(
    canary_upstream: FakeOpenAIServer, database: Database, clock: FrozenClock, db_url: str
) -> None:
    settings = make_settings(canary_upstream, db_url)
    app = build_gateway(settings, reload_settings=lambda: settings, database=database, clock=clock)
    with served(app) as url:
        no_key = httpx2.post(f"{url}/api/quota/query", json=["Qwen/A"])
        no_list = httpx2.post(
            f"{url}/api/quota/query", json={"models": "Qwen/A"}, headers={"X-API-Key": CANARY}
        )
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "missing_api_key"
    assert no_list.status_code == 400 and no_list.json()["error"]["param"] == "models"
    assert CANARY not in no_list.text
    assert canary_upstream.requests == []


def test_an_unreachable_endpoint_is_a_network_error_per_model(refused_port: int) -> None:
    probes = asyncio.run(
        query_quota(
            base_url=f"http://127.0.0.1:{refused_port}/v1",
            api_key=CANARY,
            models=["Qwen/A", "Qwen/B"],
            timeout_s=10,
        )
    )
    assert [p.model for p in probes] == ["Qwen/A", "Qwen/B"]
    assert all(p.error is not None and p.error.startswith("network error") for p in probes)
    assert all(p.request_limit is None for p in probes)
    assert all(CANARY not in (p.error or "") for p in probes)
