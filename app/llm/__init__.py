"""LLM adapters: OpenAI-compatible providers, baselines and the response cache."""
