#!/usr/bin/env python3
"""Check the ModelScope connection with one real decision call, the way the daemon makes it.

    .venv/bin/python scripts/test_modelscope.py [--model ID] [--stream] [--base-url URL]
    .venv/bin/python scripts/test_modelscope.py --vision [--model ID]

Reads MODELSCOPE_API_KEY (environment or .env), asks the model for decisions on a small
two-coin market built by the project's own prompt code, prints the reasoning and the parsed
decisions, and ends with a PASS line (exit 0) or a FAIL line naming the cause (exit 1): no key,
bad key, quota exhausted, model not served, network, timeout. One request is spent; nothing is
retried and nothing is written to the database.

With `--vision` it sends one chart instead (the intraday chart a vision agent would get for the
same market, default model Qwen/Qwen3-VL-30B-A3B-Instruct), prints what the model says it sees,
and passes when the answer names a coin of the chart; a model that takes no images fails with
the cause "images refused".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from app.config import DEFAULT_MODELSCOPE_MODEL, Settings, load_settings
from app.decisions import parse_decisions
from app.domain import (
    AccountView,
    ChatMessage,
    ChatOptions,
    ChatResult,
    CoinSnapshot,
    MarketSnapshot,
)
from app.errors import (
    ConfigError,
    DecisionError,
    EmptyAnswerError,
    ModelAuthError,
    ModelCallError,
    ModelImagesRefusedError,
    ModelNotServedError,
    ModelQuotaError,
    ModelTimeoutError,
    ModelUnavailableError,
    TruncatedAnswerError,
)
from app.indicators import add_context_indicators, add_intraday_indicators
from app.llm import ClientPool, OpenAIChatModel
from app.logs import mask_secrets
from app.prompts.builder import PROMPT_VERSION, build_messages
from app.wiring import build_model

RULE = "=" * 60
VISION_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct"
VISION_QUESTION = (
    "What does this chart show? Name the coins, the timeframe, and whether each price rose or "
    "fell over the chart. Answer in two or three sentences."
)
SAMPLE_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SAMPLE_PRICES = {"BTC": 97_000.0, "ETH": 3_400.0}
REASONING_SHOWN_CHARS = 1200


def masked(key: str) -> str:
    """Return the first few characters of a key, the rest hidden."""
    shown = 6 if len(key) >= 16 else 2
    return f"{key[:shown]}… ({len(key)} characters)"


def _candles(last_price: float, timeframe: timedelta, count: int, seed: int) -> pd.DataFrame:
    # A gentle random walk ending near `last_price`: enough to warm every indicator up.
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.002, count)
    closes = last_price * np.exp(steps - steps.sum() + np.cumsum(steps))
    opens = np.concatenate(([closes[0]], closes[:-1]))
    spread = np.abs(rng.normal(0.0, 0.001, count)) * closes
    index = pd.DatetimeIndex(
        [SAMPLE_AT - timeframe * (count - i) for i in range(count)], name="open_time"
    )
    return pd.DataFrame(
        {
            "open": opens,
            "high": np.maximum(opens, closes) + spread,
            "low": np.minimum(opens, closes) - spread,
            "close": closes,
            "volume": rng.uniform(50, 150, count),
        },
        index=index,
    )


def sample_snapshot() -> MarketSnapshot:
    """Return a small made-up BTC/ETH market."""
    coins = {}
    for seed, (coin, price) in enumerate(SAMPLE_PRICES.items()):
        coins[coin] = CoinSnapshot(
            coin=coin,
            symbol=f"{coin}/USDC:USDC",
            last_price=price,
            intraday=add_intraday_indicators(_candles(price, timedelta(minutes=3), 120, seed)),
            context=add_context_indicators(_candles(price, timedelta(hours=4), 120, seed + 10)),
            funding_rate=0.0000125,
        )
    return MarketSnapshot(
        at=SAMPLE_AT, intraday_timeframe="3m", context_timeframe="4h", coins=coins
    )


def vision_messages() -> list[ChatMessage]:
    """Return one question with the sample market's intraday chart (as a vision agent gets it)."""
    from app.charts.render import ChartRenderer
    from app.charts.source import MarketCharts

    charts = MarketCharts(renderer=ChartRenderer()).charts(sample_snapshot(), {})
    return [ChatMessage("user", VISION_QUESTION, images=charts[:1])]


