# -*- test-case-name: tests.test_cli -*-
"""llama-server's "common params" that llamatwist implements.

The flags every llama.cpp tool shares (common/arg.cpp options outside the
sampling group and not specific to the server): model, context and compute,
logging. The other groups: sampling_flags.py, server_flags.py.
"""

from __future__ import annotations

from typing import Final

from llamatwist.cli.convert import (
    cache_type,
    device_list,
    gpu_layers,
    int_min,
    integer,
    kv_overrides,
    main_gpu,
    nonempty,
    number,
    on_off_auto,
    one_of,
    rope_scale,
    split_mode,
    tensor_overrides,
    tensor_split,
    threads,
)
from llamatwist.cli.flag import G_COMPUTE, G_LOG, G_MODEL, G_SAMPLING, Flag
from llamatwist.config import CACHE_TYPE_NAMES, LOAD_MODES, ROPE_SCALING

__all__ = ["COMMON"]

COMMON: Final[tuple[Flag, ...]] = (
    # model
    Flag(("-m", "--model"), "model", G_MODEL, "model path to load",
         "LLAMA_ARG_MODEL", nonempty, metavar="FNAME",
         default="the default model, as --smollm2-default"),
    Flag(("-ngl", "--gpu-layers", "--n-gpu-layers"), "n_gpu_layers", G_MODEL,
         "max. number of layers to store in VRAM, either an exact number, "
         "'auto', or 'all'", "LLAMA_ARG_N_GPU_LAYERS", gpu_layers,
         default="auto"),
    Flag(("-lm", "--load-mode"), "load_mode", G_MODEL,
         "model loading mode: auto (mmap, unless a device does not support it), none (read into memory), "
         "mmap, mlock (keep the model in RAM rather than swapping), mmap+mlock, dio (direct I/O if available)",
         "LLAMA_ARG_LOAD_MODE", one_of(*LOAD_MODES), metavar="MODE"),
    Flag(("--check-tensors",), "check_tensors", G_MODEL, "check model tensor data for invalid values"),
    Flag(("--override-kv",), "override_kv", G_MODEL,
         "override model metadata by key (repeatable, or comma-separated); types: int, float, bool, str. "
         "example: --override-kv tokenizer.ggml.add_bos_token=bool:false",
         None, kv_overrides, metavar="KEY=TYPE:VALUE,...", default="none", append=True),
    Flag(("-dev", "--device"), "devices", G_MODEL,
         "comma-separated list of devices to use for offloading (none = don't offload); "
         "use --list-devices to see the list", "LLAMA_ARG_DEVICE", device_list, metavar="<dev1,dev2,..>",
         default="every GPU device"),
    Flag(("-ot", "--override-tensor"), "override_tensor", G_MODEL, "override tensor buffer type",
         "LLAMA_ARG_OVERRIDE_TENSOR", tensor_overrides, metavar="<tensor name pattern>=<buffer type>,...",
         default="none"),
    Flag(("-sm", "--split-mode"), "split_mode", G_MODEL,
         "how to split the model across multiple GPUs: none (one GPU), layer, row, tensor",
         "LLAMA_ARG_SPLIT_MODE", split_mode, metavar="{none,layer,row,tensor}"),
    Flag(("-ts", "--tensor-split"), "tensor_split", G_MODEL,
         "fraction of the model to offload to each GPU, comma-separated list of proportions, e.g. 3,1",
         "LLAMA_ARG_TENSOR_SPLIT", tensor_split, metavar="N0,N1,N2,...", default="none"),
    Flag(("-mg", "--main-gpu"), "main_gpu", G_MODEL,
         "the GPU to use for the model (with split-mode = none), or for intermediate results and KV "
         "(with split-mode = row)", "LLAMA_ARG_MAIN_GPU", main_gpu, metavar="INDEX"),
    # adapters: (path, scale) pairs in command-line order, the LoRA id is the position
    Flag(("--lora",), "loras", G_MODEL, "path to LoRA adapter (repeatable)", None, str, metavar="FNAME", default="none",
         append=True, nargs=1),
    Flag(("--lora-scaled",), "loras", G_MODEL, "path to LoRA adapter with user defined scaling "
         "(repeatable)", None, str, metavar="FNAME SCALE", default="none", append=True, nargs=2),
    Flag(("--lora-init-without-apply",), "lora_init_without_apply", G_MODEL,
         "load LoRA adapters without applying them (apply later via POST /lora-adapters)"),
    Flag(("--control-vector",), "control_vectors", G_MODEL, "add a control vector (repeatable, summed)",
         None, str, metavar="FNAME", default="none", append=True, nargs=1),
    Flag(("--control-vector-scaled",), "control_vectors", G_MODEL,
         "add a control vector with user defined scaling SCALE (repeatable, summed)", None, str,
         metavar="FNAME SCALE", default="none", append=True, nargs=2),
    Flag(("--control-vector-layer-range",), "control_vector_layer_range", G_MODEL,
         "layer range to apply the control vector(s) to, start and end inclusive", None, str,
         metavar="START END", default="all layers", nargs=2),
    # context, batching and compute
    Flag(("-c", "--ctx-size"), "n_ctx", G_COMPUTE,
         "size of the prompt context (0 = loaded from model)",
         "LLAMA_ARG_CTX_SIZE", int_min(0)),
    Flag(("-b", "--batch-size"), "n_batch", G_COMPUTE,
         "logical maximum batch size", "LLAMA_ARG_BATCH", int_min(1)),
    Flag(("-ub", "--ubatch-size"), "n_ubatch", G_COMPUTE,
         "physical maximum batch size", "LLAMA_ARG_UBATCH", int_min(1)),
    Flag(("-t", "--threads"), "n_threads", G_COMPUTE,
         "number of CPU threads to use during generation (<= 0 = auto)",
         "LLAMA_ARG_THREADS", threads, default="auto"),
    Flag(("-tb", "--threads-batch"), "n_threads_batch", G_COMPUTE,
         "number of threads to use during batch and prompt processing",
         None, threads, default="same as --threads"),
    Flag(("-fa", "--flash-attn"), "flash_attn", G_COMPUTE,
         "set Flash Attention use ('on', 'off', or 'auto')", "LLAMA_ARG_FLASH_ATTN", on_off_auto,
         metavar="[on|off|auto]"),
    Flag(("-ctk", "--cache-type-k"), "cache_type_k", G_COMPUTE,
         f"KV cache data type for K; allowed values: {', '.join(CACHE_TYPE_NAMES)}",
         "LLAMA_ARG_CACHE_TYPE_K", cache_type, metavar="TYPE"),
    Flag(("-ctv", "--cache-type-v"), "cache_type_v", G_COMPUTE,
         f"KV cache data type for V; allowed values: {', '.join(CACHE_TYPE_NAMES)}",
         "LLAMA_ARG_CACHE_TYPE_V", cache_type, metavar="TYPE"),
    Flag(("-kvo", "--kv-offload"), "kv_offload", G_COMPUTE,
         "whether to enable KV cache offloading", "LLAMA_ARG_KV_OFFLOAD", neg=("-nkvo", "--no-kv-offload")),
    Flag(("-dt", "--defrag-thold"), "defrag_thold", G_COMPUTE,
         "KV cache defragmentation threshold (DEPRECATED: ignored, as in llama-server)",
         "LLAMA_ARG_DEFRAG_THOLD", number),
    # RoPE/YaRN: 0 and negative values mean "as the model says"
    Flag(("--rope-scaling",), "rope_scaling", G_COMPUTE,
         "RoPE frequency scaling method, defaults to linear unless specified by the model",
         "LLAMA_ARG_ROPE_SCALING_TYPE", one_of(*ROPE_SCALING), metavar="{none,linear,yarn}", default="model"),
    Flag(("--rope-scale",), "rope_freq_scale", G_COMPUTE,
         "RoPE context scaling factor, expands context by a factor of N", "LLAMA_ARG_ROPE_SCALE",
         rope_scale, default="loaded from model"),
    Flag(("--rope-freq-base",), "rope_freq_base", G_COMPUTE,
         "RoPE base frequency, used by NTK-aware scaling", "LLAMA_ARG_ROPE_FREQ_BASE", number,
         default="loaded from model"),
    Flag(("--rope-freq-scale",), "rope_freq_scale", G_COMPUTE,
         "RoPE frequency scaling factor, expands context by a factor of 1/N", "LLAMA_ARG_ROPE_FREQ_SCALE",
         number, default="loaded from model"),
    Flag(("--yarn-orig-ctx",), "yarn_orig_ctx", G_COMPUTE,
         "YaRN: original context size of model (0 = model training context size)", "LLAMA_ARG_YARN_ORIG_CTX",
         int_min(0)),
    Flag(("--yarn-ext-factor",), "yarn_ext_factor", G_COMPUTE,
         "YaRN: extrapolation mix factor (0.0 = full interpolation, negative = from the model)",
         "LLAMA_ARG_YARN_EXT_FACTOR", number),
    Flag(("--yarn-attn-factor",), "yarn_attn_factor", G_COMPUTE,
         "YaRN: scale sqrt(t) or attention magnitude (negative = from the model)", "LLAMA_ARG_YARN_ATTN_FACTOR",
         number),
    Flag(("--yarn-beta-slow",), "yarn_beta_slow", G_COMPUTE,
         "YaRN: high correction dim or alpha (negative = from the model)", "LLAMA_ARG_YARN_BETA_SLOW", number),
    Flag(("--yarn-beta-fast",), "yarn_beta_fast", G_COMPUTE,
         "YaRN: low correction dim or beta (negative = from the model)", "LLAMA_ARG_YARN_BETA_FAST", number),
    # sampling (defaults for each request)
    Flag(("-n", "--predict", "--n-predict"), "sampling.n_predict", G_SAMPLING,
         "number of tokens to predict (-1 = infinity)", "LLAMA_ARG_N_PREDICT",
         int_min(-1)),
    Flag(("--keep",), "sampling.n_keep", G_SAMPLING,
         "number of tokens to keep from the initial prompt (-1 = all)", None,
         int_min(-1)),
    # logging
    Flag(("-v", "--verbose", "--log-verbose"), "verbose", G_LOG,
         "log everything, debug messages included"),
    Flag(("--log-disable",), "log_disable", G_LOG, "disable logging"),
    Flag(("--log-file",), "log_file", G_LOG,
         "also write the log to this file (truncated at start)",
         "LLAMA_ARG_LOG_FILE", nonempty, metavar="FNAME", default="unset"),
    Flag(("--log-colors",), "log_colors", G_LOG,
         "set colored logging ('on', 'off', or 'auto'); 'auto' enables colors when output is to a terminal",
         "LLAMA_ARG_LOG_COLORS", on_off_auto, metavar="[on|off|auto]"),
    Flag(("-lv", "--verbosity", "--log-verbosity"), "log_verbosity", G_LOG,
         "set the verbosity threshold: messages with a higher verbosity are ignored; 0: generic output, "
         "1: error, 2: warning, 3: info, 4: trace, 5: debug", "LLAMA_ARG_LOG_VERBOSITY", integer),
    Flag(("--log-prefix",), "log_prefix", G_LOG, "enable the level prefix in log messages",
         "LLAMA_ARG_LOG_PREFIX", neg=("--no-log-prefix",)),
    Flag(("--log-timestamps",), "log_timestamps", G_LOG, "enable timestamps in log messages",
         "LLAMA_ARG_LOG_TIMESTAMPS", neg=("--no-log-timestamps",)),
    Flag(("--perf",), "perf", G_LOG, "whether to enable internal libllama performance timings",
         "LLAMA_ARG_PERF", neg=("--no-perf",)),
    Flag(("-e", "--escape"), "escape", G_LOG,
         "whether to process escape sequences (no effect on the server, as in llama-server)",
         neg=("--no-escape",)),
)  # fmt: skip
