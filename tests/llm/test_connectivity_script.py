"""`scripts/test_modelscope.py` against the fake: PASS with exit 0, one FAIL line with exit 1.

The passing check runs the script as users do, in its own process (marked `slow`); the other
checks call its `main(argv)` in this process and read what it printed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, Reply, answer, rate_limited, unauthorized

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test_modelscope.py"
# A ModelScope-shaped fake key, assembled so no scanner mistakes the source for a leaked one.
KEY = "ms-" + "-".join(("0f1e2d3c", "4b5a", "6978", "8a9b", "0c1d2e3f4a5b"))
MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
DECISIONS = json.dumps(
    {
        "BTC": {
            "coin": "BTC",
            "signal": "buy_to_enter",
            "quantity": 0.1,
            "leverage": 5,
            "profit_target": 99000,
            "stop_loss": 95000,
            "confidence": 0.75,
            "risk_usd": 200,
            "justification": "higher lows on the 4h chart",
        },
        "ETH": {"coin": "ETH", "signal": "hold"},
    }
)

Server = Callable[..., FakeOpenAIServer]


def run_script_process(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    """Run the script in its own process, as a user does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSCOPE_")}
    if key is not None:
        env["MODELSCOPE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@dataclass(frozen=True)
class ScriptRun:
    """What a run of the script's `main` returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """Return `scripts/test_modelscope.py` loaded as a module."""
    spec = importlib.util.spec_from_file_location("modelscope_check_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_script(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., ScriptRun]:
    """Return a runner of the script's `main(argv)` in this process, key in the environment."""

    def run(*args: str, key: str | None = KEY) -> ScriptRun:
        if key is None:
            monkeypatch.delenv("MODELSCOPE_API_KEY", raising=False)
        else:
            monkeypatch.setenv("MODELSCOPE_API_KEY", key)
        capsys.readouterr()
        code = script.main(list(args))
        out, err = capsys.readouterr()
        return ScriptRun(code, out, err)

    return run


def last_line(result: subprocess.CompletedProcess[str] | ScriptRun) -> str:
    lines = [line for line in result.stdout.splitlines() if line.strip("= ")]
    return lines[-1]


@pytest.mark.slow
def test_the_check_passes_and_shows_the_masked_key_reasoning_and_decisions(
    fake_server: Server,
) -> None:
    server = fake_server(
        "modelscope", api_key=KEY, default=answer(DECISIONS, reasoning="BTC makes higher lows.")
    )

    result = run_script_process("--base-url", server.base_url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "API key configured: ms-0f1… (39 characters)" in result.stdout
    assert KEY not in result.stdout + result.stderr
    assert server.base_url in result.stdout and MODEL in result.stdout
    assert "BTC makes higher lows." in result.stdout
    assert "signal: buy_to_enter" in result.stdout and "confidence: 75%" in result.stdout
    assert "quota left today: 499/500 for this model" in result.stdout
    assert last_line(result).startswith("PASS: ")
    # The daemon's prompt went out, once, with no retry.
    (request,) = server.requests
    assert request.body["messages"][0]["role"] == "system"
    assert "BTC" in request.body["messages"][1]["content"]


def test_stream_and_model_options_reach_the_request(
    fake_server: Server, run_script: Callable[..., ScriptRun]
) -> None:
    server = fake_server("modelscope", default=answer(DECISIONS, reasoning="thinking"))

    result = run_script("--base-url", server.base_url, "--stream", "--model", "Qwen/Other")

    assert result.returncode == 0, result.stdout + result.stderr
    assert server.requests[0].body["stream"] is True
    assert server.requests[0].body["model"] == "Qwen/Other"


@pytest.mark.parametrize(
    ("reply", "cause"),
    [
        (unauthorized(), "FAIL: bad key: ModelScope refused the API key (401"),
        (rate_limited(), "FAIL: quota exhausted: "),
        (Reply(status=400, body="not_served"), "FAIL: model not served: "),
    ],
)
def test_a_refused_call_fails_with_one_line_naming_the_cause(
    fake_server: Server, run_script: Callable[..., ScriptRun], reply: Reply, cause: str
) -> None:
    server = fake_server("modelscope", default=reply)

    result = run_script("--base-url", server.base_url)

    assert result.returncode == 1
    assert last_line(result).startswith(cause), result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_refused_connection_fails_with_a_network_cause(
    run_script: Callable[..., ScriptRun], refused_port: int
) -> None:
    result = run_script("--base-url", f"http://127.0.0.1:{refused_port}/v1")

    assert result.returncode == 1
    assert last_line(result).startswith("FAIL: network: could not reach ModelScope")


def test_no_key_fails_before_any_call(run_script: Callable[..., ScriptRun]) -> None:
    result = run_script("--base-url", "http://127.0.0.1:9/v1", key=None)

    assert result.returncode == 1
    assert last_line(result).startswith("FAIL: no key: MODELSCOPE_API_KEY is not set")


def test_vision_sends_one_chart_to_a_qwen3_vl_model_and_prints_what_it_sees(
    fake_server: Server, run_script: Callable[..., ScriptRun]
) -> None:
    seen = "Two 3m candle charts: BTC drifts up to 97,000 while ETH falls back to 3,400."
    server = fake_server("modelscope", default=answer(seen))

    result = run_script("--base-url", server.base_url, "--vision")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "model:    Qwen/Qwen3-VL-30B-A3B-Instruct" in result.stdout
    assert "BTC drifts up to 97,000" in result.stdout
    assert (
        last_line(result)
        == "PASS: Qwen/Qwen3-VL-30B-A3B-Instruct read the chart (it named BTC, ETH)"
    )
    (request,) = server.requests
    (image,) = request.images
    assert request.image_problem is None and image.media_type == "image/png"
    assert (image.width_px, image.height_px) == (896, 320)  # two coins side by side
    assert "response_format" not in request.body


def test_vision_against_a_model_taking_no_images_fails_with_that_cause(
    fake_server: Server, run_script: Callable[..., ScriptRun]
) -> None:
    server = fake_server("modelscope", refuse_images={MODEL})

    result = run_script("--base-url", server.base_url, "--vision", "--model", MODEL)

    assert result.returncode == 1
    assert last_line(result).startswith(f"FAIL: images refused: ModelScope model {MODEL} takes no")
