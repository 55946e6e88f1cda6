"""Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``, ...) on the same pipeline:
request.py translates a request into an OpenAI chat or llama.cpp completion body, openai/chat.py's
`prepare_chat` and api/pipeline.py run it, response.py shapes Ollama's objects, routes.py streams them
(stream.py: NDJSON), store.py answers the model-store routes (``/api/pull``, ``/api/delete``, ...)."""

from llamatwist.api.ollama.routes import register

__all__ = ["register"]
