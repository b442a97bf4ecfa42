"""nof1's read API, reproduced: every endpoint answers with the keys, nesting and JSON types of
nof1's captured responses (`../shared/data/nof1-api/` and `../shared/data/alpha-arena-s1/`).

The comparison is recursive: an object must carry exactly the keys nof1's did (the union over all
its sample items), a value must have one of the JSON types nof1 used there (number for int and
float alike; `cot_trace` was a string or an object), a list's items are compared with the merged
shape of nof1's items, and the objects nof1 keyed by coin (prices, positions, `llm_response`) are
compared value by value. Every list we compare must be non-empty, so no check passes vacuously.
nof1's closed trades carried an exit plan that was always `{}`; ours carry the plan the position
had, checked against the exit plan of nof1's open positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import shared_data

# Objects whose keys are data (coins), not fields.
MAPS = {
    ("prices",),
    ("accountTotals", "[]", "positions"),
    ("conversations", "[]", "llm_response"),
}
# nof1's way of keeping an unreadable answer inside `llm_response`; ours is in /api/v1 calls.
IGNORED_SAMPLE_KEYS = {("conversations", "[]", "llm_response"): {"failed_json_response_raw_text"}}


@dataclass
class Shape:
    """The merged shape of every value nof1 had at one place."""

    types: set[str] = field(default_factory=set)
    keys: dict[str, Shape] = field(default_factory=dict)
    items: Shape | None = None
    values: Shape | None = None  # for coin-keyed objects


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    assert isinstance(value, dict), type(value)
    return "object"


def learn(shape: Shape, value: Any, path: tuple[str, ...]) -> None:
    shape.types.add(json_type(value))
    if isinstance(value, list):
        for item in value:
            shape.items = shape.items or Shape()
            learn(shape.items, item, (*path, "[]"))
    elif isinstance(value, dict):
        skipped = IGNORED_SAMPLE_KEYS.get(path, set())
        for key, item in value.items():
            if key in skipped:
                continue
            if path in MAPS:
                shape.values = shape.values or Shape()
                learn(shape.values, item, (*path, "{}"))
            else:
                learn(shape.keys.setdefault(key, Shape()), item, (*path, key))


def shape_of(document: Any) -> Shape:
    shape = Shape()
    learn(shape, document, ())
    return shape


def differences(ours: Any, sample: Shape, path: tuple[str, ...], found: list[str]) -> None:
    where = "/".join(path) or "(top)"
    kind = json_type(ours)
    if kind not in sample.types:
        found.append(f"{where}: ours is {kind}, nof1's is {sorted(sample.types)}")
        return
    if isinstance(ours, list):
        if sample.items is None:
            return
        if not ours:
            found.append(f"{where}: our list is empty, nothing compared")
        for item in ours:
            differences(item, sample.items, (*path, "[]"), found)
    elif isinstance(ours, dict):
        if path in MAPS:
            assert sample.values is not None
            if not ours and path != ("accountTotals", "[]", "positions"):
                found.append(f"{where}: our object is empty, nothing compared")
            for key, item in ours.items():
                differences(item, sample.values, (*path, key), found)
            return
        missing, extra = set(sample.keys) - set(ours), set(ours) - set(sample.keys)
        if missing or extra:
            found.append(f"{where}: missing {sorted(missing)}, extra {sorted(extra)}")
        for key in set(ours) & set(sample.keys):
            differences(ours[key], sample.keys[key], (*path, key), found)


def load(*parts: str) -> Any:
    return json.loads(Path(shared_data(*parts)).read_text(encoding="utf-8"))


def exit_plan_shape() -> Shape:
    plan = load("nof1-api", "positions.json")["accountTotals"][0]["positions"]["BTC"]["exit_plan"]
    return shape_of(plan)


def assert_same_shape(ours: Any, sample: Any) -> None:
    found: list[str] = []
    shape = shape_of(sample)
    trades = shape.keys.get("trades")
    if trades is not None and trades.items is not None:
        assert not trades.items.keys["exit_plan"].keys, "nof1's trades now show exit plans"
        trades.items.keys["exit_plan"] = exit_plan_shape()
    differences(ours, shape, (), found)
    assert not found, "\n".join(found)


def account_totals_sample() -> dict[str, Any]:
    """nof1's `/api/account-totals` (no capture of it survives in the samples: its fields as
    nof1 answered them, each position as in `positions.json`)."""
    position = load("nof1-api", "positions.json")["accountTotals"][0]["positions"]["BTC"]
    return {
        "accountTotals": [
            {
                "id": "gpt-5_0",
                "model_id": "gpt-5",
                "timestamp": 1760741958.847073,
                "realized_pnl": -32.909602,
                "total_unrealized_pnl": 337.88502,
                "dollar_equity": 10304.975418,
                "sharpe_ratio": 0.077,
                "cum_pnl_pct": 3.05,
                "since_inception_minute_marker": 59,
                "since_inception_hourly_marker": 0,
                "positions": {"BTC": position},
            }
        ],
        "lastHourlyMarkerRead": 0,
        "serverTime": 1761452352829,
    }


ENDPOINTS = {
    "/api/crypto-prices": ("alpha-arena-s1", "crypto-prices.json"),
    "/api/positions?limit=1000": ("nof1-api", "positions.json"),
    "/api/trades": ("alpha-arena-s1", "trades.json"),
    "/api/since-inception-values": ("nof1-api", "since-inception-values.json"),
    "/api/leaderboard": ("alpha-arena-s1", "leaderboard.json"),
    "/api/analytics": ("alpha-arena-s1", "analytics.json"),
    "/api/analytics/trend": ("nof1-api", "analytics-qwen3-max.json"),
    "/api/conversations": ("alpha-arena-s1", "conversations.json"),
}


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_endpoint_answers_in_nof1s_shape(client: TestClient, path: str) -> None:
    sample = load(*ENDPOINTS[path])
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert_same_shape(response.json(), sample)


@pytest.mark.parametrize("marker", [None, 3])
def test_account_totals_answer_in_nof1s_shape(client: TestClient, marker: int | None) -> None:
    path = "/api/account-totals" + ("" if marker is None else f"?lastHourlyMarker={marker}")
    response = client.get(path)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_same_shape(body, account_totals_sample())
    # The open positions ride on each model's newest entry, as nof1's did.
    assert any(entry["positions"] for entry in body["accountTotals"])
    if marker is not None:
        assert all(e["since_inception_hourly_marker"] > marker for e in body["accountTotals"])


def test_the_comparison_catches_a_missing_key_a_wrong_type_and_a_wrong_nesting() -> None:
    sample = load("alpha-arena-s1", "leaderboard.json")
    entry = dict(sample["leaderboard"][0])
    found: list[str] = []
    shape = shape_of(sample)
    differences(
        {"leaderboard": [{k: v for k, v in entry.items() if k != "sharpe"}]}, shape, (), found
    )
    differences({"leaderboard": [{**entry, "equity": "10000"}]}, shape, (), found)
    differences({"leaderboard": entry}, shape, (), found)
    differences({"leaderboard": []}, shape, (), found)
    assert len(found) == 4, found
    assert "missing ['sharpe']" in found[0]
    assert "equity: ours is string" in found[1]
    assert "ours is object" in found[2]
    assert "empty" in found[3]
