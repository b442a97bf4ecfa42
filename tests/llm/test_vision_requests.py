"""A vision agent's request: images on the user message, in the cache key, refused cleanly.

Text-only prompts keep the request, prompt hash and cache key they always had (answers stored
before vision existed still replay); images enter the key by their spec keys, so a replay never
draws them.
"""

from __future__ import annotations

from app.config import AgentConfig, load_settings
from app.domain import ChartImage, ChatMessage, ImagePart, prompt_hash
from app.llm import QwenProvider, cache_key
from app.llm.openai_compat import fold_system_messages
from app.wiring import is_vision_agent

TEXT = (ChatMessage("system", "You trade."), ChatMessage("user", "Decide as json."))
# What `prompt_hash` and `cache_key` gave for TEXT before images existed (computed on the
# commit before vision agents): stored answers keep replaying.
TEXT_HASH = "b815ee0551254e165c3bfb48ab92efda7019bd561a45eaa39e5e387c5336eaf7"
TEXT_KEY = "e49f999a4f2e7d620e142aadda310e124e3ce22e78cdf1e80a953d37c604822e"


def _part(key: str, drawn: list[str]) -> ImagePart:
    def draw() -> ChartImage:
        drawn.append(key)
        png = b"\x89PNG\r\n\x1a\n" + key.encode()
        return ChartImage(png, key * 4, 256, 256, "caption", "intraday", ("BTC",), ("3m",), key)

    return ImagePart(
        key=key, caption="BTC: 3m candles", kind="intraday", width_px=256, height_px=256, draw=draw
    )


def _model() -> QwenProvider:
    return QwenProvider(model="Qwen/Qwen3-VL-30B-A3B-Instruct", api_key="k", require_key=False)


def test_a_text_prompt_hashes_and_keys_as_before_and_images_change_both_without_drawing() -> None:
    assert prompt_hash(TEXT) == TEXT_HASH
    assert cache_key("modelscope", _model().prepare(TEXT)) == TEXT_KEY

    drawn: list[str] = []
    model = _model()
    with_charts = (TEXT[0], ChatMessage("user", TEXT[1].content, (_part("a" * 16, drawn),)))
    other_charts = (TEXT[0], ChatMessage("user", TEXT[1].content, (_part("b" * 16, drawn),)))
    plain = model.prepare(TEXT)
    assert plain.images == ()
    keys = {cache_key("modelscope", model.prepare(m)) for m in (TEXT, with_charts, other_charts)}
    hashes = {prompt_hash(m) for m in (TEXT, with_charts, other_charts)}
    assert len(keys) == len(hashes) == 3
    assert drawn == [], "naming a prompt's images must not draw them"


def test_the_images_follow_the_text_of_the_user_message_even_when_the_system_is_folded() -> None:
    drawn: list[str] = []
    messages = (TEXT[0], ChatMessage("user", "Decide as json.", (_part("c" * 16, drawn),)))
    folded = fold_system_messages(messages)
    assert [m.role for m in folded] == ["user"] and folded[0].images == messages[1].images
    sent = _model()._arguments(_model().prepare(messages))["messages"]
    content = sent[-1]["content"]
    assert [part["type"] for part in content] == ["text", "text", "image_url"]
    assert content[0]["text"] == "Decide as json."
    assert content[1]["text"] == "Chart: BTC: 3m candles"
    assert content[2]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGg")
    assert sent[0]["role"] == "system" and isinstance(sent[0]["content"], str)
    assert drawn == ["c" * 16]


def test_vision_agents_by_model_family_setting_and_their_own_switch() -> None:
    settings = load_settings(env_file=None)
    settings.vision.models = ["llava:13b"]

    def agent(model: str, vision: bool | None = None, provider: str = "modelscope") -> bool:
        config = AgentConfig(name="a", provider=provider, model=model, vision=vision)
        return is_vision_agent(config, settings)

    assert agent("Qwen/Qwen3-VL-30B-A3B-Instruct")
    assert agent("Qwen/Qwen3-VL-235B-A22B-Instruct")
    assert agent("qwen-vl-max", provider="dashscope")
    assert agent("LLaVA:13b", provider="openai")
    assert not agent("Qwen/Qwen3-235B-A22B-Instruct-2507")
    assert not agent("deepseek-chat", provider="deepseek")
    assert agent("deepseek-chat", vision=True, provider="deepseek")
    assert not agent("Qwen/Qwen3-VL-30B-A3B-Instruct", vision=False)
    assert not agent("buy_and_hold", vision=True, provider="baseline")