def sample_messages(settings: Settings) -> list[ChatMessage]:
    """Return the project's prompt for a small made-up BTC/ETH market and a fresh account."""
    snapshot = sample_snapshot()
    cash = settings.risk.starting_cash_usd
    account = AccountView(
        at=SAMPLE_AT,
        starting_cash_usd=cash,
        cash_usd=cash,
        margin_usd=0.0,
        unrealized_pnl_usd=0.0,
        realized_pnl_usd=0.0,
        fees_paid_usd=0.0,
        funding_paid_usd=0.0,
        positions={},
    )
    return build_messages(
        snapshot,
        account,
        started_at=SAMPLE_AT - timedelta(minutes=30),
        invocation=11,
        fee_bps=settings.risk.fee_bps,
        slippage_bps=settings.risk.slippage_bps,
        max_leverage=settings.risk.max_leverage,
        max_position_margin_pct=settings.risk.max_position_margin_pct,
        sharpe=None,
    )


def cause_of(error: ModelCallError) -> str:
    """Return the short cause the FAIL line starts with."""
    if isinstance(error, ModelAuthError):
        return "bad key"
    if isinstance(error, ModelQuotaError):
        return "quota exhausted"
    if isinstance(error, ModelImagesRefusedError):
        return "images refused"
    if isinstance(error, ModelNotServedError):
        return "model not served"
    if isinstance(error, ModelTimeoutError):
        return "timeout"
    if isinstance(error, ModelUnavailableError):
        outcome = error.attempts[-1].outcome if error.attempts else ""
        return "network" if outcome == "network_error" else "provider error"
    if isinstance(error, TruncatedAnswerError | EmptyAnswerError):
        return "broken answer"
    return "call failed"


def fail(cause: str, detail: str, secrets: list[str]) -> int:
    """Print the one-line failure and return the exit code."""
    print(RULE)
    print(f"FAIL: {cause}: {mask_secrets(detail, secrets)}")
    return 1


async def ask(
    model: OpenAIChatModel, messages: list[ChatMessage], stream: bool, *, json_mode: bool = True
) -> ChatResult:
    """Ask once through the daemon's adapter, with no retry."""
    options = ChatOptions(json_mode=json_mode, stream=stream)
    return await model.send(model.prepare(messages, options), max_retries=0)


def print_result(result: ChatResult, messages: list[ChatMessage]) -> None:
    """Print timing, tokens, quota, the reasoning and the decisions."""
    usage = result.usage
    print(
        f"✓ API call succeeded in {result.latency_s:.1f} s "
        f"(tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out"
        + (f", {usage.reasoning_tokens} thinking" if usage.reasoning_tokens else "")
        + ")"
    )
    headers = result.rate_limit_headers
    if headers:
        print(
            "  quota left today: "
            f"{headers.get('modelscope-ratelimit-model-requests-remaining', '?')}/"
            f"{headers.get('modelscope-ratelimit-model-requests-limit', '?')} for this model, "
            f"{headers.get('modelscope-ratelimit-requests-remaining', '?')}/"
            f"{headers.get('modelscope-ratelimit-requests-limit', '?')} for the account"
        )
    print(RULE)
    print("Result")
    print(RULE)
    reasoning = result.reasoning.strip() or "(the model gave no separate reasoning)"
    if len(reasoning) > REASONING_SHOWN_CHARS:
        reasoning = reasoning[:REASONING_SHOWN_CHARS] + " …"
    print("Reasoning:")
    print(textwrap.indent(reasoning, "  "))
    print()


