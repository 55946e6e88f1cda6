# -*- test-case-name: tests.test_engine -*-
"""A ``llama_context``: KV memory, decode, logits, embeddings. Not thread-safe by
design: exactly one thread (the decode thread) may use a Context.

Embeddings (``ContextParams(embeddings=True)``):

* every token of a batch is an output (libllama ignores the per-token output
  flag in embedding contexts), so :meth:`Context.embeddings_ith` accepts any
  batch index when :attr:`Context.pooling_type` is ``POOLING_NONE``;
* with pooling (mean/cls/last/rank) read one vector per sequence with
  :meth:`Context.embeddings_seq`; for ``POOLING_RANK`` it holds the
  ``n_cls_out`` classifier scores (llama-server's rerank score is element 0).
  Vectors are returned raw: llama-server L2-normalizes pooled vectors itself;
* encoder-only models (BERT & co.) get no KV memory (:attr:`Context.has_memory`
  is False). ``decode`` works for them too (libllama forwards to
  ``llama_encode``), so :meth:`Context.encode` is never needed for them; but
  the whole batch is processed as one micro-batch: ``batch.n_tokens`` must
  not exceed ``n_ubatch``, else libllama aborts the process, so
  :meth:`Context.decode` / :meth:`Context.encode` raise DecodeError first
  (likewise for batches over ``n_batch``, which abort any decode). Every
  decode of such a context starts from scratch (nothing is cached): give
  each sequence its whole input, at positions 0..n-1.
* for pooled embeddings from a causal model (e.g. mean pooling over a
  decoder), a sequence must also fit in one micro-batch and one call, and
  should start from an empty KV sequence: pooling only sees the tokens of
  the micro-batch. llama-server enforces ``n_batch == n_ubatch`` whenever
  embeddings are on, so one decode call is one micro-batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llamatwist.engine.batch import Batch
from llamatwist.engine.errors import ContextError, DecodeError
from llamatwist.engine.model import LoraAdapter, Model
from llamatwist.native.binding import add_log_listener, ffi, lib, remove_log_listener

__all__ = [
    "ATTENTION_CAUSAL",
    "ATTENTION_NON_CAUSAL",
    "ATTENTION_UNSPECIFIED",
    "CACHE_TYPES",
    "FLASH_ATTN",
    "POOLING_CLS",
    "POOLING_LAST",
    "POOLING_MEAN",
    "POOLING_NAMES",
    "POOLING_NONE",
    "POOLING_RANK",
    "POOLING_UNSPECIFIED",
    "ROPE_SCALING",
    "Context",
    "ContextParams",
    "CpuParams",
    "PerfData",
    "max_sequences",
]

# enum llama_pooling_type / llama_attention_type (values from the compiled headers)
POOLING_UNSPECIFIED: int = int(lib.LLAMA_POOLING_TYPE_UNSPECIFIED)  # -1: the model's default
POOLING_NONE: int = int(lib.LLAMA_POOLING_TYPE_NONE)
POOLING_MEAN: int = int(lib.LLAMA_POOLING_TYPE_MEAN)
POOLING_CLS: int = int(lib.LLAMA_POOLING_TYPE_CLS)
POOLING_LAST: int = int(lib.LLAMA_POOLING_TYPE_LAST)
POOLING_RANK: int = int(lib.LLAMA_POOLING_TYPE_RANK)
ATTENTION_UNSPECIFIED: int = int(lib.LLAMA_ATTENTION_TYPE_UNSPECIFIED)  # -1: the model's default
ATTENTION_CAUSAL: int = int(lib.LLAMA_ATTENTION_TYPE_CAUSAL)
ATTENTION_NON_CAUSAL: int = int(lib.LLAMA_ATTENTION_TYPE_NON_CAUSAL)

# Fault injection for the hardening tests: LLAMATWIST_FAULT_DECODE_ABORT=N makes libllama abort the Nth
# llama_decode of every context (its abort callback), so a real decode failure reaches the runtime.
log = logging.getLogger(__name__)

_FAULT_DECODE_ABORT = "LLAMATWIST_FAULT_DECODE_ABORT"
_aborting: set[int] = set()  # contexts (by handle) whose current decode is to abort


@ffi.def_extern()  # type: ignore[misc]
def _llamatwist_abort_cb(data: Any) -> bool:
    return int(ffi.cast("intptr_t", data)) in _aborting

#: llama-server's ``-ctk``/``-ctv`` KV cache types.
CACHE_TYPES: dict[str, int] = {
    name: int(getattr(lib, f"GGML_TYPE_{name.upper()}"))
    for name in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
}

#: ``-fa`` values
FLASH_ATTN: dict[str, int] = {
    "auto": int(lib.LLAMA_FLASH_ATTN_TYPE_AUTO),
    "off": int(lib.LLAMA_FLASH_ATTN_TYPE_DISABLED),
    "on": int(lib.LLAMA_FLASH_ATTN_TYPE_ENABLED),
}

#: llama-server's ``--pooling`` names.
POOLING_NAMES: dict[str, int] = {
    "none": POOLING_NONE,
    "mean": POOLING_MEAN,
    "cls": POOLING_CLS,
    "last": POOLING_LAST,
    "rank": POOLING_RANK,
}


@dataclass(frozen=True)
class CpuParams:
    """A ggml thread pool: -C/-Cr (cpus), --cpu-strict, --prio, --poll (and their -batch forms)."""

    cpus: tuple[int, ...] = ()  # the affinity mask's CPUs; () = the default affinity
    strict: bool = False  # one CPU per thread, in mask order
    prio: int = 0  # GGML_SCHED_PRIO_*: -1 low ... 3 realtime
    poll: int = 50  # 0 = no polling ... 100 = aggressive


@dataclass(frozen=True)
class ContextParams:
    n_ctx: int = 0
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_outputs_max: int = 0  # most outputs (logits rows) one decode may ask for; 0: n_batch (at least n_seq_max)
    n_threads: int = 4
    n_threads_batch: int = 4
    kv_unified: bool = True
    embeddings: bool = False
    pooling: int = -1  # LLAMA_POOLING_TYPE_*; -1 = the model's default (NONE when it has none)
    attention: int = -1  # LLAMA_ATTENTION_TYPE_*; -1 = the model's default
    type_k: str = "f16"  # KV cache element types (names in CACHE_TYPES)
    type_v: str = "f16"
    flash_attn: int = -1  # LLAMA_FLASH_ATTN_TYPE_*: -1 auto, 0 off, 1 on
    offload_kqv: bool = True
    op_offload: bool = True  # --op-offload/--no-op-offload: host tensor operations offloaded to the device
    swa_full: bool = False  # --swa-full: a full-size KV cache for sliding-window attention layers
    # RoPE/YaRN; 0 or negative = the model's value, as llama_context_params
    rope_scaling: int = -1  # LLAMA_ROPE_SCALING_TYPE_*; -1 = the model's
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    yarn_orig_ctx: int = 0
    yarn_ext_factor: float = -1.0
    yarn_attn_factor: float = -1.0
    yarn_beta_slow: float = -1.0
    yarn_beta_fast: float = -1.0
    perf: bool = True  # libllama's internal timings (--no-perf turns them off)
    mtp: bool = False  # a multi-token-prediction context: it runs the model's NextN head (--spec-type draft-mtp)
    cpu: CpuParams | None = None  # thread pools attached to the context; None = ggml's own
    cpu_batch: CpuParams | None = None  # None = same as cpu


#: --rope-scaling names
ROPE_SCALING: dict[str, int] = {
    "none": int(lib.LLAMA_ROPE_SCALING_TYPE_NONE),
    "linear": int(lib.LLAMA_ROPE_SCALING_TYPE_LINEAR),
    "yarn": int(lib.LLAMA_ROPE_SCALING_TYPE_YARN),
}


def max_sequences() -> int:
    """The most sequence ids a context can have (LLAMA_MAX_SEQ)."""
    return int(lib.llama_max_parallel_sequences())


@dataclass(frozen=True)
class PerfData:
    t_load_ms: float
    t_p_eval_ms: float
    t_eval_ms: float
    n_p_eval: int
    n_eval: int
    n_reused: int  # graphs reused instead of built again (0 with --no-perf)


_DECODE_ERRORS = {
    1: "could not find a KV slot for the batch (context full)",
    2: "decode aborted",
    -1: "invalid batch",
}


def _pool_params(cpu: CpuParams, n_threads: int) -> Any:
    tpp = ffi.new("struct ggml_threadpool_params *")
    lib.ggml_threadpool_params_init(tpp, n_threads)
    for i in cpu.cpus:
        tpp.cpumask[i] = True
    tpp.strict_cpu = cpu.strict
    tpp.prio = cpu.prio
    tpp.poll = cpu.poll
    return tpp


def _attach_threadpools(ctx: Any, params: ContextParams) -> list[Any]:
    """llama.cpp's common_threadpools: a batch pool when it differs, the generation pool paused until used."""
    if params.cpu is None and params.cpu_batch is None:
        return []
    cpu = params.cpu or CpuParams()
    cpu_batch = params.cpu_batch or cpu
    tpp = _pool_params(cpu, params.n_threads)
    pools: list[Any] = []
    batch = ffi.NULL
    if (cpu_batch, params.n_threads_batch) != (cpu, params.n_threads):
        batch = lib.ggml_threadpool_new(_pool_params(cpu_batch, params.n_threads_batch))
        if batch == ffi.NULL:
            raise ContextError(f"failed to create the batch thread pool of {params.n_threads_batch} threads")
        pools.append(ffi.gc(batch, lib.ggml_threadpool_free))
        tpp.paused = True
    pool = lib.ggml_threadpool_new(tpp)
    if pool == ffi.NULL:
        raise ContextError(f"failed to create the thread pool of {params.n_threads} threads")
    pools.append(ffi.gc(pool, lib.ggml_threadpool_free))
    lib.llama_attach_threadpool(ctx, pool, batch)
    return pools


