"""llamatwist: a llama-server compatible LLM inference server on Twisted."""

__version__ = "0.1.0"
