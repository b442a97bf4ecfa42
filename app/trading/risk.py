"""Pure checks that turn decisions into order intents or rejections with a reason."""
