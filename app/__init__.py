"""Alpha Arena: LLMs trading crypto perpetuals on paper, live and over history."""

__version__ = "0.1.0"
