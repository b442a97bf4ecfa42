"""A fake OpenAI-compatible chat server on loopback, answering as ModelScope, DashScope or DeepSeek.

It serves `POST .../chat/completions` on any path prefix (`/v1`, `/compatible-mode/v1`, none),
plain or streamed (server-sent events), byte for byte in the shapes of
`../shared/reference/llm-wire-formats.md`. It runs in a background thread, so sync tests drive it
and the real `openai` SDK talks to it over a real socket.

Quick use::

    with FakeOpenAIServer("modelscope") as server:
        server.script("Qwen/A", rate_limited())             # first request for Qwen/A: a 429
        server.script("Qwen/B", answer('{"BTC": {...}}'))   # then Qwen/B answers
        ...  # point an adapter at server.base_url
        assert server.request_count == 2

API
- `FakeOpenAIServer(flavor="modelscope", *, api_key=None, responder=None, default=None,
  requests_limit=2000, model_requests_limit=500, clock=None)`: `flavor` is one of `modelscope`,
  `dashscope`, `deepseek`, `openai` and decides the provider habits below. With `api_key` set,
  any other bearer token gets the flavor's 401. With `clock` (a `tests.fakes.clock.FakeMonotonic`
  the adapter under test also reads), a reply's finite `delay_s`/`stall_s` moves that clock
  forward instead of waiting: "the model took 50 s" without a real second passing.
- `start()` / `stop()` or `with ...:`; `base_url` (e.g. `http://127.0.0.1:PORT/v1`), `port`.
- `script(model, *replies)`: queue replies for requests naming `model`, used in order, one per
  request. When a model's queue is empty the `responder` answers, else `default` (a valid hold).
- `responder`: `Callable[[dict], str | Reply | None]`, given the parsed request JSON (`model`,
  `messages`, `stream`...). A `str` is the answer's content; `None` falls back to `default`. This
  lets two fake "agents" answer with decisions computed from their prompt.
- `requests` (list of `RecordedRequest`: path, headers, body, model, stream), `request_count`,
  `requests_for(model)`, `clear()`: to prove what was sent, or that a replay sent nothing.
- Replies (build with the functions): `answer(content, reasoning=..., delay_s=..., ...)`,
  `whitespace()`, `choices_null()`, `rate_limited()` (daily quota used up: model remainder 0),
  `too_fast()` (ModelScope's per-minute 429: same body, quota left), `unauthorized()`,
  `not_served(model)`,
  `insufficient_balance()`, `server_error(status)`, `bad_gateway()`,
  `truncated(content, how="clean" | "cut" | "bad_json" | "error_event")`, `slow(delay_s)`,
  `hang()` (never answered: held until the server stops), `images_refused()`,
  `raw_body(data, content_type=..., status=200)` (bytes as is: an HTML page or invalid UTF-8
  with a 200), `cut_body()` (a plain answer cut short under a longer Content-Length),
  `error(status, body)` for anything else. A `delay_s` or `stall_s` of `math.inf` waits until
  the server stops.

Images (vision models)
- A message's `content` may be a list of parts: `{"type": "text", "text": ...}` and
  `{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}` (or an http URL,
  recorded and not fetched). Every data URL is decoded: a PNG must start with the PNG signature
  and its IHDR gives the size. `RecordedRequest.images` lists what arrived (`ReceivedImage`:
  media type, bytes, width, height, sha256), `received_images(model)` all of them.
- A bad data URL, a PNG without its signature, or more than `max_request_image_bytes`
  (default 10 MB, decoded) or `max_images` images in one request is a 400 in the flavor's shape.
- `refuse_images={model, ...}` (or `refuse_images_for(model)`) makes a model answer any request
  carrying an image with a 400 saying it takes no images, as a text-only model does;
  `images_refused()` scripts that answer once. The bodies are guesses in each provider's error
  envelope (nobody has published ModelScope's), with OpenAI's real message for `openai`.
- With images, `usage.prompt_tokens` counts the text at 4 characters a token and each image at
  one token per 32 x 32 pixels (Qwen3-VL's rule) plus two.

Provider habits by flavor
- modelscope: the four `modelscope-ratelimit-*` headers on 200, 400 and 429 (not 401), counting
  down per request; error bodies under `"errors"`; `*Thinking*`/QwQ models refuse `stream=false`.
- dashscope: `qwq*` models refuse `stream=false`; reasoning before content with the inactive
  field `null`; usage only in an extra last chunk with `choices: []` when
  `stream_options.include_usage` is set.
- deepseek: usage on the final content chunk; `: keep-alive` comments in streams; JSON mode
  without the word "json" in the prompt is a 400; thinking (on unless
  `extra_body.thinking.type == "disabled"`) adds `reasoning_content`.
- openai: plain OpenAI shapes.

Run it alone for benchmarks: `python -m tests.fakes.openai_server --delay-s 1` prints
`READY <base_url>` and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import itertools
import json
import math
import socket
import struct
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from tests.fakes.clock import FakeMonotonic

Flavor = Literal["modelscope", "dashscope", "deepseek", "openai"]
StreamEnd = Literal["done", "clean", "cut", "bad_json", "error_event"]
Inactive = Literal["null", "empty", "absent"]

DEFAULT_CONTENT = json.dumps(
    {"BTC": {"coin": "BTC", "signal": "hold", "justification": "no clear edge"}}
)
CREATED = 1767225600
RATE_LIMIT_PREFIX = "modelscope-ratelimit-"
# Limits for runs of thousands of calls (backtests, benchmarks): ModelScope's real 500 calls per
# model and day would bench the models, as a client must once the headers say 0 are left.
UNLIMITED_QUOTA = 10_000_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ModelScope's guide says images up to about 10 MB.
MAX_REQUEST_IMAGE_BYTES = 10_000_000


@dataclass(frozen=True)
class Reply:
    """One scripted answer; build it with `answer()`, `error()`, `rate_limited()`..."""

    status: int = 200
    content: str = DEFAULT_CONTENT
    reasoning: str | None = None
    body: Any = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    stall_s: float = 0.0
    stream_end: StreamEnd = "done"
    finish_reason: str = "stop"
    usage: Mapping[str, Any] | None = None
    model: str | None = None
    choices_null: bool = False
    inactive: Inactive | None = None
    rate_limit_headers: bool | None = None
    # Sent as the body as is (status and content type above); with `cut_at`, only the first
    # `cut_at` bytes are sent, under a Content-Length announcing them all, and the socket closed.
    raw: bytes | None = None
    cut_at: int | None = None


@dataclass(frozen=True)
class ReceivedImage:
    """One image part of a request, as the server decoded it."""

    message_index: int
    part_index: int
    url_kind: Literal["data", "url"]
    media_type: str
    size_bytes: int
    width_px: int | None
    height_px: int | None
    sha256: str | None
    data: bytes = field(default=b"", repr=False)


class ImageProblem(ValueError):
    """An image part the server refuses (bad data URL, not a PNG, too large)."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    at_s: float
    images: tuple[ReceivedImage, ...] = ()
    image_problem: str | None = None

    @property
    def model(self) -> str | None:
        """Return the `model` of the request body."""
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def stream(self) -> bool:
        """Return True when the request asked for a stream."""
        return bool(self.body.get("stream")) if isinstance(self.body, dict) else False


