"""The chat card of a vision agent's call shows the chart images it sent, byte for byte."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.charts.png import expand_png, read_png_info
from app.db import models
from app.db.session import make_engine
from app.web.readmodel import ReadModel
from tests.web.conftest import Arena


def test_a_vision_call_lists_its_images_and_serves_each_as_sent(
    arena: Arena, read_model: ReadModel, client: TestClient
) -> None:
    run = arena.result.run_id
    call = read_model.calls(run, agent="trend", limit=1)[0].call_id
    detail = client.get(f"/api/v1/runs/{run}/calls/{call}").json()
    kinds = [image["kind"] for image in detail["images"]]
    assert kinds == ["intraday", "context"]
    assert detail["images"][0]["number"] == 1 and "BTC" in detail["images"][0]["caption"]

    engine = make_engine(arena.url)
    with engine.connect() as connection:
        stored = {
            sha: expand_png(data) if encoding == "compact" else data
            for sha, encoding, data in connection.execute(
                select(models.ChartImage.sha256, models.ChartImage.encoding, models.ChartImage.data)
            )
        }
    for image in detail["images"]:
        response = client.get(f"/api/v1/runs/{run}/calls/{call}/images/{image['number']}.png")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert hashlib.sha256(response.content).hexdigest() in stored
        info = read_png_info(response.content)
        assert (info.width_px, info.height_px) == (image["width_px"], image["height_px"])
    assert client.get(f"/api/v1/runs/{run}/calls/{call}/images/3.png").status_code == 404

    # A text agent's call has none.
    text_call = read_model.calls(run, agent="contra", limit=1)[0].call_id
    assert client.get(f"/api/v1/runs/{run}/calls/{text_call}").json()["images"] == []
    # The chat page's cards have a place for them, filled when a card opens.
    page = client.get(f"/chat?run={run}", headers={"accept": "text/html"})
    assert '<div class="charts"></div>' in page.text
