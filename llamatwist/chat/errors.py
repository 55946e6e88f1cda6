"""Errors raised while turning an OpenAI chat request into a prompt.

Each error carries the HTTP status llama-server answers with for the same failure: llama-server maps
``std::invalid_argument`` to 400 (``invalid_request_error``) and every other exception to 500 (``server_error``),
so the class alone does not decide the status; ``status`` does.
"""

from __future__ import annotations

__all__ = ["ChatError", "ChatInputError", "TemplateError"]


class ChatError(Exception):
    """Base class. ``status`` is the HTTP status llama-server uses for this failure (400 or 500)."""

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    @property
    def error_type(self) -> str:
        """The OpenAI-style ``error.type`` llama-server reports with ``status``."""
        return "invalid_request_error" if self.status == 400 else "server_error"

    def __str__(self) -> str:
        return self.message


class ChatInputError(ChatError):
    """The request's messages/tools/options are invalid: always the client's mistake, so 400 (llama-server
    answers a few of these, its plain runtime errors, with 500)."""

    status = 400


class TemplateError(ChatError):
    """The chat template failed: cannot be compiled or selected (start-up), or raised while rendering.

    Render failures default to 400: llama-server renders inside its parser generator, which re-throws any
    template exception as ``std::invalid_argument``.
    """

    status = 400
