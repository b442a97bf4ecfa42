"""A fault proxy in front of the fake exchange: real ccxt talks to it, it answers wrong on schedule.

Every request is forwarded to an upstream (`tests/fakes/exchange.py`, Binance USD-M shapes) unless
the `FaultPlan` gives it a fault:

- request faults (any path): `down` (the connection is closed unanswered), `slow` (answered after
  `slow_s`, later than the client waits), `malformed` (200 with cut JSON), `html` (a 502 HTML
  error page, as a CDN sends), `http_5xx` (503 with Binance's JSON error), `truncated` (200 whose
  body stops halfway, with the full Content-Length announced);
- candle faults (klines of `timeframe`, keyed by the newest candle asked for): `empty` (`[]`),
  `stale` (the candles of an hour earlier: nothing new), `frozen` (as stale, and the ticker and
  mark price of that minute frozen at the hour-old close), `wick` (the last three candles' low at
  1 % of their close, everything else right), `zero` (the last candle's prices all 0).

Each fault served is logged in the `FaultLog` with what the checker needs.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.faults.plan import FaultLog, FaultPlan

HOUR_MS = 3_600_000
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_TIMEFRAME_MS = {"m": 60_000, "h": HOUR_MS, "d": 24 * HOUR_MS}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that hung up (killed daemon, timeout) is part of the game


class ExchangeFaultProxy:
    """Forward to `upstream_url`, injecting the plan's exchange and candle faults."""

    def __init__(
        self,
        upstream_url: str,
        plan: FaultPlan,
        log: FaultLog,
        *,
        timeframe: str = "1m",
        slow_s: float = 4.0,
    ) -> None:
        split = urlsplit(upstream_url)
        self.upstream = (split.hostname or "127.0.0.1", int(split.port or 80))
        self.plan = plan
        self.log = log
        self.timeframe = timeframe
        self.timeframe_ms = int(timeframe[:-1]) * _TIMEFRAME_MS[timeframe[-1]]
        self.slow_s = slow_s
        self.enabled = True
        # The daemon's life (set by the harness at each start): candle faults are keyed by it.
        self.life = 0
        # (life, newest candle close ms) -> the candle fault decided for it (None: honest).
        self._candle_kinds: dict[tuple[int, int], str | None] = {}
        self._count = 0
        self._lock = threading.Lock()
        # Minutes whose ticker is frozen (a `frozen` candle fault): minute start ms -> old price.
        self._frozen_until_ms = 0
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # Lifecycle.

    def start(self) -> ExchangeFaultProxy:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> ExchangeFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def request_count(self) -> int:
        """Return how many requests arrived so far."""
        with self._lock:
            return self._count

    # Decisions.

    def next_fault(self) -> tuple[int, str | None]:
        with self._lock:
            number = self._count
            self._count += 1
        return number, (self.plan.exchange_fault(number) if self.enabled else None)

    def forward(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, str]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {"Content-Type": "application/json"} if body else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return (
                response.status,
                response.read(),
                response.getheader("Content-Type", "application/json"),
            )
        finally:
            connection.close()

    def candle_answer(self, path: str, query: dict[str, str]) -> tuple[int, bytes] | None:
        """Return a faulty klines answer, or None when these candles are served honestly."""
        if not self.enabled or query.get("interval") != self.timeframe or "endTime" not in query:
            return None
        newest_close_ms = int(query["endTime"]) + 1
        key = (self.life, newest_close_ms)
        with self._lock:
            kind = self._candle_kinds.get(key)
            if kind is None and key not in self._candle_kinds:
                if self.plan.candle_bad(newest_close_ms, self.life):
                    kind = self.plan.candle_kind(
                        sum(k is not None for k in self._candle_kinds.values())
                    )
                self._candle_kinds[key] = kind
        if kind is None:
            return None
        detail: dict[str, Any] = {
            "symbol": query.get("symbol"),
            "newest_close_ms": newest_close_ms,
            "life": self.life,
        }
        if kind == "empty":
            self.log.add("exchange", kind, **detail)
            return 200, b"[]"
        if kind in ("stale", "frozen"):
            old = dict(query)
            old["endTime"] = str(int(query["endTime"]) - HOUR_MS)
            if "startTime" in old:
                old["startTime"] = str(int(old["startTime"]) - HOUR_MS)
            status, raw, _ = self.forward("GET", f"{urlsplit(path).path}?{urlencode(old)}", None)
            if kind == "frozen":
                with self._lock:
                    self._frozen_until_ms = max(self._frozen_until_ms, newest_close_ms)
            self.log.add("exchange", kind, **detail)
            return status, raw
        status, raw, _ = self.forward("GET", path, None)
        rows = json.loads(raw)
        if status != 200 or not rows:
            return status, raw
        if kind == "wick":
            for row in rows[-3:]:
                row[3] = repr(float(row[4]) * 0.01)
        elif kind == "zero":
            rows[-1][1:5] = ["0.0", "0.0", "0.0", "0.0"]
        self.log.add("exchange", kind, **detail)
        return 200, json.dumps(rows).encode()

    def frozen_price_answer(self, path: str, query: dict[str, str]) -> tuple[int, bytes] | None:
        """During a `frozen` fault, tickers and mark prices give the hour-old price."""
        now_ms = int(time.time() * 1000)
        with self._lock:
            frozen = now_ms < self._frozen_until_ms + self.timeframe_ms
        if not frozen or not path.startswith(("/fapi/v1/ticker/24hr", "/fapi/v1/premiumIndex")):
            return None
        old_close = self._close_an_hour_ago(query.get("symbol"))
        if old_close is None:
            return None
        status, raw, _ = self.forward("GET", path, None)
        payload = json.loads(raw)
        for item in payload if isinstance(payload, list) else [payload]:
            for key in ("lastPrice", "markPrice", "indexPrice"):
                if key in item:
                    item[key] = repr(old_close)
        self.log.add("exchange", "frozen_price", symbol=query.get("symbol"), path=path)
        return status, json.dumps(payload).encode()

    def _close_an_hour_ago(self, symbol: str | None) -> float | None:
        if not symbol:
            return None
        end_ms = int(time.time() * 1000) - HOUR_MS
        query = urlencode({"symbol": symbol, "interval": "1m", "endTime": end_ms, "limit": 1})
        status, raw, _ = self.forward("GET", f"/fapi/v1/klines?{query}", None)
        rows = json.loads(raw) if status == 200 else []
        return float(rows[-1][4]) if rows else None


