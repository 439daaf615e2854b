"""gintune: a Gin-configured training library for LLM post-training."""