# -- reply builders ---------------------------------------------------------------------------


def answer(content: str = DEFAULT_CONTENT, **kwargs: Any) -> Reply:
    """Return a normal answer (streamed when the request streams)."""
    return Reply(content=content, **kwargs)


def whitespace() -> Reply:
    """Return DeepSeek's JSON-mode failure: content of spaces with `finish_reason: stop`."""
    return Reply(content="   \n  ")


def choices_null() -> Reply:
    """Return a 200 with `"choices": null` and zero usage (ModelScope with json_schema)."""
    return Reply(choices_null=True)


def slow(delay_s: float, content: str = DEFAULT_CONTENT) -> Reply:
    """Return an answer sent after `delay_s` seconds of silence."""
    return Reply(content=content, delay_s=delay_s)


def hang() -> Reply:
    """Return a reply that never comes: the request is held until the server stops.

    For tests where only the cut matters (a timeout, a cancellation): no real delay races it.
    """
    return Reply(delay_s=math.inf)


def truncated(content: str = '{"BTC": {"signal": "ho', how: StreamEnd = "clean") -> Reply:
    """Return a stream that stops early: `clean` end, `cut` socket, `bad_json`, `error_event`."""
    return Reply(content=content, stream_end=how)


def error(
    status: int,
    body: Any,
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Return an HTTP error with `body` (a dict is sent as JSON, a str as is)."""
    return Reply(status=status, body=body, content_type=content_type, headers=headers or {})


def images_refused() -> Reply:
    """Return the flavor's 400 for a model that takes no images (sent whatever the request)."""
    return Reply(status=400, body="images_refused")


def rate_limited() -> Reply:
    """Return the flavor's 429 (ModelScope: "Request limit exceeded.", model quota at 0)."""
    return Reply(status=429, body="rate_limited")


def too_fast() -> Reply:
    """Return ModelScope's per-minute 429: the same body as `rate_limited()`, quota left.

    The rate-limit headers still count down and show requests left for the day: only their
    remainders tell it from the daily quota being used up.
    """
    return error(
        429, {"errors": {"message": "Request limit exceeded.", "request_id": _request_id()}}
    )


def raw_body(data: bytes, *, content_type: str = "application/json", status: int = 200) -> Reply:
    """Return `data` as the body, byte for byte (an HTML page or invalid UTF-8 with a 200)."""
    return Reply(status=status, raw=data, content_type=content_type)


def cut_body(content: str = DEFAULT_CONTENT, *, keep_bytes: int = 60) -> Reply:
    """Return a plain answer whose body stops after `keep_bytes` (Content-Length says more)."""
    payload = {
        "id": "chatcmpl-cut",
        "object": "chat.completion",
        "created": CREATED,
        "model": "cut",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }
    return Reply(raw=json.dumps(payload).encode(), cut_at=keep_bytes)


def unauthorized() -> Reply:
    """Return the flavor's 401."""
    return Reply(status=401, body="unauthorized")


def not_served(model: str | None = None) -> Reply:
    """Return ModelScope's 400 "has no provider supported" (DeepSeek: "Model Not Exist")."""
    return Reply(status=400, body="not_served", model=model)


def insufficient_balance() -> Reply:
    """Return DeepSeek's 402 "Insufficient Balance"."""
    return Reply(status=402, body="insufficient_balance")


def server_error(status: int = 503) -> Reply:
    """Return a JSON 5xx ("Server Overloaded")."""
    return error(
        status,
        {"error": {"message": "Server Overloaded", "type": "server_error", "param": None}},
    )


def bad_gateway() -> Reply:
    """Return a non-JSON 502 page."""
    return error(502, "<html>Bad Gateway</html>", content_type="text/html")


# -- images -----------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(PNG_SIGNATURE):
        raise ImageProblem("the image is not a PNG (no PNG signature)")
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageProblem("the PNG has no IHDR chunk first")
    width, height = struct.unpack(">II", data[16:24])
    if not width or not height:
        raise ImageProblem("the PNG has no pixels")
    return int(width), int(height)


def _decode_image(url: str, message_index: int, part_index: int) -> ReceivedImage:
    if not url.startswith("data:"):
        return ReceivedImage(message_index, part_index, "url", "", 0, None, None, None)
    header, sep, payload = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64":
        raise ImageProblem("the image data URL is not data:<type>;base64,<data>")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageProblem("the image data URL holds invalid base64") from None
    width: int | None = None
    height: int | None = None
    if media_type == "image/png":
        width, height = _png_size(data)
    return ReceivedImage(
        message_index=message_index,
        part_index=part_index,
        url_kind="data",
        media_type=media_type,
        size_bytes=len(data),
        width_px=width,
        height_px=height,
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )


def _image_parts(body: Any) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    if not isinstance(body, dict):
        return found
    for message_index, message in enumerate(body.get("messages") or []):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part_index, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                found.append((message_index, part_index, str(url)))
    return found


def read_images(body: Any) -> tuple[tuple[ReceivedImage, ...], str | None]:
    """Decode every image part of a request body; return them and the first problem, if any."""
    images = []
    for message_index, part_index, url in _image_parts(body):
        try:
            images.append(_decode_image(url, message_index, part_index))
        except ImageProblem as problem:
            where = f"messages[{message_index}].content[{part_index}]"
            return tuple(images), f"{where}: {problem}"
    return tuple(images), None


def image_tokens(width_px: int | None, height_px: int | None) -> int:
    """Return an image's prompt tokens: one per 32 x 32 pixels, plus two (Qwen3-VL)."""
    if not width_px or not height_px:
        return 2
    return math.ceil(width_px / 32) * math.ceil(height_px / 32) + 2


def text_of(messages: Any) -> str:
    """Return the text of all messages (image parts left out)."""
    texts = []
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                str(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
    return "\n".join(texts)


# -- flavor bodies ----------------------------------------------------------------------------


def _request_id() -> str:
    return str(uuid.uuid4())


def _named_error(flavor: str, name: str, model: str) -> tuple[int, dict[str, Any]]:
    if name == "rate_limited":
        if flavor == "modelscope":
            return 429, {
                "errors": {"message": "Request limit exceeded.", "request_id": _request_id()}
            }
        if flavor == "dashscope":
            return 429, {
                "error": {
                    "message": "You have exceeded your current request limit.",
                    "type": "limit_requests",
                    "code": "limit_requests",
                }
            }
        return 429, {
            "error": {
                "message": "Rate Limit Reached",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
    if name == "unauthorized":
        if flavor == "modelscope":
            message = (
                "Authentication failed, please make sure that a valid ModelScope token is supplied."
            )
            return 401, {"errors": {"message": message, "request_id": _request_id()}}
        if flavor == "dashscope":
            return 401, {
                "error": {
                    "message": "Incorrect API key provided. ",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                },
                "request_id": _request_id(),
            }
        return 401, {
            "error": {
                "message": "Authentication Fails, Your api key: ****abcd is invalid",
                "type": "authentication_error",
                "param": None,
                "code": "invalid_request_error",
            }
        }
    if name == "not_served":
        if flavor == "modelscope":
            message = f"Model id : {model} , has no provider supported"
            return 400, {"errors": {"message": message, "request_id": _request_id()}}
        return 400, {
            "error": {
                "message": "Model Not Exist",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_request_error",
            }
        }
    if name == "images_refused":
        return 400, _images_refused_body(flavor, model)
    if name == "insufficient_balance":
        return 402, {
            "error": {
                "message": "Insufficient Balance",
                "type": "unknown_error",
                "param": None,
                "code": "invalid_request_error",
            }
        }
    raise ValueError(f"unknown named error {name!r}")


def _images_refused_body(flavor: str, model: str) -> dict[str, Any]:
    if flavor == "modelscope":
        message = f"Model id : {model} , is not a multimodal model and does not take image input"
        return {"errors": {"message": message, "request_id": _request_id()}}
    if flavor == "dashscope":
        return {
            "error": {
                "code": "invalid_parameter_error",
                "param": None,
                "message": f"The model {model} does not support image input.",
                "type": "invalid_request_error",
            },
            "request_id": _request_id(),
        }
    if flavor == "deepseek":
        return {
            "error": {
                "message": "Model do not support image input.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_request_error",
            }
        }
    return {
        "error": {
            "message": "Invalid content type. image_url is only supported by certain models.",
            "type": "invalid_request_error",
            "param": "messages.[0].content.[1].type",
            "code": None,
        }
    }


def _bad_image_body(flavor: str, message: str) -> dict[str, Any]:
    if flavor == "modelscope":
        return {"errors": {"message": message, "request_id": _request_id()}}
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_image",
        }
    }


def _stream_only_error(flavor: str) -> dict[str, Any]:
    if flavor == "dashscope":
        message = (
            "This model only support stream mode, please enable the stream parameter to access "
            "the model. "
        )
        return {
            "error": {
                "code": "invalid_parameter_error",
                "param": None,
                "message": message,
                "type": "invalid_request_error",
            },
            "id": f"chatcmpl-{_request_id()}",
            "request_id": _request_id(),
        }
    return {
        "error": {
            "code": "invalid_parameter_error",
            "message": "enable thinking can not be support when `stream=False`.",
            "type": "invalid_request_error",
        },
        "request_id": _request_id(),
    }


def _must_stream(flavor: str, model: str) -> bool:
    lowered = model.lower()
    if flavor == "dashscope":
        return lowered.startswith("qwq")
    if flavor == "modelscope":
        return "thinking" in lowered or "qwq" in lowered
    return False


def _split(text: str, parts: int = 3) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


# -- the server -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": []}, {})
        else:
            self._send_json(404, {"error": {"message": "not found"}}, {})

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        images, problem = read_images(body)
        recorded = RecordedRequest(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at_s=fake.clock() if fake.clock is not None else time.monotonic(),
            images=images,
            image_problem=problem,
        )
        fake._record(recorded)
        try:
            fake._serve(self, recorded)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- writing helpers used by FakeOpenAIServer._serve ---------------------------------------

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str]) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self._send_bytes(status, data, "application/json", headers)

    def _send_bytes(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_raw(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str],
        cut_at: int | None,
    ) -> None:
        if cut_at is None:
            self._send_bytes(status, data, content_type, headers)
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data[:cut_at])
        self._cut()

    def _start_stream(self, headers: Mapping[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut(self) -> None:
        # Close the socket in the middle of the chunked body: no terminating chunk.
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeOpenAIServer:
    """A loopback OpenAI-compatible server with scripted, per-model behaviours; see the module."""

    def __init__(
        self,
        flavor: Flavor = "modelscope",
        *,
        api_key: str | None = None,
        responder: Callable[[dict[str, Any]], str | Reply | None] | None = None,
        default: Reply | None = None,
        requests_limit: int = 2000,
        model_requests_limit: int = 500,
        host: str = "127.0.0.1",
        refuse_images: Iterable[str] = (),
        max_request_image_bytes: int = MAX_REQUEST_IMAGE_BYTES,
        max_images: int | None = None,
        clock: FakeMonotonic | None = None,
    ) -> None:
        self.flavor: Flavor = flavor
        self.clock = clock
        self.refused_image_models: set[str] = set(refuse_images)
        self.max_request_image_bytes = max_request_image_bytes
        self.max_images = max_images
        self.api_key = api_key
        self.responder = responder
        self.default = default or Reply()
        self.requests_limit = requests_limit
        self.model_requests_limit = model_requests_limit
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._used_total = 0
        self._used_by_model: dict[str, int] = defaultdict(int)
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Bind an ephemeral port on loopback and serve in a background thread."""
        server = _Server((self._host, 0), _Handler)
        server.fake = self
        self._server = server
        self._stop.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; handlers still sleeping on a delay wake up and give up."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Return the bound port."""
        assert self._server is not None, "start the server first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Return `http://127.0.0.1:PORT` (no path)."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Return the base URL to give the SDK (`.../v1`)."""
        return f"{self.url}/v1"

    # -- scripting and inspection --------------------------------------------------------------

    def script(self, model: str, *replies: Reply) -> None:
        """Queue `replies` for the next requests naming `model`, one per request."""
        with self._lock:
            self._scripts[model].extend(replies)

    @property
    def request_count(self) -> int:
        """Return how many requests arrived."""
        with self._lock:
            return len(self.requests)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """Return the requests that named `model`."""
        with self._lock:
            return [r for r in self.requests if r.model == model]

    def received_images(self, model: str | None = None) -> list[ReceivedImage]:
        """Return every image part received (for `model`, or all), in arrival order."""
        with self._lock:
            chosen = [r for r in self.requests if model is None or r.model == model]
        return [image for request in chosen for image in request.images]

    def refuse_images_for(self, model: str) -> None:
        """Make `model` answer every request carrying an image with a 400 (no images taken)."""
        with self._lock:
            self.refused_image_models.add(model)

    def clear(self) -> None:
        """Forget the recorded requests and the scripted replies."""
        with self._lock:
            self.requests.clear()
            self._scripts.clear()

    def _wait(self, seconds: float) -> bool:
        """Let `seconds` pass (on the fake clock when there is one); return True once stopping."""
        if math.isinf(seconds):
            self._stop.wait()
            return True
        if self.clock is not None:
            self.clock.advance(seconds)
            return self._stop.is_set()
        return self._stop.wait(seconds)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        model = str(body.get("model", ""))
        with self._lock:
            queue = self._scripts.get(model)
            if queue:
                return queue.popleft()
        if self.responder is not None:
            try:
                given = self.responder(body)
            except Exception as exc:  # a broken responder must show up as an answer, not a hang
                return error(500, {"error": {"message": f"responder failed: {exc!r}"}})
            if isinstance(given, Reply):
                return given
            if isinstance(given, str):
                return replace(self.default, content=given)
        return self.default

    # -- answering -----------------------------------------------------------------------------

    def _serve(self, handler: _Handler, request: RecordedRequest) -> None:
        body = request.body
        if not isinstance(body, dict) or "model" not in body:
            handler._send_json(400, {"error": {"message": "Invalid Format"}}, {})
            return
        model = str(body["model"])
        if self.api_key is not None:
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if token != self.api_key:
                status, payload = _named_error(self.flavor, "unauthorized", model)
                handler._send_json(status, payload, {})
                return
        refusal = self._image_refusal(request, model)
        if refusal is not None:
            status, payload = refusal
            headers = self._quota_headers(model, Reply(status=status))
            handler._send_json(status, payload, headers)
            return
        reply = self._next_reply(body)
        if reply.delay_s and self._wait(reply.delay_s):
            handler.close_connection = True
            return
        stream = bool(body.get("stream"))
        if reply.status == 200 and not stream and _must_stream(self.flavor, model):
            reply = Reply(status=400, body=_stream_only_error(self.flavor))
        if (
            reply.status == 200
            and self.flavor == "deepseek"
            and (body.get("response_format") or {}).get("type") == "json_object"
            # The text only: base64 image data could spell "json" by chance.
            and "json" not in text_of(body.get("messages")).lower()
        ):
            message = "Prompt must contain the word 'json' in some form to use 'response_format'"
            reply = error(400, {"error": {"message": message, "type": "invalid_request_error"}})
        headers = dict(self._quota_headers(model, reply))
        headers.update(reply.headers)
        if reply.raw is not None:
            handler._send_raw(reply.status, reply.raw, reply.content_type, headers, reply.cut_at)
        elif reply.status != 200:
            self._send_error(handler, reply, model, headers)
        elif stream:
            self._send_stream(handler, reply, body, headers)
        else:
            self._send_plain(handler, reply, body, headers)

    def _image_refusal(
        self, request: RecordedRequest, model: str
    ) -> tuple[int, dict[str, Any]] | None:
        if request.image_problem is not None:
            return 400, _bad_image_body(self.flavor, request.image_problem)
        if not request.images:
            return None
        total = sum(image.size_bytes for image in request.images)
        if total > self.max_request_image_bytes:
            message = (
                f"the request's images are {total} bytes, over the limit of "
                f"{self.max_request_image_bytes}"
            )
            return 400, _bad_image_body(self.flavor, message)
        if self.max_images is not None and len(request.images) > self.max_images:
            message = f"at most {self.max_images} images per request, got {len(request.images)}"
            return 400, _bad_image_body(self.flavor, message)
        with self._lock:
            refused = model in self.refused_image_models
        if refused:
            return 400, _images_refused_body(self.flavor, model)
        return None

    def _quota_headers(self, model: str, reply: Reply) -> dict[str, str]:
        wanted = reply.rate_limit_headers
        if wanted is None:
            wanted = self.flavor == "modelscope" and reply.status in (200, 400, 429)
        with self._lock:
            # Rejected calls spend quota too on ModelScope, so every request counts.
            if reply.status != 401:
                self._used_total += 1
                self._used_by_model[model] += 1
            total_left = max(0, self.requests_limit - self._used_total)
            model_left = max(0, self.model_requests_limit - self._used_by_model[model])
        if not wanted:
            return {}
        if reply.body == "rate_limited":
            model_left = 0
        return {
            f"{RATE_LIMIT_PREFIX}requests-limit": str(self.requests_limit),
            f"{RATE_LIMIT_PREFIX}requests-remaining": str(total_left),
            f"{RATE_LIMIT_PREFIX}model-requests-limit": str(self.model_requests_limit),
            f"{RATE_LIMIT_PREFIX}model-requests-remaining": str(model_left),
        }

    def _send_error(
        self, handler: _Handler, reply: Reply, model: str, headers: dict[str, str]
    ) -> None:
        body = reply.body
        status = reply.status
        if isinstance(body, str) and body in (
            "rate_limited",
            "unauthorized",
            "not_served",
            "insufficient_balance",
            "images_refused",
        ):
            status, body = _named_error(self.flavor, body, reply.model or model)
        if isinstance(body, str):
            handler._send_bytes(status, body.encode(), reply.content_type, headers)
        else:
            handler._send_json(status, body, headers)

    def _usage(self, body: dict[str, Any], reply: Reply, reasoning: str) -> dict[str, Any]:
        if reply.usage is not None:
            return dict(reply.usage)
        images, _ = read_images(body)
        if images:
            prompt = _tokens(text_of(body.get("messages"))) + sum(
                image_tokens(image.width_px, image.height_px) for image in images
            )
        else:
            prompt = _tokens(json.dumps(body.get("messages", [])))
        reasoning_tokens = _tokens(reasoning)
        completion = _tokens(reply.content) + reasoning_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        }

    def _reasoning(self, body: dict[str, Any], reply: Reply) -> str:
        if reply.reasoning is not None:
            return reply.reasoning
        thinking = (body.get("thinking") or {}).get("type")
        if self.flavor == "deepseek" and thinking != "disabled":
            return "Volume is falling; holding is the safer call."
        return ""

    def _send_plain(
        self, handler: _Handler, reply: Reply, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        model = reply.model or str(body["model"])
        answer_id = f"chatcmpl-{next(self._ids):04d}"
        if reply.choices_null:
            payload: dict[str, Any] = {
                "id": answer_id,
                "object": "",
                "created": 0,
                "model": model,
                "choices": None,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
            handler._send_json(200, payload, headers)
            return
        reasoning = self._reasoning(body, reply)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reasoning:
            message["reasoning_content"] = reasoning
        payload = {
            "id": answer_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": self._usage(body, reply, reasoning),
        }
        handler._send_json(200, payload, headers)

    def _send_stream(
        self, handler: _Handler, reply: Reply, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        model = reply.model or str(body["model"])
        answer_id = f"chatcmpl-{next(self._ids):04d}"
        reasoning = self._reasoning(body, reply)
        inactive = reply.inactive or ("empty" if self.flavor == "modelscope" else "null")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        keepalive = self.flavor == "deepseek"

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            payload: dict[str, Any] = {
                "id": answer_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            if self.flavor == "dashscope":
                payload["usage"] = None
            payload.update(extra)
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

        def delta(content: str | None, thought: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, value in (("content", content), ("reasoning_content", thought)):
                if value is not None:
                    out[name] = value
                elif inactive == "null":
                    out[name] = None
                elif inactive == "empty":
                    out[name] = ""
            return out

        handler._start_stream(headers)
        first = {"role": "assistant", **delta(None, "" if reasoning else None)}
        handler._chunk(chunk(first))
        for piece in _split(reasoning):
            handler._chunk(chunk(delta(None, piece)))
            if keepalive:
                handler._chunk(b": keep-alive\n\n")
        pieces = _split(reply.content)
        for index, piece in enumerate(pieces):
            if reply.stall_s and index == len(pieces) // 2 and self._wait(reply.stall_s):
                return
            handler._chunk(chunk(delta(piece, None)))
        end = reply.stream_end
        if end == "clean":
            handler._end_chunks()
            return
        if end == "cut":
            handler._cut()
            return
        if end == "bad_json":
            handler._chunk(b"data: {not json}\n\n")
            handler._end_chunks()
            return
        if end == "error_event":
            event = {"error": {"message": "Internal error", "type": "server_error", "code": "500"}}
            handler._chunk(f"data: {json.dumps(event)}\n\n".encode())
            handler._end_chunks()
            return
        usage = self._usage(body, reply, reasoning)
        if self.flavor == "deepseek":
            handler._chunk(chunk(delta("", None), reply.finish_reason, usage=usage))
        else:
            handler._chunk(chunk(delta("", None), reply.finish_reason))
            if include_usage:
                usage_chunk = {
                    "id": answer_id,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                handler._chunk(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        handler._chunk(b"data: [DONE]\n\n")
        handler._end_chunks()


def main(argv: list[str] | None = None) -> None:
    """Serve a fake until stdin closes (for benchmarks and manual checks)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--flavor", default="modelscope", choices=["modelscope", "dashscope", "deepseek", "openai"]
    )
    parser.add_argument("--delay-s", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(args.flavor, default=Reply(delay_s=args.delay_s)).start()
    print(f"READY {server.base_url}", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