def _handler(proxy: ExchangeFaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a `slow` answer): nothing to tell it

        def _cut(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
            except OSError:
                pass
            self._drop()

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            split = urlsplit(self.path)
            query = dict(parse_qsl(split.query))
            number, fault = proxy.next_fault()
            if fault is not None:
                proxy.log.add("exchange", fault, path=split.path, number=number)
            if fault == "down":
                self._drop()
                return
            if fault == "slow":
                proxy._stop.wait(proxy.slow_s)
            elif fault == "html":
                self._send(502, _HTML_502, "text/html")
                return
            elif fault == "http_5xx":
                self._send(503, b'{"code":-1001,"msg":"Internal error; unable to process."}')
                return
            if split.path == "/fapi/v1/klines" and fault is None:
                faulty = proxy.candle_answer(self.path, query)
                if faulty is not None:
                    self._send(*faulty)
                    return
            if fault is None:
                frozen = proxy.frozen_price_answer(self.path, query)
                if frozen is not None:
                    self._send(*frozen)
                    return
            try:
                status, raw, content_type = proxy.forward(method, self.path, body)
            except OSError:
                self._drop()
                return
            if fault == "malformed":
                self._send(200, raw[: max(1, len(raw) // 3)])
            elif fault == "truncated":
                self._cut(status, raw)
            else:
                self._send(status, raw, content_type)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler
