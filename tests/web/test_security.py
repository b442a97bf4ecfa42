"""The dashboard is read-only, keeps keys to itself, asks for a token off loopback and answers
bad parameters with a 4xx JSON error."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.bind import is_loopback
from app.cli import main
from app.config import load_settings
from app.errors import ConfigError
from app.web.app import check_bind, create_app
from app.web.readmodel import ReadModel, open_read_engine
from app.wiring import build_dashboard
from tests.web.conftest import Arena

CANARY_KEY = "ms-canary-7f3a9c1e5b2d4f60a8e1"
CANARY_TOKEN = "serve-canary-0d9e8f7a6b5c4d3e"


def every_get_path(client: TestClient, read_model: ReadModel, run: str) -> list[str]:
    """Every GET route of the spec with real parameters, and every page."""
    # The vision agent's latest call, which sent chart images.
    call = read_model.calls(run, agent="trend", limit=1)[0].call_id
    values = {
        "run_id": run,
        "model_id": "trend",
        "coin": "BTC",
        "call_id": str(call),
        "number": "1",
    }
    paths = []
    for path, methods in client.get("/openapi.json").json()["paths"].items():
        if "get" in methods:
            for name, value in values.items():
                path = path.replace("{" + name + "}", value)
            paths.append(path)
            paths.append(f"{path}?run={run}")
    pages = ["/", "/leaderboard", "/chat", "/positions", "/trades", "/runs", f"/runs/{run}"]
    pages += ["/agents/trend", "/agents/hodl", "/docs", "/openapi.json", "/login"]
    return paths + [f"{page}?run={run}" for page in pages]


def test_no_response_ever_contains_an_api_key_or_the_token(
    arena: Arena, read_model: ReadModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELSCOPE_API_KEY", CANARY_KEY)
    monkeypatch.setenv("DEEPSEEK_API_KEY", CANARY_KEY)
    monkeypatch.setenv("SERVE_TOKEN", CANARY_TOKEN)
    monkeypatch.setenv("DATABASE_URL", arena.url)
    settings = load_settings(env_file=None)
    assert settings.modelscope.api_key is not None
    assert settings.modelscope.api_key.get_secret_value() == CANARY_KEY
    app = build_dashboard(settings, run=arena.result.run_id)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {CANARY_TOKEN}"
        paths = every_get_path(client, read_model, arena.result.run_id)
        assert len(paths) > 40
        for path in paths:
            response = client.get(path, headers={"accept": "text/html"})
            assert response.status_code == 200, (path, response.text[:300])
            assert CANARY_KEY not in response.text, path
            assert CANARY_TOKEN not in response.text, path
            assert CANARY_KEY not in str(response.headers), path


def test_a_token_guards_every_route_and_the_login_sets_a_cookie(
    arena: Arena, read_model: ReadModel
) -> None:
    app = create_app(read_model, default_run=arena.result.run_id, token=CANARY_TOKEN)
    with TestClient(app) as client:
        refused = client.get("/api/leaderboard")
        assert refused.status_code == 401
        assert "token" in refused.json()["error"]
        assert (
            client.get("/api/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        good = client.get("/api/leaderboard", headers={"Authorization": f"Bearer {CANARY_TOKEN}"})
        assert good.status_code == 200
        page = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"
        wrong = client.post("/login", data={"password": "nope"}, follow_redirects=False)
        assert wrong.status_code == 401
        assert "arena_token" not in wrong.headers.get("set-cookie", "")
        right = client.post("/login", data={"password": CANARY_TOKEN}, follow_redirects=False)
        assert right.status_code == 303
        assert "httponly" in right.headers["set-cookie"].lower()
        assert client.get("/", headers={"accept": "text/html"}).status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("::", False),
        ("example.org", False),
    ],
)
def test_only_loopback_addresses_may_be_served_without_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        check_bind(host, None)
    else:
        with pytest.raises(ConfigError, match="SERVE_TOKEN"):
            check_bind(host, None)
    check_bind(host, "a-token")


def test_arena_serve_on_a_public_address_without_a_token_exits_2_with_one_line(
    arena: Arena, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", arena.url)
    monkeypatch.setattr(sys, "argv", ["arena", "serve", "--host", "0.0.0.0"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "SERVE_TOKEN" in lines[0], lines


def test_the_read_model_cannot_write(arena: Arena) -> None:
    engine = open_read_engine(arena.url)
    with pytest.raises(OperationalError, match="readonly"), engine.begin() as connection:
        connection.execute(text("DELETE FROM agent"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM agent")).scalar_one() == 4


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/positions?limit=-1", 422),
        ("/api/positions?limit=abc", 422),
        ("/api/account-totals?lastHourlyMarker=yesterday", 422),
        ("/api/leaderboard?run=no-such-run", 404),
        ("/api/analytics/no-such-model", 404),
        ("/api/conversations?limit=0", 422),
        ("/api/v1/runs/no-such-run/chart", 404),
        ("/api/v1/runs/{run}/chart?range=7d", 422),
        ("/api/v1/runs/{run}/trades?agent=nobody", 404),
        ("/api/v1/runs/{run}/calls/0", 422),
        ("/api/v1/runs/{run}/calls/999999999", 404),
        ("/api/v1/runs/{run}/prices/NOPE", 404),
        ("/api/v1/runs/{run}/calls?before=-5", 422),
    ],
)
def test_bad_parameters_get_a_4xx_json_error(
    client: TestClient, arena: Arena, path: str, status: int
) -> None:
    response = client.get(path.replace("{run}", arena.result.run_id))
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]


def test_an_unknown_page_is_a_404_page_not_a_crash(client: TestClient) -> None:
    response = client.get("/chat?run=no-such-run", headers={"accept": "text/html"})
    assert response.status_code == 404
    assert "no run &#39;no-such-run&#39;" in response.text
