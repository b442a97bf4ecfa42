"""Versioned prompts: the trading rules and the per-cycle market and account state.

`PROMPT_VERSION` names the rules and layout; the engine stores it with every call, and any change
to the rendered text (see tests/prompts/expected/) comes with a new version.
"""

from app.prompts.builder import (
    PROMPT_VERSION,
    SERIES_LENGTH,
    build_messages,
    render_account_section,
    render_context_blocks,
    render_market_section,
    render_preamble,
    render_system_prompt,
)

__all__ = [
    "PROMPT_VERSION",
    "SERIES_LENGTH",
    "build_messages",
    "render_account_section",
    "render_context_blocks",
    "render_market_section",
    "render_preamble",
    "render_system_prompt",
]
