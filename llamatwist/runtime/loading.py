# -*- test-case-name: tests.test_startup_matrix -*-
"""Model loading and warm-up, on the decode thread: the model, its context, the slots and the shared
prefix cache a decode loop runs with, and what the HTTP side may know about them (`LoadedModel`)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

from llamatwist.engine.batch import Batch
from llamatwist.engine.context import CACHE_TYPES, Context, ContextParams, max_sequences
from llamatwist.engine.errors import ContextError, EngineError, ModelLoadError
from llamatwist.engine.fit import (
    DEFAULT_MARGIN_MIB,
    DEFAULT_MIN_CTX,
    Extra,
    FitRequest,
    Fitted,
    Measured,
    Trial,
    cli_args,
    fit,
    measure,
)
from llamatwist.engine.model import LoraAdapter, Model, ModelInfo, Placement, numa_init
from llamatwist.engine.mtmd import Projector, projector_memory
from llamatwist.engine.sampling import eog_tokens
from llamatwist.engine.video import VideoParams
from llamatwist.runtime.adapters import AdapterSpec, LoraInfo, apply_adapters
from llamatwist.runtime.checkpoints import Checkpoints
from llamatwist.runtime.dflash import BlockKind, DFlashDrafter, block_kind
from llamatwist.runtime.draft_head import DraftHead
from llamatwist.runtime.eagle3 import Eagle3Drafter, eagle3_problem
from llamatwist.runtime.mtp import MtpDrafter
from llamatwist.runtime.ngram_cache import Cache, NgramCacheDrafter, load_cache
from llamatwist.runtime.prefix_cache import PrefixCache
from llamatwist.runtime.slot import Slot
from llamatwist.runtime.speculative import DraftModel
from llamatwist.sampling_defaults import DRAFT_ARCH_TYPES, GEMMA4_ASSISTANT

__all__ = ["EngineSpec", "Loaded", "LoadedModel", "fit_spec", "load"]

log = logging.getLogger(__name__)

OUTPUT_DRAFTS = 16  # draft tokens per slot the outputs are sized for (--spec-draft-n-max's default)


@dataclass(frozen=True)
class EngineSpec:
    model_path: str
    n_gpu_layers: int
    context: ContextParams
    n_slots: int
    cont_batching: bool = True
    n_predict: int = -1  # -n: the limit of a request that sets none; -1 = none
    warmup: bool = True
    reranking: bool = False
    cache_ram_mib: int = 8192  # parked prefixes' bound (-1 none, 0 = no shared cache)
    cache_idle_slots: bool = True  # park a slot's old content when it takes a new task
    ctx_shift: bool = False
    slot_prompt_similarity: float = 0.1  # -sps; 0 = always the least recently used idle slot
    adapters: AdapterSpec = dataclasses.field(default_factory=AdapterSpec)  # --lora*, --control-vector*: applied server-wide
    draft_model_path: str | None = None  # -md: speculative decoding's draft model
    mtp: bool = False  # --spec-type draft-mtp: the model's NextN layers load and draft in an MTP context
    eagle3: bool = False  # --spec-type draft-eagle3: -md is an EAGLE-3 draft model, beside the target's context
    dflash: bool = False  # --spec-type draft-dflash: -md is a DFlash draft model, beside the target's context
    dspark: bool = False  # --spec-type draft-dspark: -md is a DSpark draft model, beside the target's context
    draft_p_min: float = 0.0  # --spec-draft-p-min (a DSpark draft without a confidence head refuses one)
    lookup_cache_static: str | None = None  # -lcs, with --spec-type ngram-cache
    lookup_cache_dynamic: str | None = None  # -lcd, with --spec-type ngram-cache
    draft_n_ctx: int = 0  # -cd (0: the target's context size)
    draft_n_gpu_layers: int = -1
    draft_context: dict[str, Any] = dataclasses.field(default_factory=dict)  # ContextParams fields that differ
    draft_placement: Placement | None = None  # -otd, -cmoed, -ncmoed
    load_mode: str = "auto"  # -lm (the target model; the draft model loads as llama-server's: auto)
    lazy_mode: str = "auto"  # -lzm (the draft model too: llama-server copies the target's parameters)
    check_tensors: bool = False
    kv_overrides: tuple[tuple[str, str, str], ...] = ()  # --override-kv (key, type, value)
    placement: Placement = dataclasses.field(default_factory=Placement)  # -dev, -ot, -sm, -mg, -ts
    numa: str | None = None  # --numa distribute | isolate | numactl
    special: bool = False  # -sp: generated control tokens are written as their text
    sleep_idle_seconds: float = -1  # unload the model after this long without a task (-1: never)
    n_ctx_slot_cap: int = 0  # --kv-unified-per-slot: a slot's context at most this (0: no cap)
    mmproj_path: str | None = None  # --mmproj: the multimodal projector
    mmproj_offload: bool = True  # False: the projector on the CPU (--no-mmproj-offload, -mmdev none, -dev none)
    mmproj_device: str | None = None  # -mmdev (or -dev's first): its device; None: libmtmd's first GPU
    image_min_tokens: int = -1  # --image-min-tokens / --image-max-tokens (-1: the projector's own)
    image_max_tokens: int = -1
    mtmd_batch_max_tokens: int = 1024  # --mtmd-batch-max-tokens
    video_fps: float = 4.0  # --video-fps, --video-timestamp-interval, --video-ffmpeg-dir
    video_timestamp_interval_ms: int = 5000
    video_ffmpeg_dir: str | None = None
    n_ctx_checkpoints: int = 32  # -ctxcp: context checkpoints per slot (models whose memory cannot be cut)
    checkpoint_min_step: int = 8192  # -cms: their least spacing in tokens
    fit: bool = False  # -fit: an unset context size and -ngl fitted to the memory there is
    fit_margins_mib: tuple[int, ...] = (DEFAULT_MARGIN_MIB,)  # -fitt: memory left free per device
    fit_min_ctx: int = DEFAULT_MIN_CTX  # -fitc: the least context per stream fitting may choose


@dataclass(frozen=True)
class LoadedModel:
    """What the HTTP side may know about the loaded model."""

    info: ModelInfo
    metadata: dict[str, str]
    chat_template: str | None
    n_ctx: int
    n_ctx_slot: int
    n_batch: int
    n_ubatch: int
    n_slots: int
    bos: int
    eos: int
    add_bos: bool
    add_eos: bool
    pooling: int  # effective llama_pooling_type in embedding mode, -1 otherwise
    loras: tuple[LoraInfo, ...] = ()  # GET /lora-adapters
    eog: tuple[int, ...] = ()  # end-of-generation tokens (ignore_eos bans them, as llama-server shows)
    vision: bool = False  # the projector (--mmproj) takes images
    audio: bool = False  # ... and audio
    video: bool = False  # ... and video (a vision projector, and libmtmd built with video support)
    mmproj_backend: str | None = None  # where the projector's encoder runs (None: no projector)
    n_gpu_layers: int = -1  # -ngl as the model loaded (after --fit)


@dataclass(frozen=True)
class Loaded:
    """What the decode loop runs with; only the decode thread touches it."""

    model: Model
    ctx: Context
    cache: PrefixCache
    slots: list[Slot]
    batch: Batch  # reused by every step, n_batch tokens
    model_id: str  # what a slot file must match to be restored here
    can_shift: bool  # --context-shift, and the context can shift
    description: LoadedModel
    lora_adapters: list[LoraAdapter] = dataclasses.field(default_factory=list)  # kept alive with the context
    drafter: DraftModel | None = None  # -md: the draft model's context, one sequence per slot
    projector: Projector | None = None  # --mmproj
    lookup: NgramCacheDrafter | None = None  # --spec-type ngram-cache: the files of -lcs and -lcd
    head: DraftHead | None = None  # draft-mtp's NextN head, or draft-eagle3's or -dflash's draft: it follows every decode


def fit_spec(spec: EngineSpec) -> tuple[EngineSpec, Fitted | None]:
    """The spec with the context size, layers, layer split and tensor placement --fit chose, and the fit's
    outcome (None, and the spec unchanged, where the model could not be measured)."""
    place = spec.placement
    request = FitRequest(n_ctx=spec.context.n_ctx, n_gpu_layers=spec.n_gpu_layers,
                         n_streams=1 if spec.context.kv_unified else max(spec.n_slots, 1),
                         margins_mib=spec.fit_margins_mib, n_ctx_min=spec.fit_min_ctx,
                         tensor_split=place.tensor_split, overrides=place.tensor_overrides, split_mode=place.split_mode,
                         reserved=_projector_reserve(spec))

    def measured(trial: Trial) -> Measured:
        return measure(spec.model_path, context=dataclasses.replace(spec.context, n_ctx=trial.n_ctx),
                       n_gpu_layers=trial.n_gpu_layers, kv_overrides=spec.kv_overrides, load_mtp=spec.mtp,
                       placement=dataclasses.replace(place, tensor_split=trial.tensor_split,
                                                     tensor_overrides=trial.overrides))

    try:
        fitted = fit(measured, request, _fit_extra(spec))
    except EngineError as exc:  # the load itself says what is wrong with the model
        log.error("fit: could not measure the model's memory, its settings stay as given: %s", exc)
        return spec, None
    spec = dataclasses.replace(spec, n_gpu_layers=fitted.n_gpu_layers,
                               context=dataclasses.replace(spec.context, n_ctx=fitted.n_ctx),
                               placement=dataclasses.replace(place, tensor_split=fitted.tensor_split,
                                                             tensor_overrides=fitted.overrides))
    return spec, fitted


def _projector_reserve(spec: EngineSpec) -> tuple[int, ...]:
    """--mmproj's memory per device, by ggml's device index, which llama-server adds to the same index's fit
    margin (on GPUs listed before the CPU, as CUDA's and Vulkan's are, the model's device of that index)."""
    if not spec.mmproj_path:
        return ()
    usage = projector_memory(spec.mmproj_path, n_threads=spec.context.n_threads, use_gpu=spec.mmproj_offload,
                             device=spec.mmproj_device, image_min_tokens=spec.image_min_tokens,
                             image_max_tokens=spec.image_max_tokens, flash_attn=spec.context.flash_attn,
                             batch_max_tokens=spec.mtmd_batch_max_tokens)
    if not usage:
        log.error("fit: could not measure the multimodal projector's memory")
        return ()
    for i, size in sorted(usage.items()):
        log.info("fit: %.2f MiB kept free on device %d for the multimodal projector", size / 2**20, i)
    return tuple(usage.get(i, 0) for i in range(max(usage) + 1))


def _fit_extra(spec: EngineSpec) -> Extra | None:
    """What llama-server fits beside the target: -md's draft model, or draft-mtp's context over the target's
    own NextN layers (their weights already counted), each at the target's context size."""
    if spec.draft_model_path:
        path, shares = spec.draft_model_path, False
        n_gpu_layers, placement, overrides = spec.draft_n_gpu_layers, spec.draft_placement, spec.draft_context
    elif spec.mtp:
        path, shares = spec.model_path, True
        n_gpu_layers, placement, overrides = spec.n_gpu_layers, spec.placement, {}
    else:
        return None

    def measured(n_ctx: int) -> Measured:
        context = dataclasses.replace(spec.context, n_ctx=n_ctx, n_seq_max=max(spec.n_slots, 1), kv_unified=True,
                                      embeddings=False, mtp=spec.mtp, **overrides)
        return measure(path, context=context, n_gpu_layers=n_gpu_layers, placement=placement, load_mtp=spec.mtp)

    return Extra(measured, shares)


def _fitted(spec: EngineSpec) -> EngineSpec:
    spec, fitted = fit_spec(spec)
    if fitted is None:
        return spec
    for note in fitted.notes:
        log.log(logging.INFO if fitted.ok else logging.WARNING, "fit: %s", note)
    if fitted.ok:
        log.info("fit: loading with %s", cli_args(fitted))
    else:
        log.warning("fit: no settings are projected to fit; loading with %s", cli_args(fitted))
    return spec


def load(spec: EngineSpec) -> Loaded:
    """Load the model, create its context and warm it up; raises EngineError."""
    if spec.numa:
        numa_init(spec.numa)
    if not spec.context.embeddings:
        # llama-server's output limits: logits rows for one token per slot and its drafts (steps never ask for
        # more: step.py), not for a whole micro-batch; the compute buffers shrink by (n_ubatch - that) rows.
        spec = dataclasses.replace(spec, context=dataclasses.replace(
            spec.context, n_outputs_max=min(spec.context.n_batch, max(spec.n_slots, 1) * (1 + OUTPUT_DRAFTS))))
    if spec.fit:
        spec = _fitted(spec)
    model = Model(spec.model_path, n_gpu_layers=spec.n_gpu_layers, load_mode=spec.load_mode,
                  lazy_mode=spec.lazy_mode, check_tensors=spec.check_tensors, kv_overrides=spec.kv_overrides,
                  placement=spec.placement, load_mtp=spec.mtp)
    if spec.reranking and not _has_rank_head(model):
        raise ModelLoadError(
            f"--reranking needs a reranking model (with a classification head); {spec.model_path} has none"
        )
    params = spec.context
    # Sharing prefixes needs one KV pool for all sequences (-kvu, or -np auto). A KV
    # stream per slot stays as in llama-server: per-slot reuse, and outputs that do not
    # depend on the other slots' cells (in a shared pool they move in the last digits).
    shared = (spec.cache_ram_mib != 0 and params.kv_unified and not params.embeddings
              and model.can_share_kv() and model.info().has_decoder and not model.info().has_encoder)
    if shared:
        params = dataclasses.replace(params, n_seq_max=max_sequences())
    ctx = Context(model, params)
    lora_adapters, loras = apply_adapters(model, ctx, spec.adapters)
    cache = _prefix_cache(spec, model, ctx, params, shared)
    info = model.info()
    model_id = f"{info.desc}; {info.n_params} params; {info.size} bytes; vocab {info.n_vocab}"
    n_ctx_slot = _n_ctx_slot(spec, ctx)
    slots = [Slot(id=i, n_ctx=n_ctx_slot) for i in range(spec.n_slots)]
    batch = Batch(ctx.n_batch)
    can_shift = spec.ctx_shift and ctx.can_shift()
    if spec.warmup:
        _warmup(ctx, model, batch)
    vocab = model.vocab
    description = LoadedModel(
        info=model.info(),
        metadata=model.metadata(),
        chat_template=model.chat_template(),
        n_ctx=ctx.n_ctx,
        n_ctx_slot=n_ctx_slot,
        n_batch=ctx.n_batch,
        n_ubatch=ctx.n_ubatch,
        n_slots=spec.n_slots,
        n_gpu_layers=spec.n_gpu_layers,
        bos=vocab.bos,
        eos=vocab.eos,
        add_bos=vocab.add_bos,
        add_eos=vocab.add_eos,
        pooling=ctx.pooling_type if spec.context.embeddings else -1,
        loras=loras,
        eog=eog_tokens(model),
    )
    sidecar = spec.eagle3 or spec.dflash or spec.dspark  # -md is a draft that reads the target's hidden states
    drafter = _load_draft(spec, model, ctx) if spec.draft_model_path and not (sidecar or spec.mtp) else None
    head: DraftHead | None = None
    if spec.mtp:
        head = _mtp_head(spec, model, ctx, params)
    elif sidecar:
        head = _sidecar_head(spec, model, ctx)
    lookup = NgramCacheDrafter(_lookup_cache(spec.lookup_cache_static, "static"),
                               _lookup_cache(spec.lookup_cache_dynamic, "dynamic"))
    projector = _projector(spec.mmproj_path, spec, model) if spec.mmproj_path else None
    if projector is not None:
        description = dataclasses.replace(description, vision=projector.vision, audio=projector.audio,
                                          video=projector.video, mmproj_backend=projector.backend)
        can_shift = False  # as llama-server: no context shift with a projector (media chunks cannot shift)
    return Loaded(model, ctx, cache, slots, batch, model_id, can_shift, description, lora_adapters, drafter,
                  projector, lookup, head)


def _prefix_cache(spec: EngineSpec, model: Model, ctx: Context, params: ContextParams, shared: bool) -> PrefixCache:
    """The prefix cache over ``ctx``: idle slots' prompts kept within --cache-ram (none with
    --no-cache-idle-slots, unbounded with -1)."""
    budget = -1
    if not spec.cache_idle_slots:
        budget = 0
    elif spec.cache_ram_mib > 0:
        per_token = model.kv_bytes_per_token(CACHE_TYPES[params.type_k], CACHE_TYPES[params.type_v])
        budget = spec.cache_ram_mib * 1024 * 1024 // max(per_token, 1)
    return PrefixCache(ctx, n_slots=spec.n_slots, n_seq_max=ctx.n_seq_max, n_cells=ctx.n_ctx,
                       shared=shared, budget_cells=budget, can_shift=ctx.can_shift(),
                       checkpoints=_checkpoints(spec, model, ctx))


def _n_ctx_slot(spec: EngineSpec, ctx: Context) -> int:
    """A slot's context: its share of the KV pool (all of a unified one), capped by --kv-unified-per-slot."""
    n_ctx_slot = ctx.n_ctx_seq if spec.context.kv_unified else ctx.n_ctx // max(spec.n_slots, 1)
    cap = spec.n_ctx_slot_cap
    if 0 < cap < n_ctx_slot:
        log.info("capping per-slot context (%d) to --kv-unified-per-slot (%d)", n_ctx_slot, cap)
        return cap
    if cap > n_ctx_slot:
        log.warning("--kv-unified-per-slot (%d) exceeds the per-slot pool capacity (%d) - the cap has no effect "
                    "(raise the KV pool with -c, or unset -c to size it to n_parallel * kv_unified_per_slot)",
                    cap, n_ctx_slot)
    return n_ctx_slot


def _projector(path: str, spec: EngineSpec, model: Model) -> Projector:
    return Projector(path, model, n_threads=spec.context.n_threads, use_gpu=spec.mmproj_offload,
                     device=spec.mmproj_device, image_min_tokens=spec.image_min_tokens,
                     image_max_tokens=spec.image_max_tokens, flash_attn=spec.context.flash_attn,
                     batch_max_tokens=spec.mtmd_batch_max_tokens,
                     video=VideoParams(spec.video_fps, spec.video_timestamp_interval_ms, spec.video_ffmpeg_dir))


def _mtp_head(spec: EngineSpec, model: Model, ctx: Context, params: ContextParams) -> MtpDrafter:
    """The context of type MTP over the target model's NextN layers, or over -md's MTP draft model (a Gemma 4
    assistant) beside the target's, made as the target's (``params``: llama-server's)."""
    draft = _draft_model(spec, model) if spec.draft_model_path else None
    head_model = draft or model
    if head_model.n_nextn_layers() <= 0:
        if draft is not None:
            draft.close()
        what = f"draft model {spec.draft_model_path}" if draft else model.path
        raise ModelLoadError(f"failed to create MTP context: {what} has no MTP (NextN) layers for "
                             "--spec-type draft-mtp")
    arch = model.metadata().get("general.architecture")
    if draft is not None and draft.metadata().get("general.architecture") == GEMMA4_ASSISTANT and arch != "gemma4":
        draft.close()  # it reads the target's sliding-window KV cache as Gemma 4's: llama-server crashes
        raise ModelLoadError(f"draft model {spec.draft_model_path} is a Gemma 4 assistant, which drafts for Gemma 4 "
                             f"models only ({spec.model_path} is {arch})")
    if draft is not None and draft.n_embd_out() != model.n_embd_out():  # llama-server asserts
        draft.close()
        raise ModelLoadError(f"draft model {spec.draft_model_path} cannot draft for {spec.model_path} with "
                             f"--spec-type draft-mtp: its input state is {draft.n_embd_out()} wide, the target's "
                             f"{model.n_embd_out()}")
    try:
        # outputs: a draft step's one token per sequence (logits rows are n_vocab floats each)
        head = Context(head_model, dataclasses.replace(params, mtp=True, n_ctx=ctx.n_ctx, embeddings=False,
                                                       n_outputs_max=ctx.n_seq_max,
                                                       **(spec.draft_context if draft else {})),
                       other=ctx if draft else None)
    except ContextError as exc:
        if draft is not None:
            draft.close()
        raise ModelLoadError(f"failed to create MTP context: {exc}") from None
    log.info("speculative decoding: the MTP context runs %d NextN head(s) of %s", head_model.n_nextn_layers(),
             os.path.basename(head_model.path))
    return MtpDrafter(ctx, head, draft)


def _lookup_cache(path: str | None, kind: str) -> Cache:
    if not path:
        return {}
    try:
        return load_cache(path)
    except (OSError, ValueError) as exc:  # llama-server aborts: "Couldn't read ... lookup cache"
        raise ModelLoadError(f"failed to open {kind} lookup cache: {exc}") from None


# llama.cpp's rule (common_speculative_are_compatible): same vocab type, BOS/EOS, sizes within 128 tokens and
# the same token texts from id 5 on
_VOCAB_MAX_SIZE_DIFFERENCE = 128
_VOCAB_CHECK_START_TOKEN_ID = 5


def _draft_model(spec: EngineSpec, target: Model) -> Model:
    """-md's model, checked against the target's vocabulary."""
    path = spec.draft_model_path
    assert path is not None
    try:
        model = Model(path, n_gpu_layers=spec.draft_n_gpu_layers, lazy_mode=spec.lazy_mode,
                      placement=spec.draft_placement, load_mtp=spec.mtp)  # llama-server's draft params: the target's
    except ModelLoadError as exc:
        raise ModelLoadError(f"draft model {path}: {exc}") from None
    problem = _vocab_mismatch(target, model)
    if problem:
        model.close()
        raise ModelLoadError(f"draft model {path} cannot draft for {spec.model_path}: {problem}")
    return model


def _load_draft(spec: EngineSpec, target: Model, ctx: Context) -> DraftModel:
    model = _draft_model(spec, target)
    arch = model.metadata().get("general.architecture", "")
    # its graph reads the target's hidden states or KV cache: not a model draft-simple can run
    if model.target_layer_ids() or arch in DRAFT_ARCH_TYPES:
        model.close()
        kind = DRAFT_ARCH_TYPES.get(arch)
        hint = f"start the server with --spec-type {kind}" if kind else \
            f"drafts of its kind ({arch}) are not implemented in llamatwist"
        raise ModelLoadError(f"draft model {spec.draft_model_path} is a {arch} draft, not a model draft-simple can "
                             f"run: {hint}")
    params = dataclasses.replace(spec.context, n_ctx=spec.draft_n_ctx or ctx.n_ctx, n_seq_max=max(spec.n_slots, 1),
                                 kv_unified=True, embeddings=False, **spec.draft_context)
    draft_ctx = Context(model, params)
    return DraftModel(model, draft_ctx, draft_ctx.n_batch)


def _sidecar_head(spec: EngineSpec, target: Model, ctx: Context) -> DraftHead:
    """-md as an EAGLE-3, DFlash or DSpark draft: its context beside the target's, as llama-server's (the target's
    context size, a sequence for each of the target's)."""
    spec_type, kind = (("draft-eagle3", "EAGLE-3") if spec.eagle3 else ("draft-dflash", "DFlash") if spec.dflash
                       else ("draft-dspark", "DSpark"))
    model = _draft_model(spec, target)
    block: BlockKind | str | None = (eagle3_problem(model, target) if spec.eagle3
                                     else block_kind(model, target, spec_type, spec.draft_p_min))
    if isinstance(block, str):
        model.close()
        raise ModelLoadError(f"draft model {spec.draft_model_path} cannot draft for {spec.model_path} with "
                             f"--spec-type {spec_type}: {block}")
    # outputs: an EAGLE-3 draft step's one token per sequence; a DFlash block's every token
    params = dataclasses.replace(spec.context, n_ctx=ctx.n_ctx, n_seq_max=ctx.n_seq_max, kv_unified=True,
                                 embeddings=False, n_outputs_max=max(ctx.n_seq_max, block.block_size if block else 1),
                                 **spec.draft_context)
    try:
        draft_ctx = Context(model, params, other=ctx)
    except ContextError as exc:
        model.close()
        raise ModelLoadError(f"failed to create the {kind} draft context: {exc}") from None
    log.info("speculative decoding: %s draft %s reads target layers %s", kind, os.path.basename(model.path),
             ", ".join(map(str, model.target_layer_ids())))
    return DFlashDrafter(ctx, model, draft_ctx, block) if block else Eagle3Drafter(ctx, model, draft_ctx)


def _vocab_mismatch(target: Model, draft: Model) -> str:
    a, b = target.vocab, draft.vocab
    ta, tb = target.info().vocab_type, draft.info().vocab_type
    if ta != tb:
        return f"vocabulary types differ ({ta} vs {tb})"
    if a.add_bos != b.add_bos or (a.add_bos and a.bos != b.bos):
        return f"BOS tokens differ ({a.bos} vs {b.bos})"
    if a.add_eos != b.add_eos or (a.add_eos and a.eos != b.eos):
        return f"EOS tokens differ ({a.eos} vs {b.eos})"
    if abs(a.n_tokens - b.n_tokens) > _VOCAB_MAX_SIZE_DIFFERENCE:
        return f"vocabulary sizes differ too much ({a.n_tokens} vs {b.n_tokens})"
    for i in range(_VOCAB_CHECK_START_TOKEN_ID, min(a.n_tokens, b.n_tokens)):
        if a.token_to_piece(i, special=True) != b.token_to_piece(i, special=True):
            return f"token {i} differs"
    return ""


def _warmup(ctx: Context, model: Model, batch: Batch) -> None:
    # One tiny decode so the first request does not pay for graph setup.
    toks = ([t for t in (model.vocab.bos, model.vocab.eos) if t >= 0] or [0])[: ctx.n_batch]
    batch.clear()
    batch.add_sequence(toks, 0, 0, True)
    ctx.decode(batch)
    ctx.clear()


def _checkpoints(spec: EngineSpec, model: Model, ctx: Context) -> Checkpoints | None:
    """Context checkpoints for memory that cannot be cut part-way: a sliding window (unless --swa-full
    keeps every cell) or a recurrent state. None for full attention, which never needs them."""
    n_swa = 0 if spec.context.swa_full else model.n_swa()
    recurrent = model.has_recurrent_state()
    if spec.context.embeddings or not (model.n_swa() > 0 or recurrent):
        return None
    n_max = spec.n_ctx_checkpoints if n_swa > 0 or recurrent else 0  # --swa-full: the window is all there
    if n_max > 0:
        log.info("context checkpoints enabled, max = %d, min spacing = %d", n_max, spec.checkpoint_min_step)
    else:
        log.info("context checkpoints disabled")
    return Checkpoints(ctx, n_max=max(n_max, 0), min_step=spec.checkpoint_min_step, n_swa=n_swa,
                       n_batch=ctx.n_batch, n_ubatch=ctx.n_ubatch)


def _has_rank_head(model: Model) -> bool:
    # libllama cannot tell (n_cls_out defaults to 1); GGUF rerankers declare rank pooling.
    meta = model.metadata()
    arch = meta.get("general.architecture", "")
    return meta.get(f"{arch}.pooling_type") == "4"