def print_decisions(text: str) -> str | None:
    """Print the parsed decisions; return the reason when none could be read."""
    try:
        decisions = parse_decisions(text, tuple(SAMPLE_PRICES))
    except DecisionError as error:
        print("Answer:")
        print(textwrap.indent(text.strip()[:800], "  "))
        return str(error)
    print("Trading decisions:")
    if not decisions:
        print("  (none: the model chose to do nothing)")
    for decision in decisions:
        print(f"  - coin: {decision.coin}")
        print(f"    signal: {decision.signal}")
        if decision.quantity is not None:
            print(f"    quantity: {decision.quantity:g}")
        if decision.leverage is not None:
            print(f"    leverage: {decision.leverage}x")
        if decision.confidence is not None:
            print(f"    confidence: {decision.confidence:.0%}")
        if decision.justification:
            print(f"    why: {decision.justification[:160]}")
    return None


def vision_verdict(result: ChatResult) -> int:
    """Print what the model says it sees and the PASS line; return the exit code."""
    print("What the model sees:")
    print(textwrap.indent(textwrap.fill(result.text.strip()[:1200], 96), "  "))
    named = [coin for coin in SAMPLE_PRICES if coin in result.text.upper()]
    print(RULE)
    if named:
        print(f"PASS: {result.model} read the chart (it named {', '.join(named)})")
    else:
        print(
            f"PASS (with a warning): {result.model} answered, but named none of the chart's "
            f"coins ({', '.join(SAMPLE_PRICES)}): check that it really reads images"
        )
    print(RULE)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the check; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", help=f"model id (default: {DEFAULT_MODELSCOPE_MODEL})")
    parser.add_argument("--stream", action="store_true", help="stream the answer")
    parser.add_argument("--base-url", help="API base URL (default: MODELSCOPE_BASE_URL)")
    parser.add_argument(
        "--vision",
        action="store_true",
        help=f"send one chart image and print what the model sees (default model {VISION_MODEL})",
    )
    args = parser.parse_args(argv)

    print(RULE)
    print("ModelScope API check (Qwen)")
    print(RULE)
    try:
        settings = load_settings()
    except ConfigError as error:
        return fail("settings", str(error), [])
    key_secret = settings.modelscope.api_key
    key = key_secret.get_secret_value().strip() if key_secret is not None else ""
    if not key:
        return fail(
            "no key",
            "MODELSCOPE_API_KEY is not set: create an access token at "
            "https://modelscope.cn/my/myaccesstoken and put MODELSCOPE_API_KEY=... in .env",
            [],
        )
    secrets = [key]
    print(f"✓ API key configured: {masked(key)}")
    model_id = args.model or (VISION_MODEL if args.vision else DEFAULT_MODELSCOPE_MODEL)
    if args.base_url:
        endpoint = settings.modelscope.model_copy(update={"base_url": args.base_url})
        settings = settings.model_copy(update={"modelscope": endpoint})

    async def run() -> ChatResult:
        clients = ClientPool()
        try:
            # Built by the composition root, exactly as the daemon builds its agents' models.
            model = build_model("modelscope", model_id, settings, clients=clients)
            print("✓ QwenProvider ready")
            print(f"  base URL: {model.base_url}")
            streamed = args.stream or model.model_traits.stream_only
            print(f"  model:    {model_id} (streaming: {'yes' if streamed else 'no'})")
            if args.vision:
                messages = vision_messages()
                image = messages[0].images[0].image()
                print(
                    f"  chart:    {image.width_px}x{image.height_px} PNG, "
                    f"{image.size_bytes:,} bytes ({image.caption})"
                )
            else:
                messages = sample_messages(settings)
                chars = sum(len(m.content) for m in messages)
                print(f"  prompt:   {PROMPT_VERSION}, {chars:,} chars")
            print()
            print("Calling the model…")
            result = await ask(model, messages, args.stream, json_mode=not args.vision)
            print_result(result, messages)
            return result
        finally:
            await clients.aclose()

    try:
        result = asyncio.run(run())
    except ModelCallError as error:
        return fail(cause_of(error), str(error), secrets)
    except ConfigError as error:
        return fail("settings", str(error), secrets)
    if args.vision:
        return vision_verdict(result)
    problem = print_decisions(result.text)
    print(RULE)
    if problem is not None:
        print(f"PASS (with a warning): the API works, but no decision could be read: {problem}")
    else:
        print(f"PASS: ModelScope answered with {result.model} and the decisions parsed")
    print(RULE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
