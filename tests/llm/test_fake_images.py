"""The fake OpenAI-compatible server reads image parts as a vision provider would.

Driven through the real `openai` SDK over loopback: it decodes `data:image/png;base64,...`
parts, checks the PNG signature, reads the size from IHDR, enforces the request size limit, and
answers a model scripted to take no images with a 400 in the flavor's envelope.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import openai
import pytest
from PIL import Image

from tests.fakes.openai_server import FakeOpenAIServer, answer, image_tokens, images_refused

Server = Callable[..., FakeOpenAIServer]
VL = "Qwen/Qwen3-VL-30B-A3B-Instruct"
TEXT_MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
HOLD = '{"BTC": {"coin": "BTC", "signal": "hold"}}'


def png(width: int, height: int, seed: int = 0) -> bytes:
    """Return a small RGB PNG (written by Pillow) with a seeded pattern."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def vision_messages(*urls: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": "Charts of the market. Decide as json."}
    ]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "system", "content": "You trade."}, {"role": "user", "content": parts}]


Client = Callable[[FakeOpenAIServer], openai.OpenAI]


@pytest.fixture
def client() -> Iterator[Client]:
    """Return a factory of SDK clients for a server, all closed after the test."""
    made: list[openai.OpenAI] = []

    def make(server: FakeOpenAIServer) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0))
        return made[-1]

    yield make
    for sdk in made:
        sdk.close()


def test_image_parts_are_decoded_and_recorded(fake_server: Server, client: Client) -> None:
    server = fake_server("modelscope")
    first, second = png(64, 32, seed=1), png(48, 96, seed=2)
    completion = client(server).chat.completions.create(
        model=VL,
        messages=vision_messages(data_url(first), data_url(second)),  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content
    (request,) = server.requests
    assert [(i.width_px, i.height_px) for i in request.images] == [(64, 32), (48, 96)]
    assert [i.size_bytes for i in request.images] == [len(first), len(second)]
    assert [i.sha256 for i in request.images] == [
        hashlib.sha256(first).hexdigest(),
        hashlib.sha256(second).hexdigest(),
    ]
    assert [(i.message_index, i.part_index) for i in request.images] == [(1, 1), (1, 2)]
    assert server.received_images(VL) == list(request.images)
    assert server.received_images(TEXT_MODEL) == []
    # Text at 4 characters a token plus 2 x 1 + 2 and 2 x 3 + 2 image tokens; not the base64.
    text_tokens = len("You trade.\nCharts of the market. Decide as json.") // 4
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == text_tokens + image_tokens(64, 32) + image_tokens(
        48, 96
    )
    assert (image_tokens(64, 32), image_tokens(48, 96)) == (4, 8)


def test_a_text_request_records_no_images(fake_server: Server, client: Client) -> None:
    server = fake_server("modelscope")
    client(server).chat.completions.create(
        model=TEXT_MODEL, messages=[{"role": "user", "content": "BTC at 100000. json?"}]
    )
    assert server.requests[0].images == ()
    assert server.received_images() == []


def test_images_in_a_streamed_request(fake_server: Server, client: Client) -> None:
    server = fake_server("dashscope")
    server.script(VL, answer(HOLD))
    stream = client(server).chat.completions.create(
        model=VL,
        messages=vision_messages(data_url(png(32, 32))),  # type: ignore[arg-type]
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == HOLD
    assert [(i.width_px, i.height_px) for i in server.received_images()] == [(32, 32)]


def test_an_http_image_url_is_recorded_and_not_fetched(fake_server: Server, client: Client) -> None:
    server = fake_server("modelscope")
    client(server).chat.completions.create(
        model=VL,
        messages=vision_messages("https://example.com/chart.png"),  # type: ignore[arg-type]
    )
    (image,) = server.received_images()
    assert (image.url_kind, image.size_bytes, image.width_px, image.sha256) == (
        "url",
        0,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (data_url(b"\xff\xd8\xff\xe0 not a png at all"), "no PNG signature"),
        ("data:image/png;base64,@@@not-base64@@@", "invalid base64"),
        ("data:image/png,rawbytes", "data:<type>;base64"),
    ],
    ids=["jpeg bytes labelled png", "bad base64", "not base64"],
)
def test_a_broken_image_is_a_400_naming_the_part(
    fake_server: Server, client: Client, url: str, reason: str
) -> None:
    server = fake_server("modelscope")
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(
            model=VL,
            messages=vision_messages(data_url(png(8, 8)), url),  # type: ignore[arg-type]
        )
    body = caught.value.body
    assert isinstance(body, dict)
    message = body["errors"]["message"]
    assert reason in message and "messages[1].content[2]" in message


def test_images_over_the_request_limit_are_a_400(fake_server: Server, client: Client) -> None:
    image = png(200, 200)
    server = fake_server("openai", max_request_image_bytes=len(image) * 2 - 1)
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(
            model=VL,
            messages=vision_messages(data_url(image), data_url(image)),  # type: ignore[arg-type]
        )
    assert "over the limit" in str(caught.value)
    client(server).chat.completions.create(
        model=VL,
        messages=vision_messages(data_url(image)),  # type: ignore[arg-type]
    )
    assert server.request_count == 2


def test_too_many_images_are_a_400(fake_server: Server, client: Client) -> None:
    server = fake_server("openai", max_images=1)
    with pytest.raises(openai.BadRequestError, match="at most 1 images"):
        client(server).chat.completions.create(
            model=VL,
            messages=vision_messages(data_url(png(8, 8)), data_url(png(8, 9))),  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("flavor", "where", "words"),
    [
        ("modelscope", "errors", "is not a multimodal model"),
        ("dashscope", "error", "does not support image input"),
        ("deepseek", "error", "do not support image input"),
        ("openai", "error", "image_url is only supported by certain models"),
    ],
)
def test_a_model_that_takes_no_images_answers_400_and_still_takes_text(
    fake_server: Server, client: Client, flavor: str, where: str, words: str
) -> None:
    server = fake_server(flavor, refuse_images={TEXT_MODEL})
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(
            model=TEXT_MODEL,
            messages=vision_messages(data_url(png(16, 16))),  # type: ignore[arg-type]
        )
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    # The SDK hands over `body["error"]` when it exists, else the whole body.
    message = body[where]["message"] if where in body else body["message"]
    assert words in message
    text = client(server).chat.completions.create(
        model=TEXT_MODEL, messages=[{"role": "user", "content": "BTC. json?"}]
    )
    assert text.choices[0].message.content


def test_refusal_carries_modelscope_quota_headers_and_a_script_can_refuse_once(
    fake_server: Server,
    client: Client,
) -> None:
    server = fake_server("modelscope")
    server.script(VL, images_refused())
    raw = client(server).chat.completions.with_raw_response
    with pytest.raises(openai.BadRequestError) as caught:
        raw.create(model=VL, messages=vision_messages(data_url(png(8, 8))))  # type: ignore[arg-type]
    assert caught.value.response.headers["modelscope-ratelimit-model-requests-remaining"] == "499"
    assert "is not a multimodal model" in caught.value.body["errors"]["message"]  # type: ignore[index]
    again = raw.create(model=VL, messages=vision_messages(data_url(png(8, 8))))  # type: ignore[arg-type]
    assert again.status_code == 200
    server.refuse_images_for(VL)
    with pytest.raises(openai.BadRequestError):
        raw.create(model=VL, messages=vision_messages(data_url(png(8, 8))))  # type: ignore[arg-type]
