# -*- test-case-name: tests.test_server -*-
"""Why the runtime could not carry out a task or a slot action (pure data).

Each error says what went wrong, with the numbers that matter, and nothing about HTTP:
``llamatwist/api/errors.py`` maps each class to a status, an error type and a message.
"""

from __future__ import annotations

__all__ = [
    "ContextExceeded",
    "DecodeFailed",
    "DecodeLoopCrashed",
    "InputTooLarge",
    "InvalidSlot",
    "KVCacheFull",
    "ShuttingDown",
    "SlotBusy",
    "SlotFileError",
    "SlotFileUnwritable",
    "TaskError",
]


class TaskError(Exception):
    """Base class: a task or slot action the runtime could not carry out."""


class ContextExceeded(TaskError):
    """The prompt does not fit a slot's context."""

    def __init__(self, n_prompt: int, n_ctx: int) -> None:
        super().__init__(f"{n_prompt} prompt tokens, {n_ctx} in a slot's context")
        self.n_prompt, self.n_ctx = n_prompt, n_ctx


class InputTooLarge(TaskError):
    """An embedding input longer than the physical batch (it is pooled in one ubatch)."""

    def __init__(self, n_tokens: int, n_ubatch: int) -> None:
        super().__init__(f"{n_tokens} input tokens, physical batch of {n_ubatch}")
        self.n_tokens, self.n_ubatch = n_tokens, n_ubatch


class KVCacheFull(TaskError):
    """llama_decode found no room for the prompt in the KV cache (worth retrying later)."""


class DecodeFailed(TaskError):
    """llama_decode failed for another reason; ``detail`` is libllama's."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ShuttingDown(TaskError):
    """The server stopped (its drain timeout passed) before the task ended."""


class DecodeLoopCrashed(TaskError):
    """A bug stopped the decode loop; every task still in it fails with this."""


class InvalidSlot(TaskError):
    """A slot action named a slot that does not exist."""

    def __init__(self, id_slot: int) -> None:
        super().__init__(f"no slot {id_slot}")
        self.id_slot = id_slot


class SlotBusy(TaskError):
    """A slot action on a slot that is running a task."""

    def __init__(self, id_slot: int) -> None:
        super().__init__(f"slot {id_slot} is busy")
        self.id_slot = id_slot


class SlotFileError(TaskError, ValueError):
    """A bad slot file name, or a file that cannot be restored; the message is for the client."""


class SlotFileUnwritable(TaskError):
    """A slot save could not write its file; ``reason`` is the OS's."""

    def __init__(self, filename: str, reason: str | None) -> None:
        super().__init__(f"cannot write {filename}: {reason}")
        self.filename, self.reason = filename, reason
