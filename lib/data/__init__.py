"""Preference data: sources, tokenizer, encoding, batching."""
