# -*- test-case-name: tests.test_engine -*-
"""A loaded GGUF model and its vocabulary."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llamatwist.engine.errors import ModelLoadError
from llamatwist.native.binding import (
    add_log_listener,
    backend_init,
    ffi,
    lib,
    native_errors,
    remove_log_listener,
)

__all__ = ["LAZY_MODES", "LOAD_MODES", "SPLIT_MODES", "Device", "FimTokens", "LoraAdapter", "Model", "ModelInfo", "Placement", "Vocab", "backend_name", "buffer_types", "devices", "max_devices", "model_params", "numa_init", "offloaded_layers"]

GGUF_MAGIC = b"GGUF"

# Only one load at a time may capture native log lines for its error message.
_load_lock = threading.Lock()
_progress_callbacks: dict[int, Callable[[float], bool]] = {}


@ffi.def_extern()  # type: ignore[misc]
def _llamatwist_progress_cb(progress: float, user_data: Any) -> bool:
    cb = _progress_callbacks.get(int(ffi.cast("intptr_t", user_data)))
    return True if cb is None else bool(cb(float(progress)))


@dataclass(frozen=True)
class ModelInfo:
    path: str
    desc: str
    n_ctx_train: int
    n_embd: int
    n_vocab: int
    n_params: int
    size: int
    vocab_type: int
    has_encoder: bool
    has_decoder: bool
    n_cls_out: int
    n_layer: int = 0
    ftype: str = ""  # the file type's name (llama_ftype_name): "Q4_1", "F32", ...


#: -lm/--load-mode names (llama_load_mode)
LOAD_MODES: dict[str, int] = {
    "auto": int(lib.LLAMA_LOAD_MODE_AUTO),
    "none": int(lib.LLAMA_LOAD_MODE_NONE),
    "mmap": int(lib.LLAMA_LOAD_MODE_MMAP),
    "mlock": int(lib.LLAMA_LOAD_MODE_MLOCK),
    "mmap+mlock": int(lib.LLAMA_LOAD_MODE_MMAP_MLOCK),
    "dio": int(lib.LLAMA_LOAD_MODE_DIRECT_IO),
}
#: -lzm/--lazy-mode names (llama_lazy_mode)
LAZY_MODES: dict[str, int] = {
    "on": int(lib.LLAMA_LAZY_MODE_ON),
    "auto": int(lib.LLAMA_LAZY_MODE_AUTO),
    "off": int(lib.LLAMA_LAZY_MODE_OFF),
}
_KV_TAGS = {
    "int": int(lib.LLAMA_KV_OVERRIDE_TYPE_INT),
    "float": int(lib.LLAMA_KV_OVERRIDE_TYPE_FLOAT),
    "bool": int(lib.LLAMA_KV_OVERRIDE_TYPE_BOOL),
    "str": int(lib.LLAMA_KV_OVERRIDE_TYPE_STR),
}


_logger = logging.getLogger(__name__)
_WEIGHT_BUFFER_RE = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s*([\d.]+) MiB")

#: -sm/--split-mode names
SPLIT_MODES: dict[str, int] = {
    "none": int(lib.LLAMA_SPLIT_MODE_NONE),
    "layer": int(lib.LLAMA_SPLIT_MODE_LAYER),
    "row": int(lib.LLAMA_SPLIT_MODE_ROW),
    "tensor": int(lib.LLAMA_SPLIT_MODE_TENSOR),
}
_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}
#: device kinds llama.cpp offloads layers to (an accel device, e.g. BLAS, only runs ops)
OFFLOAD_KINDS = ("gpu", "igpu")
_ALL_LAYERS = 999  # -ngl -1 (auto/all), as the load passes it


@dataclass(frozen=True)
class Device:
    """One ggml backend device of this build."""

    name: str
    description: str
    kind: str  # cpu | gpu | igpu | accel
    total: int  # bytes
    free: int
    buffer_type: str | None


def _devices() -> list[Any]:
    backend_init()
    return [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]


def devices() -> list[Device]:
    """The backend devices this build has (the CPU included), as ggml lists them."""
    out = []
    for dev in _devices():
        free, total = ffi.new("size_t *"), ffi.new("size_t *")
        lib.ggml_backend_dev_memory(dev, free, total)
        buft = lib.ggml_backend_dev_buffer_type(dev)
        out.append(Device(
            name=ffi.string(lib.ggml_backend_dev_name(dev)).decode(),
            description=ffi.string(lib.ggml_backend_dev_description(dev)).decode(),
            kind=_DEV_TYPES.get(int(lib.ggml_backend_dev_type(dev)), "other"),
            total=int(total[0]), free=int(free[0]),
            buffer_type=ffi.string(lib.ggml_backend_buft_name(buft)).decode() if buft != ffi.NULL else None,
        ))
    return out


def backend_name(found: Sequence[Device]) -> str:
    """The GPU backend these devices belong to ("Vulkan", "CUDA", "MTL"...), "CPU" when there is none.

    ggml names a backend's devices after it (Vulkan0, CUDA1): the name less its index.
    """
    names = sorted({re.sub(r"\d+$", "", d.name) for d in found if d.kind in OFFLOAD_KINDS})
    return ", ".join(names) or "CPU"


def offloaded_layers(n_gpu_layers: int, n_layer: int, selected: Sequence[str] | None) -> int:
    """How many of the model's n_layer + 1 layers (the output layer counts) go to a GPU.

    llama.cpp's rule (llama_model::load_tensors): the last min(-ngl, n_layer + 1)
    layers, none when no GPU device is in use -- ``selected`` is -dev's list
    (None: every GPU device of the build, (): none).  llama.cpp's own "offloaded
    N/M layers" log line ignores -dev none; this does not.
    """
    gpus = [d.name for d in devices() if d.kind in OFFLOAD_KINDS] if selected is None else list(selected)
    if not gpus:
        return 0
    return min(n_gpu_layers if n_gpu_layers >= 0 else _ALL_LAYERS, n_layer + 1)


def buffer_types() -> dict[str, Any]:
    """-ot's buffer type names: each device's default buffer type (llama.cpp's list)."""
    out = {}
    for dev in _devices():
        buft = lib.ggml_backend_dev_buffer_type(dev)
        if buft != ffi.NULL:
            out[ffi.string(lib.ggml_backend_buft_name(buft)).decode()] = buft
    return out


_NUMA = {"distribute": 1, "isolate": 2, "numactl": 3}  # GGML_NUMA_STRATEGY_*


def numa_init(strategy: str) -> None:
    """--numa: llama.cpp's llama_numa_init, once, before the model loads."""
    backend_init()
    lib.llama_numa_init(_NUMA[strategy])


def max_devices() -> int:
    return int(lib.llama_max_devices())


@dataclass(frozen=True)
class Placement:
    """Where the weights go: -dev, -ot, -sm, -mg, -ts (validated by the CLI against `devices`)."""

    devices: tuple[str, ...] | None = None  # None: every GPU device; (): none (the CPU only)
    tensor_overrides: tuple[tuple[str, str], ...] = ()  # (tensor name regex, buffer type name)
    split_mode: str = "layer"
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()
    repack: bool = True  # --repack/--no-repack: extra buffer types (CPU weight repacking)
    no_host: bool = False  # --no-host: bypass the host buffer so that extra buffers can be used


def _placement(params: Any, placement: Placement, keep: list[Any]) -> None:
    """Fill `params`; the arrays it points to are appended to `keep` (alive during the load)."""
    params.split_mode = SPLIT_MODES[placement.split_mode]
    params.main_gpu = placement.main_gpu
    params.use_extra_bufts = placement.repack
    params.no_host = placement.no_host
    if placement.devices is not None:
        devs = [lib.ggml_backend_dev_by_name(name.encode()) for name in placement.devices]
        arr = ffi.new("ggml_backend_dev_t[]", [*devs, ffi.NULL])
        keep.append(arr)
        params.devices = arr
    if placement.tensor_overrides:
        bufts = buffer_types()
        patterns = [ffi.new("char[]", pattern.encode()) for pattern, _ in placement.tensor_overrides]
        arr = ffi.new("struct llama_model_tensor_buft_override[]", len(patterns) + 1)
        for entry, pattern, (_, buft) in zip(arr, patterns, placement.tensor_overrides):
            entry.pattern = pattern
            entry.buft = bufts[buft]
        keep += [patterns, arr]
        params.tensor_buft_overrides = arr
    if placement.tensor_split:
        split = ffi.new("float[]", [*placement.tensor_split, *[0.0] * (max_devices() - len(placement.tensor_split))])
        keep.append(split)
        params.tensor_split = split


def _kv_overrides(items: Sequence[tuple[str, str, str]]) -> Any:
    """The llama_model_kv_override array, ended by an empty key (the loader's sentinel)."""
    arr = ffi.new("struct llama_model_kv_override[]", len(items) + 1)
    for entry, (key, kind, value) in zip(arr, items):
        entry.tag = _KV_TAGS[kind]
        entry.key = key.encode()[:127]
        if kind == "int":
            entry.val_i64 = int(value)
        elif kind == "float":
            entry.val_f64 = float(value)
        elif kind == "bool":
            entry.val_bool = value == "true"
        else:
            entry.val_str = value.encode()[:127]
    return arr


def model_params(*, n_gpu_layers: int = -1, vocab_only: bool = False, load_mode: str = "auto",
                 lazy_mode: str = "auto", check_tensors: bool = False, load_mtp: bool = False) -> Any:
    """The llama_model_params (by value, as libllama takes them) for these settings; Model adds the
    placement, the KV overrides and the progress callback."""
    params = lib.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else _ALL_LAYERS
    params.vocab_only = vocab_only
    params.load_mode = LOAD_MODES[load_mode]
    params.lazy_mode = LAZY_MODES[lazy_mode]
    params.check_tensors = check_tensors
    params.load_mtp = load_mtp
    return params


def _mem_available() -> int | None:
    """Bytes of memory the kernel says are available (Linux), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(path: str, load_mode: str, n_gpu_layers: int) -> None:
    """A model that cannot fit: a clear error before libllama tries (a failed allocation midway, or the
    kernel's OOM killer under --mlock). Mapped (the default), a larger-than-RAM model still works, paged in
    from the file: only a warning then. Weights offloaded to a GPU need no host memory: not checked."""
    available = _mem_available()
    if available is None or (n_gpu_layers != 0 and any(d.kind != "cpu" for d in devices())):
        return
    size = os.path.getsize(path)
    if size <= available:
        return
    gib = 1024**3
    what = f"model file {path} is {size / gib:.1f} GiB but only {available / gib:.1f} GiB of memory is available"
    if load_mode in ("auto", "mmap"):
        logging.getLogger(__name__).warning("%s: it will be paged in from the file as it runs (slowly)", what)
        return
    raise ModelLoadError(f"{what}; -lm {load_mode} needs it all in memory (the default -lm auto maps the "
                         "file instead)")


def _read_magic(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


class Model:
    """Owns a ``llama_model``; freed by :meth:`close` (or on garbage collection)."""

    def __init__(
        self,
        path: str,
        *,
        n_gpu_layers: int = -1,
        vocab_only: bool = False,
        progress: Callable[[float], bool] | None = None,
        load_mode: str = "auto",
        lazy_mode: str = "auto",
        check_tensors: bool = False,
        kv_overrides: Sequence[tuple[str, str, str]] = (),
        placement: Placement | None = None,
        no_alloc: bool = False,
        load_mtp: bool = False,
    ) -> None:
        """``no_alloc``: the metadata only, allocations simulated (what --fit measures); ``load_mtp``: the
        multi-token-prediction (NextN) layers too, which libllama skips otherwise (--spec-type draft-mtp)."""
        if not os.path.exists(path):
            raise ModelLoadError(f"model file not found: {path}")
        if os.path.isdir(path):
            raise ModelLoadError(f"model path is a directory, not a GGUF file: {path}")
        try:
            magic = _read_magic(path)
        except OSError as exc:
            raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from None
        if magic != GGUF_MAGIC:
            raise ModelLoadError(f"not a GGUF file (bad magic {magic!r}): {path}")
        if not (vocab_only or no_alloc):
            _check_memory(path, load_mode, n_gpu_layers)

        backend_init()
        params = model_params(n_gpu_layers=n_gpu_layers, vocab_only=vocab_only,
                              load_mode="none" if no_alloc else load_mode, lazy_mode=lazy_mode,
                              check_tensors=check_tensors, load_mtp=load_mtp)
        params.no_alloc = no_alloc
        overrides = _kv_overrides(kv_overrides)
        if kv_overrides:
            params.kv_overrides = overrides
        keep: list[Any] = []  # the placement's arrays, alive until the load returns
        if placement is not None:
            _placement(params, placement, keep)
        key = id(self)
        if progress is not None:
            _progress_callbacks[key] = progress
            params.progress_callback = lib._llamatwist_progress_cb
            params.progress_callback_user_data = ffi.cast("void *", key)

        errors: list[str] = []
        weights: list[str] = []  # "<buffer type> <size> MiB" per weight buffer, from the load's log

        def capture(level: int, line: str) -> None:
            if level >= logging.ERROR:
                errors.append(line)
            elif m := _WEIGHT_BUFFER_RE.search(line):
                weights.append(f"{m[1]} {m[2]} MiB")

        with _load_lock:
            add_log_listener(capture)
            try:
                ptr = lib.llama_model_load_from_file(os.fsencode(path), params)
            finally:
                remove_log_listener(capture)
                _progress_callbacks.pop(key, None)
        if ptr == ffi.NULL:
            raise ModelLoadError(_load_failure_message(path, errors))
        self._ptr = ffi.gc(ptr, lib.llama_model_free)
        self._loras: list[LoraAdapter] = []  # freed before the model, which frees what is left of them itself
        self.path = path
        self.vocab = Vocab(lib.llama_model_get_vocab(ptr), self)
        if not (vocab_only or no_alloc):
            # llama.cpp says this only at its INFO level (DEBUG here); where the weights went matters.
            n_layer = int(lib.llama_model_n_layer(ptr))
            selected = placement.devices if placement is not None else None
            _logger.info("%s: offloaded %d/%d layers to the GPU; weights: %s", os.path.basename(path),
                         offloaded_layers(n_gpu_layers, n_layer, selected), n_layer + 1,
                         ", ".join(weights) or "?")

    # -- native handle (engine-internal) ---------------------------------
    @property
    def ptr(self) -> Any:
        if self._ptr is None:
            raise RuntimeError("model is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr is not None:
            # llama_model_free frees the model's adapters too: each must go first, or its own destructor
            # frees it a second time later (heap corruption; found as a crash after a sleep with --lora)
            for adapter in self._loras:
                adapter.close()
            self._loras.clear()
            ffi.release(self._ptr)
            self._ptr = None

    # -- metadata ----------------------------------------------------------
    def info(self) -> ModelInfo:
        p = self.ptr
        buf = ffi.new("char[]", 256)
        lib.llama_model_desc(p, buf, 256)
        return ModelInfo(
            path=self.path,
            desc=ffi.string(buf).decode("utf-8", "replace"),
            n_ctx_train=lib.llama_model_n_ctx_train(p),
            n_embd=lib.llama_model_n_embd(p),
            n_vocab=self.vocab.n_tokens,
            n_params=lib.llama_model_n_params(p),
            size=lib.llama_model_size(p),
            vocab_type=lib.llama_vocab_type(self.vocab.ptr),
            has_encoder=lib.llama_model_has_encoder(p),
            has_decoder=lib.llama_model_has_decoder(p),
            n_cls_out=lib.llama_model_n_cls_out(p),
            n_layer=lib.llama_model_n_layer(p),
            ftype=ffi.string(lib.llama_ftype_name(lib.llama_model_ftype(p))).decode("utf-8", "replace"),
        )

    def can_share_kv(self) -> bool:
        """Whether KV cells may be shared between sequences and cut at any
        position: not for recurrent/hybrid memory or sliding-window attention."""
        p = self.ptr
        return not (lib.llama_model_is_recurrent(p) or lib.llama_model_is_hybrid(p) or lib.llama_model_n_swa(p) > 0)

    def n_swa(self) -> int:
        """The sliding-window attention size in tokens; 0 without sliding-window layers."""
        return int(lib.llama_model_n_swa(self.ptr))

    def n_nextn_layers(self) -> int:
        """The model's multi-token-prediction (NextN) heads: what --spec-type draft-mtp drafts with."""
        return int(lib.llama_model_n_layer_nextn(self.ptr))

    def n_embd_out(self) -> int:
        """The width of the model's output hidden state (what a NextN head takes beside the token)."""
        return int(lib.llama_model_n_embd_out(self.ptr))

    def n_embd_inp(self) -> int:
        """The width of the model's input embeddings (what an embedding batch's rows hold)."""
        return int(lib.llama_model_n_embd_inp(self.ptr))

    def n_pos_per_embd(self) -> int:
        """Positions per embedding-batch row: 4 for M-RoPE models (section-major), else 1."""
        mrope = (lib.LLAMA_ROPE_TYPE_MROPE, lib.LLAMA_ROPE_TYPE_IMROPE)
        return 4 if lib.llama_model_rope_type(self.ptr) in mrope else 1

    def target_layer_ids(self) -> list[int]:
        """An EAGLE-3 draft model's target layers: whose input hidden states it drafts from ([]: another
        kind of model)."""
        out = ffi.new("int32_t[8]")
        n = int(lib.llamatwist_model_target_layer_ids(self.ptr, out, 8))
        return [int(out[i]) for i in range(min(n, 8))]

    def has_recurrent_state(self) -> bool:
        """Recurrent or hybrid memory: a state per sequence that cannot be cut part-way."""
        return bool(lib.llama_model_is_recurrent(self.ptr) or lib.llama_model_is_hybrid(self.ptr))

    def kv_bytes_per_token(self, type_k: int, type_v: int) -> int:
        """KV cache bytes one token takes (all layers, K and V)."""
        p = self.ptr
        n_head, n_head_kv = lib.llama_model_n_head(p), lib.llama_model_n_head_kv(p)
        n_embd_gqa = lib.llama_model_n_embd(p) // max(n_head, 1) * n_head_kv
        per_layer = lib.ggml_row_size(type_k, n_embd_gqa) + lib.ggml_row_size(type_v, n_embd_gqa)
        return int(lib.llama_model_n_layer(p) * per_layer)

    def metadata(self) -> dict[str, str]:
        p = self.ptr
        out: dict[str, str] = {}
        size = 4096
        buf = ffi.new("char[]", size)
        for i in range(lib.llama_model_meta_count(p)):
            lib.llama_model_meta_key_by_index(p, i, buf, size)
            key = ffi.string(buf).decode("utf-8", "replace")
            n = lib.llama_model_meta_val_str_by_index(p, i, buf, size)
            if n >= size:  # long values (e.g. chat templates): fetch with a larger buffer
                big = ffi.new("char[]", n + 1)
                lib.llama_model_meta_val_str_by_index(p, i, big, n + 1)
                out[key] = ffi.string(big).decode("utf-8", "replace")
            else:
                out[key] = ffi.string(buf).decode("utf-8", "replace")
        return out

    def load_lora(self, path: str) -> LoraAdapter:
        with native_errors() as errors:
            ptr = lib.llama_adapter_lora_init(self.ptr, os.fsencode(path))
        if ptr == ffi.NULL:
            # libllama says why (wrong architecture, "incorrect shape (hint: maybe wrong base model?)", ...)
            detail = "; ".join(errors)
            raise ModelLoadError(f"failed to load LoRA adapter {path}" + (f": {detail}" if detail else ""))
        adapter = LoraAdapter(ffi.gc(ptr, lib.llama_adapter_lora_free), path, self)
        self._loras.append(adapter)
        return adapter

    def chat_template(self, name: str | None = None) -> str | None:
        c = lib.llama_model_chat_template(self.ptr, name.encode() if name else ffi.NULL)
        return None if c == ffi.NULL else ffi.string(c).decode("utf-8", "replace")


def _load_failure_message(path: str, errors: Sequence[str]) -> str:
    text = "\n".join(errors)
    if "unknown model architecture" in text:
        arch = text.split("unknown model architecture:", 1)[1].strip().splitlines()[0]
        return f"unsupported model architecture {arch} in {path}"
    detail = "; ".join(e.strip() for e in errors if e.strip())
    return f"failed to load model {path}" + (f": {detail}" if detail else "")


@dataclass(frozen=True)
class FimTokens:
    """Fill-in-the-middle token ids (-1 when the model lacks one)."""

    pre: int
    suf: int
    mid: int
    rep: int
    sep: int
    bos: int
    add_bos: bool

    def missing(self) -> str:
        parts = [f"{name} token is missing. " for name, t in
                 (("prefix", self.pre), ("suffix", self.suf), ("middle", self.mid)) if t < 0]
        return "".join(parts)


class LoraAdapter:
    """A LoRA adapter bound to its model (applied per context with a scale)."""

    def __init__(self, ptr: Any, path: str, model: Model) -> None:
        self.ptr = ptr
        self.path = path
        self.model = model

    def close(self) -> None:
        """Free it now (its model's `Model.close` does, before freeing the model)."""
        if self.ptr is not None:
            ffi.release(self.ptr)
            self.ptr = None

    def meta(self, key: str) -> str:
        """An adapter metadata value ("" when absent), e.g. adapter.lora.task_name."""
        buf = ffi.new("char[]", 512)
        n = lib.llama_adapter_meta_val_str(self.ptr, key.encode(), buf, 512)
        if n < 0:
            return ""
        if n >= 512:
            buf = ffi.new("char[]", n + 1)
            lib.llama_adapter_meta_val_str(self.ptr, key.encode(), buf, n + 1)
        return str(ffi.string(buf).decode("utf-8", "replace"))


class Vocab:
    """Tokenizer view of a model. Thread-safe: the vocab is read-only."""

    def __init__(self, ptr: Any, owner: Model) -> None:
        self._ptr = ptr
        self._owner = owner  # keeps the model alive while the vocab is used
        self.n_tokens: int = lib.llama_vocab_n_tokens(ptr)
        self.bos: int = lib.llama_vocab_bos(ptr)
        self.eos: int = lib.llama_vocab_eos(ptr)
        self.eot: int = lib.llama_vocab_eot(ptr)
        self.add_bos: bool = bool(lib.llama_vocab_get_add_bos(ptr))
        self.add_eos: bool = bool(lib.llama_vocab_get_add_eos(ptr))
        self.add_sep: bool = bool(lib.llama_vocab_get_add_sep(ptr))
        self.sep: int = lib.llama_vocab_sep(ptr)
        self.mask: int = lib.llama_vocab_mask(ptr)  # a diffusion model's MASK (DFlash drafts); -1: none
        # fill-in-the-middle tokens (-1 when the model has none)
        self.fim_pre: int = lib.llama_vocab_fim_pre(ptr)
        self.fim_suf: int = lib.llama_vocab_fim_suf(ptr)
        self.fim_mid: int = lib.llama_vocab_fim_mid(ptr)
        self.fim_pad: int = lib.llama_vocab_fim_pad(ptr)
        self.fim_rep: int = lib.llama_vocab_fim_rep(ptr)
        self.fim_sep: int = lib.llama_vocab_fim_sep(ptr)
        self._piece_cache: dict[tuple[int, bool], bytes] = {}

    @property
    def ptr(self) -> Any:
        return self._ptr

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = ffi.new("llama_token[]", cap)
        n = lib.llama_tokenize(self._ptr, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = ffi.new("llama_token[]", cap)
            n = lib.llama_tokenize(self._ptr, data, len(data), buf, cap, add_special, parse_special)
            if n < 0:
                raise ValueError("tokenization failed")
        return list(ffi.unpack(buf, n))

    def token_to_piece(self, token: int, special: bool = True) -> bytes:
        key = (token, special)
        cached = self._piece_cache.get(key)
        if cached is not None:
            return cached
        buf = ffi.new("char[]", 64)
        n = lib.llama_token_to_piece(self._ptr, token, buf, 64, 0, special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = lib.llama_token_to_piece(self._ptr, token, buf, -n, 0, special)
        piece = ffi.unpack(buf, n)
        self._piece_cache[key] = piece
        return piece

    def detokenize(self, tokens: Sequence[int], remove_special: bool = False, unparse_special: bool = True) -> str:
        if not tokens:
            return ""
        arr = ffi.new("llama_token[]", list(tokens))
        cap = len(tokens) * 8 + 16
        buf = ffi.new("char[]", cap)
        n = lib.llama_detokenize(self._ptr, arr, len(tokens), buf, cap, remove_special, unparse_special)
        if n < 0:
            cap = -n
            buf = ffi.new("char[]", cap)
            n = lib.llama_detokenize(self._ptr, arr, len(tokens), buf, cap, remove_special, unparse_special)
        return ffi.unpack(buf, n).decode("utf-8", "replace")

    def token_attr(self, token: int) -> int:
        return int(lib.llama_vocab_get_attr(self._ptr, token))

    def fim(self) -> FimTokens:
        return FimTokens(self.fim_pre, self.fim_suf, self.fim_mid, self.fim_rep, self.fim_sep, self.bos, self.add_bos)

    def is_eog(self, token: int) -> bool:
        return bool(lib.llama_vocab_is_eog(self._ptr, token))

    def is_valid(self, token: int) -> bool:
        return 0 <= token < self.n_tokens
