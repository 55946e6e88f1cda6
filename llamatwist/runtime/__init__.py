"""The runtime's public face: everything above it (api/, metrics.py, server.py, cli/, bench/) imports from here.

The modules behind it are the runtime's own business. Pure data (tasks, results, errors, slot and counter
snapshots, the UTF-8 and slot-file helpers) is imported at once and needs no native library, so the parameter
table (api/params.py) imports without one; the names backed by libllama or Twisted (the engine service, the
spec and the loaded-model description) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llamatwist.runtime.counters import Metrics
from llamatwist.runtime.errors import (
    ContextExceeded,
    DecodeFailed,
    DecodeLoopCrashed,
    InputTooLarge,
    InvalidSlot,
    KVCacheFull,
    ShuttingDown,
    SlotBusy,
    SlotFileError,
    SlotFileUnwritable,
    TaskError,
)
from llamatwist.runtime.slot import SlotInfo
from llamatwist.runtime.slotfile import validate_filename
from llamatwist.runtime.task import (
    CompletionTask,
    EmbeddingResult,
    ErrorResult,
    FinalResult,
    GenerationParams,
    PartialResult,
    PromptProgress,
    PromptTokens,
    Result,
    Timings,
    TokenProbs,
    TopProb,
)
from llamatwist.runtime.text import utf8_valid_prefix

if TYPE_CHECKING:
    from llamatwist.runtime.engine_service import EngineService, EngineState
    from llamatwist.runtime.loading import EngineSpec, LoadedModel

__all__ = [
    "CompletionTask",
    "ContextExceeded",
    "DecodeFailed",
    "DecodeLoopCrashed",
    "EmbeddingResult",
    "EngineService",
    "EngineSpec",
    "EngineState",
    "ErrorResult",
    "FinalResult",
    "GenerationParams",
    "InputTooLarge",
    "InvalidSlot",
    "KVCacheFull",
    "LoadedModel",
    "Metrics",
    "PartialResult",
    "PromptProgress",
    "PromptTokens",
    "Result",
    "ShuttingDown",
    "SlotBusy",
    "SlotFileError",
    "SlotFileUnwritable",
    "SlotInfo",
    "TaskError",
    "Timings",
    "TokenProbs",
    "TopProb",
    "utf8_valid_prefix",
    "validate_filename",
]

# name -> the module that defines it, for the names that need libllama (or Twisted) to import
_NATIVE = {
    "EngineService": "llamatwist.runtime.engine_service",
    "EngineState": "llamatwist.runtime.engine_service",
    "EngineSpec": "llamatwist.runtime.loading",
    "LoadedModel": "llamatwist.runtime.loading",
}


def __getattr__(name: str) -> Any:
    module = _NATIVE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
