# -*- test-case-name: tests.test_cli -*-
"""Server configuration: one frozen dataclass holding every default.

Defaults follow llama-server (common/common.h and tools/server) so that a
command line written for llama-server means the same thing here. The
per-request sampling defaults are `SamplingDefaults` (sampling_defaults.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llamatwist.sampling_defaults import SamplingDefaults

__all__ = ["CACHE_TYPE_NAMES", "LAZY_MODES", "LOAD_MODES", "REASONING_FORMATS", "ROPE_SCALING", "SamplingDefaults", "ServerConfig"]

# --reasoning-format / the request's reasoning_format (llama.cpp's common_reasoning_format names)
REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")


#: --rope-scaling values
ROPE_SCALING: tuple[str, ...] = ("none", "linear", "yarn")
#: -lm/--load-mode values (llama.cpp's llama_load_mode names)
LOAD_MODES: tuple[str, ...] = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
#: -lzm/--lazy-mode values (llama.cpp's llama_lazy_mode)
LAZY_MODES: tuple[str, ...] = ("on", "auto", "off")

#: -ctk/-ctv values (llama-server's kv_cache_types)
CACHE_TYPE_NAMES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


@dataclass(frozen=True)
class ServerConfig:
    # model
    model: str | None = None  # None -> the default model preset
    model_url: str | None = None  # -mu: downloaded into the cache (or -m's path) when missing
    mmproj: str | None = None  # -mm: the multimodal projector
    mmproj_url: str | None = None  # -mmu: downloaded into the cache (or -mm's path) when missing
    mmproj_auto: bool = True  # --no-mmproj: do not take the projector found beside an -hf model
    mmproj_offload: bool = True  # --no-mmproj-offload
    mmproj_device: tuple[str, ...] | None = None  # -mmdev: None = follows -dev, () = none (the CPU), (name,)
    image_min_tokens: int = -1
    image_max_tokens: int = -1
    mtmd_batch_max_tokens: int = 1024
    video_fps: float = 4.0  # --video-fps: frames taken per second of video (<= 0: the video's own rate)
    video_timestamp_interval_ms: int = 5000  # --video-timestamp-interval (<= 0: no timestamp texts)
    video_ffmpeg_dir: str | None = None  # --video-ffmpeg-dir (None: ffmpeg and ffprobe from PATH)
    offline: bool = False  # never touch the network: -mu's file must be there already
    docker_repo: str | None = None  # -dr [<repo>/]<model>[:tag], pulled from Docker Hub into the cache
    hf_repo: str | None = None  # -hf <user>/<model>[:quant], from the Hugging Face hub cache
    hf_file: str | None = None  # -hff: this file of the repository rather than the quant's
    hf_token: str | None = field(default=None, repr=False)  # -hft / HF_TOKEN
    hf_repo_draft: str | None = None  # -hfd: the draft model, as -hf
    hf_file_draft: str | None = None  # the draft's file (set by the --fim-qwen-*-spec presets)
    alias: str | None = None  # -a as given: comma-separated names, see aliases
    tags: str | None = None  # --tags as given: comma-separated, see model_tags
    # router mode (--models-dir / --models-preset without a model): one child server per model
    models_dir: str | None = None
    models_preset: str | None = None
    models_max: int = 4  # models loaded at once; 0 = no limit
    models_autoload: bool = True
    argv: tuple[str, ...] = field(default=(), compare=False, repr=False)
    ui_config: dict[str, Any] = field(default_factory=dict)
    vertex: tuple[str, str] | None = None  # on Vertex AI (AIP_MODE=PREDICTION): its health and predict routes  # --ui-config / --ui-config-file: /props ui_settings  # the command line, for the children
    n_gpu_layers: int = -1  # -1 = auto/all, as llama-server
    # context and batching
    n_ctx: int = 0  # 0 = from the model's training context
    n_parallel: int = 4  # llama-server's "auto" (-1) resolves to 4 slots
    kv_unified: bool = True
    cont_batching: bool = True
    n_batch: int = 2048
    n_ubatch: int = 512
    n_threads: int = -1  # -1 = pick from the CPU count
    n_threads_batch: int = -1  # -1 = same as n_threads
    # ggml thread pools (-C/-Cr, --cpu-strict, --prio, --poll; the -batch forms default to these)
    cpu_mask: tuple[int, ...] = ()  # the CPUs of -C and -Cr together; () = the default affinity
    cpu_strict: bool = False
    prio: int = 0
    poll: int = 50
    cpu_mask_batch: tuple[int, ...] | None = None
    cpu_strict_batch: bool | None = None
    prio_batch: int | None = None
    poll_batch: int | None = None
    numa: str | None = None  # distribute | isolate | numactl
    warmup: bool = True
    flash_attn: str = "auto"  # on | off | auto
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    kv_offload: bool = True
    kv_unified_per_slot: int = 0  # --kv-unified-per-slot: a slot's context cap (0 = unset)
    op_offload: bool = True  # --op-offload / --no-op-offload
    swa_full: bool = False  # --swa-full
    n_ctx_checkpoints: int = 32  # -ctxcp: context checkpoints per slot (SWA/recurrent models only)
    checkpoint_min_step: int = 8192  # -cms: least spacing between them in tokens (0 = none)
    repack: bool = True  # --repack / -nr
    no_host: bool = False  # --no-host
    cpu_moe: bool = False  # -cmoe: every MoE expert tensor stays in the CPU (an -ot rule)
    n_cpu_moe: int = 0  # -ncmoe N: those of the first N layers
    n_cpu_ffn: int = 0  # -ncffn N: the dense FFN tensors of the first N layers
    defrag_thold: float = 0.1  # accepted and ignored, as llama-server (deprecated there)
    # RoPE/YaRN (llama-server's "from the model" sentinels: 0 and negative values)
    rope_scaling: str | None = None  # none | linear | yarn; None = the model's
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0  # --rope-scale N sets 1/N
    yarn_orig_ctx: int = 0
    yarn_ext_factor: float = -1.0
    yarn_attn_factor: float = -1.0
    yarn_beta_slow: float = -1.0
    yarn_beta_fast: float = -1.0
    # model loading
    load_mode: str = "auto"  # -lm: auto | none | mmap | mlock | mmap+mlock | dio
    lazy_mode: str = "auto"  # -lzm: on | auto | off (tensors the architecture marks, read on demand)
    check_tensors: bool = False
    override_kv: tuple[tuple[str, str, str], ...] = ()  # --override-kv (key, type, value text)
    # devices and offload (validated against the build's devices by the CLI)
    devices: tuple[str, ...] | None = None  # -dev: None = every GPU, () = none (the CPU only)
    override_tensor: tuple[tuple[str, str], ...] = ()  # -ot (tensor name regex, buffer type)
    split_mode: str = "layer"
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()
    rpc_servers: tuple[str, ...] = ()  # --rpc host:port,...: registered as devices before the flags are read
    fit: bool = True  # -fit: an unset -c and -ngl fitted to the memory there is
    fit_target_mib: tuple[int, ...] = (1024,)  # -fitt: MiB left free per device
    fit_ctx: int = 4096  # -fitc: the least context (per stream) fitting may choose; -1: none (an explicit -c 0)
    ctx_shift: bool = False
    cache_ram_mib: int = 8192  # bound on idle cached prefixes; 0 = no prefix cache shared across slots
    cache_idle_slots: bool = True
    slot_prompt_similarity: float = 0.1
    # adapters (--lora*, --control-vector*): (path, scale) in command-line order
    loras: tuple[tuple[str, float], ...] = ()
    lora_init_without_apply: bool = False
    control_vectors: tuple[tuple[str, float], ...] = ()
    control_vector_layer_range: tuple[int, int] = (-1, -1)  # -1: all layers
    # HTTP
    host: str = "127.0.0.1"
    port: int = 8080
    api_prefix: str = ""
    # --api-key (comma-separated) and --api-key-file, merged; kept out of repr() so logs never show them
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    ssl_key_file: str | None = None
    ssl_cert_file: str | None = None
    timeout: int = 3600  # -to: seconds of read/write inactivity before a connection is closed; <= 0 = never
    n_threads_http: int = -1  # -1 = Twisted's default thread pool size
    cors_origins: str = "*"  # "*", "localhost" (reflect localhost origins only), or a comma-separated list
    cors_methods: str = "GET, POST, DELETE, OPTIONS"
    cors_headers: str = "*"
    cors_credentials: bool = True  # with cors_origins "*", the request's Origin is echoed back
    # server tools for agents (--tools, --tools-runtime, --mcp-servers-*) and the UI's MCP proxy (--ui-mcp-proxy)
    server_tools: tuple[str, ...] = ()  # built-in tool names, or ("all",)
    tools_runtime: str | None = None  # docker:<image>, docker-container:<id>, podman..., ssh:<target>
    mcp_servers_config: str | None = None  # a Cursor-style "mcpServers" JSON file
    mcp_servers_json: str | None = None  # the same, inline
    ui_mcp_proxy: bool = False  # GET/POST /cors-proxy?url=
    # web UI
    webui: bool = True  # --ui/--no-ui: the built-in chat UI at /
    static_path: str | None = None  # --path: serve this directory instead of the built-in UI
    # endpoints
    metrics: bool = False
    slots: bool = True
    slot_save_path: str | None = None  # enables POST /slots/{id}?action=save|restore|erase
    sleep_idle_seconds: int = -1  # unload the model and KV after this many idle seconds (-1: never)
    reuse_port: bool = False  # --reuse-port: SO_REUSEPORT on the TCP listeners
    special: bool = False  # -sp: generated control tokens are written as their text
    media_path: str | None = None  # --media-path: file:// media URLs resolve under it (realpath)
    endpoint_props: bool = False  # --props: allow POST /props
    embeddings: bool = False  # --embeddings: embedding-only server
    reranking: bool = False  # --reranking
    pooling: str | None = None  # none|mean|cls|last|rank; None = the model's default
    # speculative decoding
    model_draft: str | None = None
    spec_type: str = "none"  # none, or a comma list of SPEC_TYPES (-md alone means draft-simple)
    spec_type_default: bool = True  # no --spec-type (or none): the type follows the draft model (-md, -hfd)
    spec_default: bool = False  # --spec-default: adds ngram-mod (n_match 24, n_min 48, n_max 64)
    draft_max: int = 3  # the pinned llama-server's defaults (older ones drafted up to 16, stopping below 0.8)
    draft_min: int = 0
    draft_p_min: float = 0.0
    draft_p_split: float = 0.1  # accepted; llama-server's pinned drafting does not use it either
    draft_backend_sampling: bool = True  # accepted; draft tokens are picked on the CPU here
    ctx_size_draft: int = 0
    gpu_layers_draft: int = -1
    device_draft: tuple[str, ...] | None = None  # -devd, as devices
    # the draft model's own threads, pools and tensor placement (None / empty: the target's) and KV types
    threads_draft: int = -1
    threads_batch_draft: int = -1
    cpu_mask_draft: tuple[int, ...] | None = None
    cpu_strict_draft: bool | None = None
    prio_draft: int | None = None
    poll_draft: int | None = None
    cpu_mask_batch_draft: tuple[int, ...] | None = None
    cpu_strict_batch_draft: bool | None = None
    prio_batch_draft: int | None = None
    poll_batch_draft: int | None = None
    cache_type_k_draft: str = "f16"  # f16 whatever -ctk says (the pinned llama-server's)
    cache_type_v_draft: str = "f16"
    override_tensor_draft: tuple[tuple[str, str], ...] = ()
    cpu_moe_draft: bool = False
    n_cpu_moe_draft: int = 0
    spec_ngram_size_n: int = 12
    spec_ngram_size_m: int = 48
    spec_ngram_min_hits: int = 1
    lookup_cache_static: str | None = None  # -lcs (ngram-cache)
    lookup_cache_dynamic: str | None = None  # -lcd (ngram-cache)
    spec_ngram_mod_n_match: int = 24
    spec_ngram_mod_n_min: int = 48
    spec_ngram_mod_n_max: int = 64
    spec_ngram_map_k_size_n: int = 12
    spec_ngram_map_k_size_m: int = 48
    spec_ngram_map_k_min_hits: int = 1
    spec_ngram_map_k4v_size_n: int = 12
    spec_ngram_map_k4v_size_m: int = 48
    spec_ngram_map_k4v_min_hits: int = 1
    # synthetic acceptance (benchmarking only): a mean acceptance length, or per-position rates (None / empty: off)
    spec_synth_len: float | None = None
    spec_synth_rates: tuple[float, ...] = ()
    responses_store_size: int = 256  # responses kept for previous_response_id (an in-memory LRU)
    # chat
    jinja: bool = True
    chat_template: str | None = None  # a built-in template name or a Jinja template
    chat_template_file: str | None = None
    # server-wide output constraint (requests may give their own)
    grammar: str | None = None
    grammar_file: str | None = None
    json_schema: str | None = None  # JSON text
    json_schema_file: str | None = None
    chat_template_kwargs: dict[str, object] = field(default_factory=dict)
    reasoning_preserve: bool = True  # --reasoning-preserve: the template's preserve_reasoning kwarg
    # reasoning (thinking) output
    reasoning_format: str = "deepseek"  # none | auto | deepseek | deepseek-legacy (llama-server: deepseek unless set)
    reasoning: str = "auto"  # -rea on|off|auto: enable_thinking for the template (auto: the template decides)
    reasoning_effort: str | None = None  # given to the template as reasoning_effort; None = its default
    reasoning_budget: int = -1  # thinking tokens before the end tag is forced; -1 = unlimited
    reasoning_budget_message: str = ""  # inserted before the forced end tag
    skip_chat_parsing: bool = False  # --skip-chat-parsing: a chat reply is all content (no reasoning or tool calls)
    prefill_assistant: bool = True
    spm_infill: bool = False
    # logging
    verbose: bool = False
    log_disable: bool = False
    log_file: str | None = None
    prompts_log_dir: str | None = None  # --log-prompts-dir: each completion's prompt, one file a request
    log_verbosity: int = 3  # -lv: 0 output, 1 error, 2 warning, 3 info, 4+ debug (llama.cpp's LOG_LEVEL_*)
    log_colors: str = "auto"  # on | off | auto (on when stderr is a terminal)
    log_prefix: bool = True  # the level letter (llama-server's common_init turns prefix and timestamps on)
    log_timestamps: bool = True
    log_jsonl: bool = False  # --log-jsonl: JSON lines on stdout (and in --log-file)
    perf: bool = True  # --perf/--no-perf: libllama's internal performance timings
    escape: bool = True  # -e/--no-escape: accepted; no effect on the server, as in llama-server
    # sampling defaults for requests
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)

    @property
    def router_mode(self) -> bool:
        """A model catalog (--models-dir, --models-preset) and no model of the server's own (-m, -mu, -hf):
        serve the catalog's models, each in its own server process (llama-server's router mode)."""
        has_catalog = bool(self.models_dir or self.models_preset)
        return has_catalog and not (self.model or self.model_url or self.hf_repo or self.docker_repo)

    @property
    def model_tags(self) -> tuple[str, ...]:
        """--tags, comma-separated: listed by /models, as llama-server (a set: sorted, no repeats)."""
        return tuple(sorted({t.strip() for t in (self.tags or "").split(",") if t.strip()}))

    @property
    def projector_devices(self) -> tuple[str, ...] | None:
        """Where the projector's encoder goes: () the CPU, (name,) that device, None libmtmd's first GPU.

        As llama-server: -mmdev, else -dev's first device (-dev none: the CPU). --no-mmproj-offload
        keeps it on the CPU and -mmdev none overrides --mmproj-offload, whatever their order (llama-server:
        the one given last)."""
        if not self.mmproj_offload:
            return ()
        chosen = self.mmproj_device if self.mmproj_device is not None else self.devices
        return None if chosen is None else chosen[:1]

    @property
    def aliases(self) -> tuple[str, ...]:
        """The model names from -a/--alias (comma-separated), sorted and unique as llama-server's set of them:
        the first is the model's name."""
        if not self.alias:
            return ()
        return tuple(sorted({a.strip() for a in self.alias.split(",") if a.strip()}))