class Context:
    def __init__(self, model: Model, params: ContextParams, other: Context | None = None) -> None:
        """``other``: the target context of a draft model's (EAGLE-3 drafts borrow its token embeddings and
        output matrix, a Gemma 4 assistant its KV cache); it must outlive this one."""
        p = lib.llama_context_default_params()
        if params.mtp:
            p.ctx_type = lib.LLAMA_CONTEXT_TYPE_MTP
        if other is not None:
            p.ctx_other = other.ptr
        p.n_ctx = params.n_ctx
        p.n_batch = params.n_batch
        p.n_ubatch = params.n_ubatch
        p.n_seq_max = params.n_seq_max
        # libllama reserves outputs for at least one per sequence and asserts they are at most
        # n_outputs_max (default n_batch, itself capped by n_ctx): many sequences with a
        # small -b or -c would abort at the first decode. The compute buffers hold logits for
        # min(n_ubatch, n_outputs_max) rows: a generation context asks for fewer (loading.py).
        # Models with an encoder ignore the field, so they must fit their sequences in the batch.
        p.n_outputs_max = max(params.n_outputs_max or params.n_batch, params.n_seq_max)
        if model.info().has_encoder and params.n_seq_max > min(params.n_batch, params.n_ctx or params.n_batch):
            raise ContextError(
                f"{params.n_seq_max} sequences do not fit a batch of {min(params.n_batch, params.n_ctx or params.n_batch)}"
                " tokens for a model with an encoder: raise -b/--batch-size (and -c) or lower -np"
            )
        p.n_threads = params.n_threads
        p.n_threads_batch = params.n_threads_batch
        p.kv_unified = params.kv_unified
        p.op_offload = params.op_offload
        p.swa_full = params.swa_full
        p.embeddings = params.embeddings
        p.pooling_type = params.pooling
        p.attention_type = params.attention
        p.type_k = CACHE_TYPES[params.type_k]
        p.type_v = CACHE_TYPES[params.type_v]
        p.flash_attn_type = params.flash_attn
        p.offload_kqv = params.offload_kqv
        p.rope_scaling_type = params.rope_scaling
        p.rope_freq_base = params.rope_freq_base
        p.rope_freq_scale = params.rope_freq_scale
        p.yarn_orig_ctx = params.yarn_orig_ctx
        p.yarn_ext_factor = params.yarn_ext_factor
        p.yarn_attn_factor = params.yarn_attn_factor
        p.yarn_beta_slow = params.yarn_beta_slow
        p.yarn_beta_fast = params.yarn_beta_fast
        p.no_perf = not params.perf
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
        self._pools = _attach_threadpools(ptr, params)
        self._n_decode = 0
        self._fault_at = int(os.environ.get(_FAULT_DECODE_ABORT, "0") or 0)
        if self._fault_at > 0:
            log.warning("%s=%d: the context's decode number %d will abort", _FAULT_DECODE_ABORT,
                        self._fault_at, self._fault_at)
            lib.llama_set_abort_callback(ptr, lib._llamatwist_abort_cb, ffi.cast("void *", id(self)))
        self._mem = lib.llama_get_memory(ptr)
        self._mirror: Context | None = None
        self.model = model
        self.n_ctx: int = lib.llama_n_ctx(ptr)
        self.n_ctx_seq: int = lib.llama_n_ctx_seq(ptr)
        self.n_batch: int = lib.llama_n_batch(ptr)
        self.n_ubatch: int = lib.llama_n_ubatch(ptr)
        self.n_seq_max: int = lib.llama_n_seq_max(ptr)
        self.kv_unified: bool = bool(params.kv_unified)  # one KV pool for every sequence
        #: the most outputs one decode may have (more aborts the process: libllama asserts it)
        self.n_outputs_max: int = int(p.n_outputs_max)
        self.n_vocab: int = model.vocab.n_tokens
        self.n_embd: int = lib.llama_model_n_embd(model.ptr)
        self._n_layer: int = lib.llama_model_n_layer(model.ptr)  # layer n_layer's "input": the final state
        self._n_embd_out: int = lib.llama_model_n_embd_out(model.ptr)  # a NextN hidden state's width
        self.n_cls_out: int = lib.llama_model_n_cls_out(model.ptr)
        #: the effective LLAMA_POOLING_TYPE_* (the model's default resolved)
        self.pooling_type: int = int(lib.llama_pooling_type(ptr))
        self.embeddings: bool = params.embeddings
        #: False for encoder-only models (BERT): no KV cache, one micro-batch per call
        self.has_memory: bool = self._mem != ffi.NULL
        self._attention = params.attention

    @property
    def ptr(self) -> Any:
        return self._ptr

    def close(self) -> None:
        if self._ptr is not None:
            if self._pools:
                lib.llama_detach_threadpool(self._ptr)
            ffi.release(self._ptr)
            self._ptr = None
        for pool in self._pools:
            ffi.release(pool)
        self._pools = []

    def decode(self, batch: Batch) -> None:
        """Run the model over ``batch`` (cffi releases the GIL during the call).

        Works for every model, encoder-only embedding models included: libllama
        forwards a decode on a context without KV memory to ``llama_encode``.
        """
        self._check_batch(batch)
        self._n_decode += 1
        abort = self._n_decode == self._fault_at
        if abort:
            _aborting.add(id(self))
        try:
            rc = lib.llama_decode(self._ptr, batch.native)
        finally:
            if abort:
                _aborting.discard(id(self))
        if rc != 0:
            raise DecodeError(rc, _DECODE_ERRORS.get(rc, f"llama_decode failed ({rc})"))

    def encode(self, batch: Batch) -> None:
        """Run the encoder over ``batch`` (non-causal, all tokens output, no KV memory).

        Only needed for encoder-decoder models (T5), which must encode before
        decoding, and EAGLE-3 drafts (their feature projection); for BERT-like
        embedding models :meth:`decode` is equivalent.
        """
        self._check_batch(batch)
        if batch.n_tokens > self.n_ubatch:
            # llama_encode asserts (aborts the process) when the batch does not fit one micro-batch
            raise DecodeError(-1, self._too_large(batch.n_tokens))
        rc = lib.llama_encode(self._ptr, batch.native)
        if rc != 0:
            raise DecodeError(rc, _DECODE_ERRORS.get(rc, f"llama_encode failed ({rc})"))

    def _check_batch(self, batch: Batch) -> None:
        # libllama asserts (aborts the process) on these instead of returning an error
        n = batch.n_tokens
        if n == 0:
            raise DecodeError(-1, "empty batch")
        if n > self.n_batch:
            raise DecodeError(-1, f"batch of {n} tokens exceeds n_batch ({self.n_batch})")
        if n > self.n_ubatch and not self._causal_attn():
            # non-causal attention (encoders, or --attention non-causal) needs the batch in one micro-batch
            raise DecodeError(-1, self._too_large(n))

    def _causal_attn(self) -> bool:
        if not self.has_memory or self._attention == ATTENTION_NON_CAUSAL:
            return False
        get = getattr(lib, "llama_get_causal_attn", None)  # used once declared in the cdef
        return True if get is None else bool(get(self._ptr))

    def _too_large(self, n_tokens: int) -> str:
        return (f"input ({n_tokens} tokens) is too large to process. increase the physical batch size "
                f"(current batch size: {self.n_ubatch})")

    def logits(self, idx: int) -> npt.NDArray[np.float32]:
        """Logits of batch output ``idx`` (a copy: the buffer is reused next decode)."""
        return self.logits_view(idx).copy()

    def logits_view(self, idx: int) -> npt.NDArray[np.float32]:
        """A writable view of libllama's logits row ``idx``, valid until the next
        decode: masking it in place (constraints) steers the sampler chain."""
        ptr = lib.llama_get_logits_ith(self._ptr, idx)
        if ptr == ffi.NULL:
            raise IndexError(f"no logits for batch index {idx}")
        return np.frombuffer(ffi.buffer(ptr, self.n_vocab * 4), dtype=np.float32)

    # -- embeddings -----------------------------------------------------
    def embeddings_seq(self, seq_id: int) -> npt.NDArray[np.float32]:
        """Pooled output of sequence ``seq_id`` from the last decode (a copy).

        ``n_embd`` floats for mean/cls/last pooling, ``n_cls_out`` scores for
        rank pooling; unnormalized. Raises LookupError when there is none
        (pooling NONE, not an embedding context, or the sequence was not in
        the last batch).
        """
        if self.pooling_type == POOLING_NONE:
            raise LookupError("pooled embeddings need a pooling type other than none")
        ptr = lib.llama_get_embeddings_seq(self._ptr, seq_id)
        if ptr == ffi.NULL:
            raise LookupError(f"no pooled embeddings for sequence {seq_id}")
        n = self.n_cls_out if self.pooling_type == POOLING_RANK else self.n_embd
        return np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32).copy()

    def embeddings_ith(self, i: int) -> npt.NDArray[np.float32]:
        """Per-token embedding (last hidden state, ``n_embd`` floats) of batch index ``i`` (a copy).

        Meant for pooling NONE; negative ``i`` counts from the last output.
        """
        ptr = lib.llama_get_embeddings_ith(self._ptr, i)
        if ptr == ffi.NULL:
            raise IndexError(f"no embeddings for batch index {i}")
        return np.frombuffer(ffi.buffer(ptr, self.n_embd * 4), dtype=np.float32).copy()

    # -- multi-token prediction -----------------------------------------
    def set_nextn_outputs(self, on: bool, *, every_token: bool) -> None:
        """Output the hidden states a NextN head takes: of every token of a batch (``every_token``: the
        target, whose every row pairs with the next token), else of the output tokens only (the MTP
        context, whose own output state feeds its next draft step)."""
        lib.llamatwist_set_embeddings_nextn(self._ptr, on, not every_token)

    def nextn_states(self, n_rows: int) -> npt.NDArray[np.float32]:
        """The NextN hidden states of the last decode's first ``n_rows`` tokens (every token output), as an
        ``(n_rows, n_embd_out)`` view valid until the next decode."""
        ptr = lib.llamatwist_get_embeddings_nextn(self._ptr)
        if ptr == ffi.NULL:
            raise LookupError("the context does not output NextN hidden states")
        n_embd = self._n_embd_out
        return np.frombuffer(ffi.buffer(ptr, n_rows * n_embd * 4), dtype=np.float32).reshape(n_rows, n_embd)

    def nextn_state(self, idx: int) -> npt.NDArray[np.float32]:
        """The NextN hidden state of batch output ``idx`` of the last decode (a copy)."""
        ptr = lib.llamatwist_get_embeddings_nextn_ith(self._ptr, idx)
        if ptr == ffi.NULL:
            raise IndexError(f"no NextN hidden state for batch index {idx}")
        return np.frombuffer(ffi.buffer(ptr, self._n_embd_out * 4), dtype=np.float32).copy()

    def set_nextn_head(self, head: int) -> None:
        """Which of the model's NextN heads an MTP context runs (models with several chain them)."""
        lib.llamatwist_set_nextn_layer_offset(self._ptr, head)

    # -- EAGLE-3 --------------------------------------------------------
    def set_layer_inputs(self, layers: Sequence[int]) -> None:
        """Output, for every token of a batch, the hidden state at the input of each of ``layers`` (the model's
        n_layer: its final state, the NextN one)."""
        n_layer = self._n_layer
        for lid in layers:
            if not 0 <= lid <= n_layer:
                raise ValueError(f"layer {lid} is not one of the model's {n_layer} layers")
            if lid == n_layer:
                self.set_nextn_outputs(True, every_token=True)
            else:
                lib.llamatwist_set_embeddings_layer_inp(self._ptr, lid, True)

    def layer_inputs(self, lid: int, n_rows: int) -> npt.NDArray[np.float32]:
        """The hidden states at the input of layer ``lid`` (see `set_layer_inputs`) of the last decode's first
        ``n_rows`` tokens, an ``(n_rows, n_embd)`` view valid until the next decode."""
        if lid == self._n_layer:
            return self.nextn_states(n_rows)
        ptr = lib.llamatwist_get_embeddings_layer_inp(self._ptr, lid)
        if ptr == ffi.NULL:
            raise LookupError(f"the context does not output the input of layer {lid}")
        n_embd = self.n_embd
        return np.frombuffer(ffi.buffer(ptr, n_rows * n_embd * 4), dtype=np.float32).reshape(n_rows, n_embd)

    def set_causal_attn(self, on: bool) -> None:
        """Causal attention (the default) or not: a DFlash draft's block attends both ways."""
        lib.llama_set_causal_attn(self._ptr, on)

    def set_embeddings(self, on: bool) -> None:
        """Switch embedding output on/off for the next decodes (pooling stays as created)."""
        lib.llama_set_embeddings(self._ptr, on)
        self.embeddings = on

    # -- KV memory ------------------------------------------------------
    def reads_memory_of(self, other: Context) -> bool:
        """Whether this MTP context attends over ``other``'s KV cache instead of a cache of its own (a Gemma 4
        assistant's: libllama keeps the context it was made beside only then): its own KV edits are no-ops."""
        return bool(lib.llamatwist_get_ctx_other(self._ptr) == other.ptr)

    def mirror_memory(self, other: Context | None) -> None:
        """Repeat this context's KV edits (remove, copy, shift, clear) on ``other`` (None: stop): an MTP
        context's cells then stay where the target's are, whatever the prefix cache and context shift do
        (llama-server's slot memory spans both contexts likewise)."""
        self._mirror = other

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        if self._mirror is not None:
            self._mirror.seq_rm(seq_id, p0, p1)
        return bool(lib.llama_memory_seq_rm(self._mem, seq_id, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        if self._mirror is not None:
            self._mirror.seq_cp(src, dst, p0, p1)
        lib.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        if self._mirror is not None:
            self._mirror.seq_add(seq_id, p0, p1, delta)
        lib.llama_memory_seq_add(self._mem, seq_id, p0, p1, delta)

    def seq_pos_max(self, seq_id: int) -> int:
        return int(lib.llama_memory_seq_pos_max(self._mem, seq_id))

    def seq_pos_min(self, seq_id: int) -> int:
        """The smallest position the memory still holds for ``seq_id`` (-1: none); above 0 once a
        sliding window has dropped the oldest cells."""
        return int(lib.llama_memory_seq_pos_min(self._mem, seq_id))

    def can_shift(self) -> bool:
        return bool(lib.llama_memory_can_shift(self._mem))

    def clear(self) -> None:
        if self._mirror is not None:
            self._mirror.clear()
        lib.llama_memory_clear(self._mem, True)

    # -- per-sequence state --------------------------------------------
    def seq_state(self, seq_id: int) -> bytes:
        size = lib.llama_state_seq_get_size(self._ptr, seq_id)
        buf = ffi.new("uint8_t[]", size)
        n = lib.llama_state_seq_get_data(self._ptr, buf, size, seq_id)
        return bytes(ffi.buffer(buf, n))

    def set_seq_state(self, seq_id: int, data: bytes) -> bool:
        if self._mirror is not None:  # the state holds none of the mirror's cells: it starts that sequence afresh
            self._mirror.seq_rm(seq_id, -1, -1)
        return lib.llama_state_seq_set_data(self._ptr, data, len(data), seq_id) > 0

    def partial_state(self, seq_id: int) -> bytes:
        """The part of ``seq_id``'s state that cannot be cut part-way (the sliding-window KV cache,
        recurrent state): what a context checkpoint keeps."""
        flags = lib.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        size = lib.llama_state_seq_get_size_ext(self._ptr, seq_id, flags)
        buf = ffi.new("uint8_t[]", size)
        n = lib.llama_state_seq_get_data_ext(self._ptr, buf, size, seq_id, flags)
        return bytes(ffi.buffer(buf, n))

    def set_partial_state(self, seq_id: int, data: bytes) -> bool:
        """Restore what :meth:`partial_state` returned; False when libllama refuses it."""
        flags = lib.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        return lib.llama_state_seq_set_data_ext(self._ptr, data, len(data), seq_id, flags) > 0

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
        return PerfData(d.t_load_ms, d.t_p_eval_ms, d.t_eval_ms, d.n_p_eval, d.n_eval, d.n_reused)
