"""Anthropic's Messages API (``POST /v1/messages``, ``POST /v1/messages/count_tokens``) on the chat
pipeline: request.py translates a request into an OpenAI chat body, openai/chat.py's `prepare_chat` and
api/pipeline.py run it as they run ``/v1/chat/completions``, response.py translates the results back."""

from llamatwist.api.anthropic.routes import register

__all__ = ["register"]
