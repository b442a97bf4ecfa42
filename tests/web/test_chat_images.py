"""The chat card of a vision agent's call shows the chart images it sent, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.charts.png import expand_png, read_png_info
from app.cli.reports import write_call_images
from app.cli.views import chat_json
from app.db import models, queries
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


def test_chat_json_names_each_image_a_call_sent_and_the_dashboard_serves_its_path(
    arena: Arena, client: TestClient, tmp_path: Path
) -> None:
    """`arena chat --json`: sha256, caption, size and the path the dashboard serves the PNG at;
    with `--images DIR`, the file it was written to."""
    run = arena.result.run_id
    engine = make_engine(arena.url)
    entries = queries.recent_chat(engine, run, agent="trend", limit=2)
    sent = queries.call_images(engine, [e.call_id for e in entries if e.call_id is not None])
    files = write_call_images(sent, entries, tmp_path / "seen")
    documents = chat_json(entries, images=sent, files=files, run_id=run)

    images = [image for document in documents for image in document["images"]]
    assert len(images) == 4 and [image["position"] for image in images] == [1, 2, 1, 2]
    for document in documents:
        for image in document["images"]:
            served = client.get(image["url_path"])
            assert served.status_code == 200
            assert hashlib.sha256(served.content).hexdigest() == image["sha256"]
            assert len(served.content) == image["size_bytes"]
            assert Path(image["file"]).read_bytes() == served.content
            assert "BTC" in image["caption"] and image["kind"] in ("intraday", "context")
            assert f"/calls/{document['call_id']}/images/" in image["url_path"]
    # Without `--images DIR` the bytes are at the path; a text agent's calls list none.
    assert chat_json(entries, images=sent, run_id=run)[0]["images"][0]["file"] is None
    text_entries = queries.recent_chat(engine, run, agent="contra", limit=1)
    text_sent = queries.call_images(engine, [e.call_id for e in text_entries if e.call_id])
    assert chat_json(text_entries, images=text_sent, run_id=run)[0]["images"] == []
