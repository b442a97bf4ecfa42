"""The OpenAI-compatible gateway in front of the model pools (`arena gateway`)."""
