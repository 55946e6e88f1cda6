"""Exceptions raised by the engine layer (plain Python, no cffi)."""

from __future__ import annotations

__all__ = ["ContextError", "DecodeError", "EngineError", "ModelLoadError"]


class EngineError(Exception):
    """Base class of engine failures."""


class ModelLoadError(EngineError):
    """The model file could not be loaded; the message names the cause."""


class ContextError(EngineError):
    """A llama_context could not be created (e.g. not enough memory)."""


class DecodeError(EngineError):
    """llama_decode failed; ``code`` is libllama's return value."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
