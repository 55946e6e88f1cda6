# -*- test-case-name: tests.test_engine -*-
"""A ``llama_context``: KV memory, decode, logits. Not thread-safe by design:
exactly one thread (the decode thread) may use a Context."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llamatwist.engine.batch import Batch
from llamatwist.engine.errors import ContextError, DecodeError
from llamatwist.engine.model import LoraAdapter, Model
from llamatwist.native.binding import add_log_listener, ffi, lib, remove_log_listener

__all__ = ["Context", "ContextParams", "PerfData"]


@dataclass(frozen=True)
class ContextParams:
    n_ctx: int = 0
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_threads: int = 4
    n_threads_batch: int = 4
    kv_unified: bool = True
    embeddings: bool = False


@dataclass(frozen=True)
class PerfData:
    t_load_ms: float
    t_p_eval_ms: float
    t_eval_ms: float
    n_p_eval: int
    n_eval: int


_DECODE_ERRORS = {
    1: "could not find a KV slot for the batch (context full)",
    2: "decode aborted",
    -1: "invalid batch",
}


class Context:
    def __init__(self, model: Model, params: ContextParams) -> None:
        p = lib.llama_context_default_params()
        p.n_ctx = params.n_ctx
        p.n_batch = params.n_batch
        p.n_ubatch = params.n_ubatch
        p.n_seq_max = params.n_seq_max
        p.n_threads = params.n_threads
        p.n_threads_batch = params.n_threads_batch
        p.kv_unified = params.kv_unified
        p.embeddings = params.embeddings
        p.no_perf = False
        errors: list[str] = []

        def capture(level: int, line: str) -> None:
            if level >= logging.ERROR:
                errors.append(line.strip())

        add_log_listener(capture)
        try:
            ptr = lib.llama_init_from_model(model.ptr, p)
        finally:
            remove_log_listener(capture)
        if ptr == ffi.NULL:
            detail = "; ".join(e for e in errors if e)
            raise ContextError(
                f"failed to create a context of {params.n_ctx or 'default'} tokens"
                + (f": {detail}" if detail else "")
                + " (try a smaller -c/--ctx-size)"
            )
        self._ptr = ffi.gc(ptr, lib.llama_free)
        self._mem = lib.llama_get_memory(ptr)
        self.model = model
        self.n_ctx: int = lib.llama_n_ctx(ptr)
        self.n_ctx_seq: int = lib.llama_n_ctx_seq(ptr)
        self.n_batch: int = lib.llama_n_batch(ptr)
        self.n_ubatch: int = lib.llama_n_ubatch(ptr)
        self.n_seq_max: int = lib.llama_n_seq_max(ptr)
        self.n_vocab: int = model.vocab.n_tokens

    @property
    def ptr(self) -> Any:
        return self._ptr

    def close(self) -> None:
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None

    def decode(self, batch: Batch) -> None:
        """Run the model over ``batch`` (cffi releases the GIL during the call)."""
        rc = lib.llama_decode(self._ptr, batch.native)
        if rc != 0:
            raise DecodeError(rc, _DECODE_ERRORS.get(rc, f"llama_decode failed ({rc})"))

    def logits(self, idx: int) -> npt.NDArray[np.float32]:
        """Logits of batch output ``idx`` (a copy: the buffer is reused next decode)."""
        ptr = lib.llama_get_logits_ith(self._ptr, idx)
        if ptr == ffi.NULL:
            raise IndexError(f"no logits for batch index {idx}")
        return np.frombuffer(ffi.buffer(ptr, self.n_vocab * 4), dtype=np.float32).copy()

    # -- KV memory ------------------------------------------------------
    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        return bool(lib.llama_memory_seq_rm(self._mem, seq_id, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        lib.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        lib.llama_memory_seq_add(self._mem, seq_id, p0, p1, delta)

    def seq_pos_max(self, seq_id: int) -> int:
        return int(lib.llama_memory_seq_pos_max(self._mem, seq_id))

    def can_shift(self) -> bool:
        return bool(lib.llama_memory_can_shift(self._mem))

    def clear(self) -> None:
        lib.llama_memory_clear(self._mem, True)

    # -- per-sequence state --------------------------------------------
    def seq_state(self, seq_id: int) -> bytes:
        size = lib.llama_state_seq_get_size(self._ptr, seq_id)
        buf = ffi.new("uint8_t[]", size)
        n = lib.llama_state_seq_get_data(self._ptr, buf, size, seq_id)
        return bytes(ffi.buffer(buf, n))

    def set_seq_state(self, seq_id: int, data: bytes) -> bool:
        return lib.llama_state_seq_set_data(self._ptr, data, len(data), seq_id) > 0

    # -- adapters ------------------------------------------------------
    def set_loras(self, adapters: Sequence[tuple[LoraAdapter, float]]) -> None:
        ptrs = ffi.new("struct llama_adapter_lora *[]", [a.ptr for a, _ in adapters] or [ffi.NULL])
        scales = ffi.new("float[]", [s for _, s in adapters] or [0.0])
        if lib.llama_set_adapters_lora(self._ptr, ptrs, len(adapters), scales) != 0:
            raise ContextError("failed to apply LoRA adapters")

    def set_control_vector(self, data: Sequence[float] | None, n_embd: int, il_start: int, il_end: int) -> None:
        """Apply a control vector (``n_embd`` floats per layer from layer 1); None clears it."""
        if data is None:
            rc = lib.llama_set_adapter_cvec(self._ptr, ffi.NULL, 0, n_embd, il_start, il_end)
        else:
            buf = ffi.new("float[]", list(data))
            rc = lib.llama_set_adapter_cvec(self._ptr, buf, len(data), n_embd, il_start, il_end)
        if rc != 0:
            raise ContextError("failed to apply the control vector")

    def perf(self) -> PerfData:
        d = lib.llama_perf_context(self._ptr)
        return PerfData(d.t_load_ms, d.t_p_eval_ms, d.t_eval_ms, d.n_p_eval, d.n_eval)
