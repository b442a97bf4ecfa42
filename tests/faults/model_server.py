"""A faulty OpenAI-compatible model server: the real openai SDK talks to it over loopback.

Each `POST .../chat/completions` is forwarded to an upstream (`tests/fakes/openai_server.py`,
whose responder trades from the prompt) unless the `FaultPlan` gives it a fault:

`rate_minute` (429 with ModelScope's body and quota headers that still show requests left),
`rate_daily` (429 whose headers say the model's daily quota is used up), `unauthorized` (401),
`server_error` (500), `timeout` (held unanswered for `hold_s`, longer than any deadline),
`truncated` (200 whose body stops halfway), `html_200` (an HTML page with status 200),
`bad_utf8` (200 whose body is not UTF-8), `bad_json` (200, not JSON), `bad_schema` (a valid
completion whose decisions break the schema), `huge` (a valid completion of `huge_bytes`),
`slow_stream` (the upstream's answer, dribbled out in pieces over about two seconds).

Every request is noted in the `FaultLog` (model, the cycle time its prompt names, the fault), so
the checker can match the requests the server saw with the rows the arena wrote.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.faults.plan import FaultLog, FaultPlan

_PROMPT_TIME = re.compile(r"The current time is (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")
_RATE_PREFIX = "modelscope-ratelimit-"


def cycle_time_of(body: dict[str, Any]) -> str | None:
    """Return the cycle time a prompt names ("YYYY-MM-DD HH:MM:SS"), if it names one."""
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            found = _PROMPT_TIME.search(content)
            if found:
                return found.group(1)
    return None


def completion(model: str, content: str) -> dict[str, Any]:
    """Return a plain chat completion answering `content`."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050},
    }


def stream_of(model: str, content: str) -> bytes:
    """Return `content` as a server-sent-event stream, as the SDK reads it."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk"}
    chunks = [
        {**base, "model": model, "choices": [{"index": 0, "delta": {"content": content}}]},
        {
            **base,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050},
        },
    ]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def _quota_headers(model_left: int) -> dict[str, str]:
    return {
        f"{_RATE_PREFIX}requests-limit": "2000",
        f"{_RATE_PREFIX}requests-remaining": str(max(model_left, 1500)),
        f"{_RATE_PREFIX}model-requests-limit": "500",
        f"{_RATE_PREFIX}model-requests-remaining": str(model_left),
    }


def _ms_error(message: str) -> bytes:
    return json.dumps({"errors": {"message": message, "request_id": str(uuid.uuid4())}}).encode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that hung up (killed daemon, timeout) is part of the game


class FaultyModelServer:
    """Forward chat completions to `upstream_url`, injecting the plan's model faults."""

    def __init__(
        self,
        upstream_url: str,
        plan: FaultPlan,
        log: FaultLog,
        *,
        hold_s: float = 30.0,
        huge_bytes: int = 2_000_000,
    ) -> None:
        split = urlsplit(upstream_url)
        self.upstream = (split.hostname or "127.0.0.1", int(split.port or 80))
        self.plan = plan
        self.log = log
        self.hold_s = hold_s
        self.huge_bytes = huge_bytes
        self.enabled = True
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> FaultyModelServer:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FaultyModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Return the server's root URL (any path prefix is served: /v1, none...)."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def next_fault(self) -> tuple[int, str | None]:
        with self._lock:
            number = self._count
            self._count += 1
        return number, (self.plan.llm_fault(number) if self.enabled else None)

    def forward(
        self, path: str, raw: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.request("POST", path, body=raw, headers=headers)
            response = connection.getresponse()
            body = response.read()
            kept = {
                name: value
                for name, value in response.getheaders()
                if name.lower() == "content-type" or name.lower().startswith(_RATE_PREFIX)
            }
            return response.status, body, kept
        finally:
            connection.close()


def _handler(server: FaultyModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str] | None = None,
            *,
            content_type: str = "application/json",
        ) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    if name.lower() != "content-type":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _answer(self, model: str, content: str, stream: bool) -> None:
            if stream:
                self._send(200, stream_of(model, content), content_type="text/event-stream")
            else:
                self._send(200, json.dumps(completion(model, content)).encode())

        def _dribble(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = 8
                step = max(1, -(-len(body) // pieces))
                for start in range(0, len(body), step):
                    self.wfile.write(body[start : start + step])
                    self.wfile.flush()
                    if server._stop.wait(0.25):
                        break
            except OSError:
                pass
            self._drop()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            model = str(body.get("model", ""))
            stream = bool(body.get("stream"))
            number, fault = server.next_fault()
            server.log.llm_request(
                number=number, model=model, cycle_at=cycle_time_of(body), fault=fault
            )
            if fault is not None:
                server.log.add("llm", fault, model=model, number=number)
            if fault == "rate_minute":
                self._send(429, _ms_error("Request limit exceeded."), _quota_headers(300))
            elif fault == "rate_daily":
                self._send(429, _ms_error("Request limit exceeded."), _quota_headers(0))
            elif fault == "unauthorized":
                self._send(
                    401,
                    _ms_error(
                        "Authentication failed, please make sure that a "
                        "valid ModelScope token is supplied."
                    ),
                )
            elif fault == "server_error":
                self._send(500, _ms_error("Internal Server Error"), _quota_headers(300))
            elif fault == "timeout":
                server._stop.wait(server.hold_s)
                self._drop()
            elif fault == "html_200":
                page = b"<html><body><h1>Service temporarily unavailable</h1></body></html>"
                self._send(200, page, content_type="text/html")
            elif fault == "bad_utf8":
                self._send(
                    200, b'{"id":"x","choices":[{"message":{"content":"\xff\xfe\xfa\xc3"}}]}'
                )
            elif fault == "bad_json":
                self._send(200, b'{"id": "chatcmpl-x", "choices": [}')
            elif fault == "bad_schema":
                content = json.dumps(
                    {"BTC": {"signal": "moon", "quantity": "lots", "leverage": -3}}
                )
                self._answer(model, content, stream)
            elif fault == "huge":
                filler = "x" * server.huge_bytes
                content = json.dumps({"BTC": {"signal": "hold", "justification": filler}})
                self._answer(model, content, stream)
            else:
                headers = {"Content-Type": "application/json"}
                status, answer, kept = server.forward(self.path, raw, headers)
                if fault == "truncated":
                    try:
                        self.send_response(status)
                        for name, value in kept.items():
                            self.send_header(name, value)
                        self.send_header("Content-Length", str(len(answer)))
                        self.end_headers()
                        self.wfile.write(answer[: len(answer) // 2])
                        self.wfile.flush()
                    except OSError:
                        pass
                    self._drop()
                elif fault == "slow_stream":
                    self._dribble(status, answer, kept)
                else:
                    self._send(
                        status,
                        answer,
                        kept,
                        content_type=kept.get("Content-Type", "application/json"),
                    )

        def do_GET(self) -> None:
            self._send(404, b'{"error": "not found"}')

    return Handler
