"""Command line, environment, twistd plugin and logging set-up.

Fast and pure: no native library and no model. Processes are started only
where the behaviour is about a process (exit status, -h, twistd, signals).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, cast

import pytest

from llamatwist import cli, logs
from llamatwist.cli import FLAGS, UNIMPLEMENTED, ConfigError, parse_config
from llamatwist.cli.environ import unknown_env
from llamatwist.cli.unimplemented import _NO_SPEECH
from llamatwist.config import SamplingDefaults, ServerConfig

REPO = Path(__file__).resolve().parent.parent


def run(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run Python in a clean LLAMA_ARG_*-free environment, the repo importable."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")}
    full["PYTHONPATH"] = str(REPO)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        capture_output=True,
        text=True,
        env=full,
        cwd=REPO,
        timeout=60,
    )


def field(config: ServerConfig, path: str) -> Any:
    obj: Any = config
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def refused(argv: list[str], environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(argv, environ or {})
    return info.value


# A valid value for every implemented value flag, and what it becomes.
# an on/off flag that sets other fields: the one it is tested by
_SEEN_AS: Final = {"agent": "ui_mcp_proxy"}

SAMPLES: dict[str, tuple[str, Any]] = {
    "model": ("m.gguf", "m.gguf"),
    "alias": (" a , b ,", "a,b"),
    "tags": (" x,y ", "x,y"),
    "models_dir": ("/", "/"),
    "models_preset": ("/etc/hostname", "/etc/hostname"),
    "models_max": ("2", 2),
    "docker_repo": ("smollm2:135M-Q4_0", "smollm2:135M-Q4_0"),
    "ui_config": ('{"theme": "dark"}', {"theme": "dark"}),
    "server_tools": (" read_file, get_info ,", ("read_file", "get_info")),
    "tools_runtime": ("ssh:me@host", "ssh:me@host"),
    "mcp_servers_config": ("/etc/mcp.json", "/etc/mcp.json"),
    "mcp_servers_json": ('{"mcpServers": {}}', '{"mcpServers": {}}'),
    "sampling.sse_ping_interval": ("-1", -1),
    "model_draft": ("d.gguf", "d.gguf"),
    "spec_type": ("ngram-simple", "ngram-simple"),
    "draft_max": ("8", 8),
    "spec_synth_len": ("2.5", 2.5),
    "spec_synth_rates": (" 1, 0.5,0 ", (1.0, 0.5, 0.0)),
    "draft_min": ("2", 2),
    "draft_p_min": ("0.5", 0.5),
    "ctx_size_draft": ("1024", 1024),
    "gpu_layers_draft": ("0", 0),
    "device_draft": ("none", ()),
    "spec_ngram_size_n": ("6", 6),
    "spec_ngram_size_m": ("24", 24),
    "spec_ngram_min_hits": ("2", 2),
    "spec_ngram_mod_n_match": ("16", 16),
    "spec_ngram_mod_n_min": ("8", 8),
    "spec_ngram_mod_n_max": ("32", 32),
    "spec_ngram_map_k_size_n": ("6", 6),
    "spec_ngram_map_k_size_m": ("24", 24),
    "spec_ngram_map_k_min_hits": ("2", 2),
    "spec_ngram_map_k4v_size_n": ("6", 6),
    "spec_ngram_map_k4v_size_m": ("24", 24),
    "spec_ngram_map_k4v_min_hits": ("2", 2),
    "draft_p_split": ("0.25", 0.25),
    "lookup_cache_static": ("s.bin", "s.bin"),
    "lookup_cache_dynamic": ("d.bin", "d.bin"),
    "static_path": ("/", "/"),
    "media_path": ("/", "/"),
    "sleep_idle_seconds": ("30", 30),
    "n_cpu_moe": ("2", 2),
    "n_cpu_ffn": ("3", 3),
    "threads_draft": ("2", 2),
    "threads_batch_draft": ("3", 3),
    "cpu_mask_draft": ("0x3", (0, 1)),
    "cpu_strict_draft": ("1", True),
    "prio_draft": ("2", 2),
    "poll_draft": ("0", 0),
    "cpu_mask_batch_draft": ("0x1", (0,)),
    "cpu_strict_batch_draft": ("0", False),
    "prio_batch_draft": ("1", 1),
    "poll_batch_draft": ("100", 100),
    "cache_type_k_draft": ("q8_0", "q8_0"),
    "cache_type_v_draft": ("q4_0", "q4_0"),
    "override_tensor_draft": ("a=CPU", (("a", "CPU"),)),
    "n_cpu_moe_draft": ("1", 1),
    "mmproj": ("p.gguf", "p.gguf"),
    "mmproj_url": ("http://127.0.0.1:1/p.gguf", "http://127.0.0.1:1/p.gguf"),
    "image_min_tokens": ("64", 64),
    "image_max_tokens": ("256", 256),
    "kv_unified_per_slot": ("1024", 1024),
    "n_ctx_checkpoints": ("4", 4),
    "checkpoint_min_step": ("0", 0),
    "mtmd_batch_max_tokens": ("512", 512),
    "video_fps": ("2.5", 2.5),
    "video_timestamp_interval_ms": ("1000", 1000),
    "video_ffmpeg_dir": ("/opt/ffmpeg/bin", "/opt/ffmpeg/bin"),
    "sampling.embd_normalize": ("-1", -1),
    "sampling.stop": ("User:", ("User:",)),
    "slot_save_path": ("/tmp/slots", "/tmp/slots"),
    "grammar": ('root ::= "a"', 'root ::= "a"'),
    "grammar_file": ("g.gbnf", "g.gbnf"),
    "json_schema": ('{"type": "object"}', '{"type": "object"}'),
    "json_schema_file": ("s.json", "s.json"),
    "n_gpu_layers": ("12", 12),
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("8081", 8081),
    "n_ctx": ("4096", 4096),
    "n_parallel": ("3", 3),
    "n_batch": ("512", 512),
    "n_ubatch": ("128", 128),
    "n_threads": ("3", 3),
    "n_threads_batch": ("5", 5),
    "sampling.n_predict": ("128", 128),
    "sampling.seed": ("42", 42),
    "sampling.temperature": ("0.5", 0.5),
    "sampling.top_k": ("10", 10),
    "sampling.top_p": ("0.5", 0.5),
    "sampling.min_p": ("0.1", 0.1),
    "sampling.n_keep": ("5", 5),
    "sampling.repeat_last_n": ("32", 32),
    "sampling.repeat_penalty": ("1.1", 1.1),
    "sampling.presence_penalty": ("0.5", 0.5),
    "sampling.frequency_penalty": ("0.25", 0.25),
    "sampling.samplers": ("top_k;Temp;bogus;min-p", ("top_k", "temperature", "min_p")),
    "sampling.top_n_sigma": ("1.5", 1.5),
    "sampling.xtc_probability": ("0.5", 0.5),
    "sampling.xtc_threshold": ("0.2", 0.2),
    "sampling.typical_p": ("0.9", 0.9),
    "sampling.dry_multiplier": ("0.8", 0.8),
    "sampling.dry_base": ("2", 2.0),
    "sampling.dry_allowed_length": ("3", 3),
    "sampling.dry_penalty_last_n": ("128", 128),
    "sampling.dry_sequence_breakers": ("|", ("|",)),
    "loras": ("a.gguf", (("a.gguf", 1.0),)),
    "control_vectors": ("c.gguf", (("c.gguf", 1.0),)),
    "sampling.adaptive_target": ("0.5", 0.5),
    "sampling.adaptive_decay": ("0.5", 0.5),
    "sampling.dynatemp_range": ("0.5", 0.5),
    "sampling.dynatemp_exponent": ("2", 2.0),
    "sampling.mirostat": ("2", 2),
    "sampling.mirostat_eta": ("0.2", 0.2),
    "sampling.mirostat_tau": ("4", 4.0),
    "sampling.logit_bias": ("15043-1.5", ((15043, -1.5),)),
    "log_file": ("x.log", "x.log"),
    "pooling": ("cls", "cls"),
    "api_prefix": ("api/v1/", "/api/v1"),
    "api_keys": ('k1,,"k,2"', ("k1", "k,2")),
    "ssl_key_file": ("key.pem", "key.pem"),
    "ssl_cert_file": ("cert.pem", "cert.pem"),
    "timeout": ("30", 30),
    "n_threads_http": ("8", 8),
    "cors_origins": ("https://a.example", "https://a.example"),
    "cors_methods": ("GET, POST", "GET, POST"),
    "cors_headers": ("Authorization", "Authorization"),
    "chat_template": ("chatml", "chatml"),
    "chat_template_file": ("t.jinja", "t.jinja"),
    "chat_template_kwargs": ('{"enable_thinking": false, "n": [1]}', {"enable_thinking": False, "n": [1]}),
    "reasoning_format": ("deepseek", "deepseek"),
    "reasoning": ("off", "off"),
    "reasoning_effort": ("high", "high"),
    "reasoning_budget": ("0", 0),
    "reasoning_budget_message": ("Done.", "Done."),
    "flash_attn": ("on", "on"),
    "cache_type_k": ("q8_0", "q8_0"),
    "cache_type_v": ("bf16", "bf16"),
    "defrag_thold": ("0.5", 0.5),
    "cache_ram_mib": ("-1", -1),
    "slot_prompt_similarity": ("0.5", 0.5),
    "responses_store_size": ("2", 2),
    "sampling.n_cache_reuse": ("256", 256),
    "rope_scaling": ("yarn", "yarn"),
    "rope_freq_base": ("10000", 10000.0),
    "rope_freq_scale": ("1", 1.0),  # also --rope-scale's field (1/N): 1 reads the same both ways
    "yarn_orig_ctx": ("4096", 4096),
    "yarn_ext_factor": ("0.5", 0.5),
    "yarn_attn_factor": ("1.5", 1.5),
    "yarn_beta_slow": ("2", 2.0),
    "yarn_beta_fast": ("16", 16.0),
    "load_mode": ("mmap+mlock", "mmap+mlock"),
    "lazy_mode": ("on", "on"),
    "mmproj_device": ("none", ()),
    "prompts_log_dir": ("/tmp/prompts", "/tmp/prompts"),
    "log_colors": ("off", "off"),
    "hf_repo": ("ggml-org/m-GGUF:q8_0", "ggml-org/m-GGUF:q8_0"),
    "hf_file": ("m.gguf", "m.gguf"),
    "hf_token": ("hf_x", "hf_x"),
    "hf_repo_draft": ("u/d", "u/d"),
    "model_url": ("http://127.0.0.1:1/m.gguf", "http://127.0.0.1:1/m.gguf"),
    "cpu_mask": ("0x1f", (0, 1, 2, 3, 4)),
    "cpu_mask_batch": ("A", (1, 3)),
    "cpu_strict": ("1", True),
    "cpu_strict_batch": ("0", False),
    "prio": ("-1", -1),
    "prio_batch": ("2", 2),
    "poll": ("0", 0),
    "poll_batch": ("100", 100),
    "numa": ("isolate", "isolate"),
    "devices": ("none", ()),
    "override_tensor": ("token_embd=CPU", (("token_embd", "CPU"),)),
    "split_mode": ("none", "none"),
    "main_gpu": ("0", 0),
    "tensor_split": ("0,0", (0.0, 0.0)),
    "rpc_servers": (" 10.0.0.2:50052,gpu-box:50053 ", ("10.0.0.2:50052", "gpu-box:50053")),
    "fit": ("off", False),
    "fit_target_mib": ("2048,512", (2048, 512)),
    "fit_ctx": ("8192", 8192),
    "log_verbosity": ("4", 4),
    "override_kv": ("a.b=int:1,c=str:x y", (("a.b", "int", "1"), ("c", "str", "x y"))),
}
# Flags sharing a field with another spelling of another syntax.
_UI_CONFIG_FILE = (str(Path(__file__).parent / "data" / "ui_config.json"), {"theme": "dark", "showTokensPerSecond": True})
SAMPLES_BY_NAME: dict[str, tuple[str, Any]] = {
    "--ui-config-file": _UI_CONFIG_FILE,
    "--webui-config-file": _UI_CONFIG_FILE,
    "--sampler-seq": ("kXt", ("top_k", "temperature")),
    "--sampling-seq": ("edskypmxt", SamplingDefaults().samplers),
    "--rope-scale": ("4", 0.25),
    "-Cr": ("2-4", (2, 3, 4)),
    "--cpu-range": ("-1", (0, 1)),
    "-Crb": ("510-", (510, 511)),
    "--cpu-range-batch": ("3-3", (3,)),
    "--spec-draft-cpu-range": ("1-2", (1, 2)),
    "-Crd": ("0-0", (0,)),
    "--cpu-range-draft": ("2-3", (2, 3)),
}
# --api-key-file is read while parsing and feeds api_keys: tested on its own; so are the flags
# taking two values (--lora-scaled, --control-vector-scaled, --control-vector-layer-range: test_lora.py).
VALUE_FLAGS = [f for f in FLAGS if f.convert is not None and f.field != "api_key_file" and (f.nargs or 1) == 1]
ONOFF_FLAGS = [f for f in FLAGS if f.convert is None]


# --------------------------------------------------------------------------
# Defaults


def test_defaults_are_llama_servers() -> None:
    config = parse_config([], {})
    assert config == ServerConfig()
    assert config.model is None  # the default model
    assert (config.n_parallel, config.kv_unified) == (4, True)  # -np auto
    assert config.n_ctx == 0
    assert (config.n_batch, config.n_ubatch) == (2048, 512)
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert (config.slots, config.metrics) == (True, False)
    assert config.cont_batching
    assert config.warmup
    assert config.n_gpu_layers == -1
    assert config.sampling == SamplingDefaults()
    s = config.sampling
    assert (s.temperature, s.top_k, s.top_p, s.min_p) == (0.8, 40, 0.95, 0.05)
    assert (s.n_predict, s.seed, s.repeat_last_n, s.repeat_penalty) == (-1, -1, 64, 1.0)


def test_every_value_flag_has_a_sample() -> None:
    assert {f.field for f in VALUE_FLAGS} == set(SAMPLES)


# --------------------------------------------------------------------------
# Flags, short and long


@pytest.mark.parametrize(
    ("name", "path"), [(n, f.field) for f in VALUE_FLAGS for n in f.names]
)
def test_value_flag_every_spelling(name: str, path: str) -> None:
    text, expected = SAMPLES_BY_NAME.get(name) or SAMPLES[path]
    assert field(parse_config([name, text], {}), path) == expected
    assert field(parse_config([f"{name}={text}"], {}), path) == expected


@pytest.mark.parametrize(
    ("name", "path", "on"),
    [(n, _SEEN_AS.get(f.field, f.field), True) for f in ONOFF_FLAGS for n in f.names]
    + [(n, _SEEN_AS.get(f.field, f.field), False) for f in ONOFF_FLAGS for n in f.neg],
)
def test_onoff_flag_every_spelling(name: str, path: str, on: bool) -> None:
    # -kvu only matters with an explicit slot count (auto forces it on).
    assert field(parse_config(["-np", "2", name], {}), path) is on


def test_last_flag_wins() -> None:
    assert parse_config(["-cb", "-nocb"], {}).cont_batching is False
    assert parse_config(["--no-slots", "--slots"], {}).slots is True
    assert parse_config(["--port", "1", "--port", "2"], {}).port == 2


def test_underscores_in_long_names_read_as_dashes() -> None:
    config = parse_config(["--ctx_size", "128", "--no_slots"], {})
    assert (config.n_ctx, config.slots) == (128, False)


def test_parallel_auto_means_four_slots_with_unified_kv() -> None:
    for argv in ([], ["-np", "-1"], ["-np", "-1", "-no-kvu"], ["--parallel=-3"]):
        config = parse_config(argv, {})
        assert (config.n_parallel, config.kv_unified) == (4, True), argv
    assert parse_config(["-np", "2"], {}).kv_unified is False
    assert parse_config(["-np", "2", "-kvu"], {}).kv_unified is True


def test_gpu_layers_words_and_seed_random() -> None:
    assert parse_config(["-ngl", "auto"], {}).n_gpu_layers == -1
    assert parse_config(["-ngl", "all"], {}).n_gpu_layers == -2
    assert parse_config(["-s", "4294967295"], {}).sampling.seed == -1
    assert parse_config(["--temp", "-1"], {}).sampling.temperature == 0.0  # clamped


def test_threads_not_positive_means_auto() -> None:
    assert parse_config(["-t", "0", "-tb", "-5"], {}).n_threads == -1
    assert parse_config(["-t", "0", "-tb", "-5"], {}).n_threads_batch == -1


def test_smollm2_preset_selects_the_default_model() -> None:
    assert parse_config(["--smollm2-default"], {}).model is None
    env = {"LLAMA_ARG_MODEL": "env.gguf"}
    assert parse_config(["--smollm2-default"], env).model is None  # flag beats env
    assert parse_config(["--smollm2-default", "-m", "x.gguf"], {}).model == "x.gguf"
    assert parse_config(["-m", "x.gguf", "--smollm2-default"], {}).model is None


def test_aliases_property() -> None:
    assert parse_config(["-a", "one, two"], {}).aliases == ("one", "two")
    assert ServerConfig().aliases == ()


# --------------------------------------------------------------------------
# Environment


@pytest.mark.parametrize("flag", [f for f in VALUE_FLAGS if f.env], ids=lambda f: f.env)
def test_env_var_used_when_flag_absent(flag: cli.Flag) -> None:
    assert flag.env is not None
    text, expected = SAMPLES_BY_NAME.get(flag.names[0]) or SAMPLES[flag.field]
    assert field(parse_config([], {flag.env: text}), flag.field) == expected


def test_older_variable_names_are_read_too() -> None:
    # the pinned llama-server's LLAMA_ARG_SPEC_DRAFT_* and the older LLAMA_ARG_DRAFT_* (its name wins)
    old = {"LLAMA_ARG_DRAFT_MAX": "7", "LLAMA_ARG_DRAFT_MIN": "2", "LLAMA_ARG_DRAFT_P_MIN": "0.5"}
    config = parse_config([], old)
    assert (config.draft_max, config.draft_min, config.draft_p_min) == (7, 2, 0.5)
    assert parse_config([], {**old, "LLAMA_ARG_SPEC_DRAFT_N_MAX": "9"}).draft_max == 9
    assert parse_config(["--draft-max", "5"], old).draft_max == 5
    assert unknown_env(old, FLAGS) == []
    with pytest.raises(ConfigError, match="LLAMA_ARG_DRAFT_MAX"):
        parse_config([], {"LLAMA_ARG_DRAFT_MAX": "x"})
    text = cli.build_parser().format_help()
    assert "(env: LLAMA_ARG_SPEC_DRAFT_N_MAX) (or LLAMA_ARG_DRAFT_MAX)" in " ".join(text.split())


def test_flag_beats_env_var() -> None:
    env = {"LLAMA_ARG_PORT": "9000", "LLAMA_ARG_CTX_SIZE": "64"}
    config = parse_config(["--port", "9001"], env)
    assert (config.port, config.n_ctx) == (9001, 64)
    env = {"LLAMA_ARG_CONT_BATCHING": "off"}
    assert parse_config(["-cb"], env).cont_batching is True


def test_onoff_env_vars() -> None:
    assert parse_config([], {"LLAMA_ARG_ENDPOINT_METRICS": "1"}).metrics is True
    # A switch's variable acts only when truthy, as in llama-server.
    assert parse_config([], {"LLAMA_ARG_ENDPOINT_METRICS": "0"}).metrics is False
    assert parse_config([], {"LLAMA_ARG_ENDPOINT_SLOTS": "disabled"}).slots is False
    assert parse_config([], {"LLAMA_ARG_ENDPOINT_SLOTS": "on"}).slots is True
    # LLAMA_ARG_NO_<name> switches off by its mere presence.
    assert parse_config([], {"LLAMA_ARG_NO_CONT_BATCHING": ""}).cont_batching is False
    env = {"LLAMA_ARG_N_PARALLEL": "2", "LLAMA_ARG_KV_UNIFIED": "true"}
    assert parse_config([], env).kv_unified is True
    err = refused([], {"LLAMA_ARG_ENDPOINT_SLOTS": "maybe"})
    assert err.exit_code == 2
    assert "LLAMA_ARG_ENDPOINT_SLOTS" in err.message


# --------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("name, reason", [(n, u.reason) for u in UNIMPLEMENTED for n in u.names.split()])
def test_unimplemented_flag_refused(name: str, reason: str | None) -> None:
    err = refused(["-m", "x.gguf", name])
    assert err.exit_code == 1
    if reason:
        assert err.message == f"flag {name} is not supported: {reason}"
    else:
        assert err.message == f"flag {name} is not implemented yet in llamatwist"


def test_unimplemented_flag_value_is_not_a_stray_argument() -> None:
    err = refused(["--model-vocoder", "v.gguf", "-np", "2"])
    assert err.exit_code == 1
    assert err.message.startswith("flag --model-vocoder is not supported: ")


@pytest.mark.parametrize(
    "env", sorted({u.env for u in UNIMPLEMENTED if u.env and u.env != "HF_TOKEN"})
)
def test_unimplemented_env_var_refused(env: str) -> None:
    err = refused([], {env: "1"})
    assert err.exit_code == 1
    assert ("not implemented yet in llamatwist" in err.message) != ("is not supported: " in err.message)
    assert err.message.endswith(f"(set by environment variable {env})")


def test_unimplemented_env_var_details() -> None:
    assert parse_config([], {"LLAMA_ARG_NO_UI_MCP_PROXY": "1"}).ui_mcp_proxy is False
    assert parse_config([], {"LLAMA_ARG_NO_SKIP_CHAT_PARSING": "1"}).skip_chat_parsing is False
    assert parse_config([], {"LLAMA_ARG_NO_REPACK": "1"}).repack is False
    assert parse_config([], {"LLAMA_ARG_SWA_FULL": "0"}).swa_full is False  # no effect in llama-server
    assert parse_config([], {"HF_TOKEN": "t"})  # shared with other tools


def test_every_llama_server_flag_is_known_once() -> None:
    names = [n for u in UNIMPLEMENTED for n in u.names.split()]
    for flag in FLAGS:
        names += [*flag.names, *flag.neg]
    names += ["-h", "--help", "--usage", "--version"]
    assert len(names) == len(set(names))
    # A sample of llama-server's server flags, to catch a truncated table.
    for name in ("--jinja", "-fa", "--api-key", "--embeddings", "-hf", "--lora"):
        assert name in names


def test_unknown_flag_is_a_usage_error() -> None:
    err = refused(["--no-such-flag"])
    assert (err.exit_code, err.message) == (2, "unrecognized arguments: --no-such-flag")
    assert refused(["stray"]).exit_code == 2
    assert refused(["--temperatur", "1"]).exit_code == 2  # no abbreviations


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-np", "0"], "-np/--parallel"),
        (["--port", "abc"], "expected an integer"),
        (["--port", "65536"], "between 0 and 65535"),
        (["-c", "-1"], "must be >= 0"),
        (["-b", "0"], "must be >= 1"),
        (["--top-p", "1.5"], "between 0.0 and 1.0"),
        (["--temp", "nan"], "finite"),
        (["--repeat-penalty", "0"], "greater than 0"),
        (["--repeat-last-n", "-1"], "must be >= 0"),
        (["-ngl", "many"], "'auto' or 'all'"),
        (["-s", "-2"], "-1 (random)"),
        (["-n", "-3"], "must be >= -1"),
        (["--host", " "], "must not be empty"),
        (["-m", ""], "must not be empty"),
        (["--port"], "expected one argument"),
        (["--pooling", "max"], "must be one of none, mean, cls, last, rank"),
        (["--chat-template-kwargs", "{bad"], "must be a valid JSON object string"),
        (["--chat-template-kwargs", "[1, 2]"], "must be a JSON object, got list"),
        (["--api-prefix", "/a?b"], "must be a URL path"),
        (["-to", "soon"], "expected an integer"),
    ],
)
def test_invalid_values(argv: list[str], needle: str) -> None:
    err = refused(argv)
    assert err.exit_code == 2
    assert needle in err.message


def test_invalid_env_value() -> None:
    err = refused([], {"LLAMA_ARG_N_PARALLEL": "0"})
    assert err.exit_code == 2
    assert err.message.startswith(
        "invalid value for environment variable LLAMA_ARG_N_PARALLEL"
    )
    # The command line wins, so a bad variable it overrides does not matter.
    assert parse_config(["--port", "1"], {"LLAMA_ARG_PORT": "x"}).port == 1


def test_http_and_chat_defaults_are_llama_servers() -> None:
    config = parse_config([], {})
    assert (config.api_keys, config.api_prefix) == ((), "")
    assert (config.ssl_key_file, config.ssl_cert_file) == (None, None)
    assert (config.timeout, config.n_threads_http) == (3600, -1)
    assert (config.cors_origins, config.cors_methods, config.cors_headers) == ("*", "GET, POST, DELETE, OPTIONS", "*")
    assert config.cors_credentials is True
    assert (config.endpoint_props, config.embeddings, config.reranking, config.pooling) == (False, False, False, None)
    assert (config.jinja, config.prefill_assistant, config.spm_infill) == (True, True, False)
    assert (config.chat_template, config.chat_template_file, config.chat_template_kwargs) == (None, None, {})


def test_parse_csv_row_is_llama_cpps() -> None:
    assert cli.parse_csv_row("a,b") == ["a", "b"]
    assert cli.parse_csv_row("") == [""]
    assert cli.parse_csv_row(" a , b,") == [" a ", " b", ""]  # nothing trimmed
    assert cli.parse_csv_row('"a,b",c') == ["a,b", "c"]
    assert cli.parse_csv_row('"say ""hi""",x') == ['say "hi"', "x"]
    assert cli.parse_csv_row('ab"c,d') == ['ab"c', "d"]  # a quote inside a field is literal


def test_api_keys_from_flag_env_and_file(tmp_path: Path) -> None:
    assert parse_config(["--api-key", "k1,k2"], {}).api_keys == ("k1", "k2")
    assert parse_config(["--api-key", ",k1,,"], {}).api_keys == ("k1",)  # empty keys skipped
    assert parse_config(["--api-key", ""], {}).api_keys == ()
    assert parse_config([], {"LLAMA_API_KEY": "e1,e2"}).api_keys == ("e1", "e2")
    assert parse_config(["--api-key", "k"], {"LLAMA_API_KEY": "e"}).api_keys == ("k",)

    keys = tmp_path / "keys.txt"
    keys.write_bytes(b"# a comment\nf1\n\n f2 \r\n#f3\nf4")
    assert cli.parse_api_key_file(keys.read_text()) == ("f1", " f2 ", "f4")
    assert parse_config(["--api-key-file", str(keys)], {}).api_keys == ("f1", " f2 ", "f4")
    merged = parse_config(["--api-key-file", str(keys), "--api-key", "k1"], {})
    assert merged.api_keys == ("k1", "f1", " f2 ", "f4")
    from_env = parse_config([], {"LLAMA_ARG_API_KEY_FILE": str(keys), "LLAMA_API_KEY": "e"})
    assert from_env.api_keys == ("e", "f1", " f2 ", "f4")


def test_api_key_file_errors(tmp_path: Path) -> None:
    err = refused(["--api-key-file", str(tmp_path / "missing")])
    assert err.exit_code == 1
    assert err.message.startswith(f"failed to open file '{tmp_path / 'missing'}'")
    assert refused(["--api-key-file", str(tmp_path)]).exit_code == 1  # a directory
    empty = tmp_path / "empty"
    empty.write_text("# no key here\n\n")
    err = refused(["--api-key-file", str(empty)])
    assert (err.exit_code, err.message) == (1, f"API key file '{empty}' contains no API key")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\n")
    assert "not valid UTF-8" in refused(["--api-key-file", str(binary)]).message
    assert refused(["--api-key-file", ""]).exit_code == 2


def test_rerank_implies_embeddings_and_rank_pooling() -> None:
    config = parse_config(["--rerank"], {})
    assert (config.reranking, config.embeddings, config.pooling) == (True, True, "rank")
    config = parse_config(["--reranking", "--pooling", "mean"], {})
    assert (config.reranking, config.embeddings, config.pooling) == (True, True, "mean")
    config = parse_config([], {"LLAMA_ARG_RERANKING": "1"})
    assert (config.embeddings, config.pooling) == (True, "rank")
    assert parse_config(["--embeddings"], {}).pooling is None


def test_api_prefix_normalized() -> None:
    for text, expected in (("/api", "/api"), ("api", "/api"), ("/api/", "/api"), ("/", ""), ("", ""), ("/a/b", "/a/b")):
        assert parse_config(["--api-prefix", text], {}).api_prefix == expected, text


def test_onoff_http_and_chat_env_vars() -> None:
    assert parse_config([], {"LLAMA_ARG_NO_CORS_CREDENTIALS": ""}).cors_credentials is False
    assert parse_config([], {"LLAMA_ARG_JINJA": "off"}).jinja is False
    assert parse_config([], {"LLAMA_ARG_NO_JINJA": "1"}).jinja is False
    assert parse_config([], {"LLAMA_ARG_NO_PREFILL_ASSISTANT": ""}).prefill_assistant is False
    assert parse_config([], {"LLAMA_ARG_ENDPOINT_PROPS": "true"}).endpoint_props is True
    assert parse_config([], {"LLAMA_ARG_EMBEDDINGS": "1"}).embeddings is True
    assert parse_config(["--no-jinja", "--jinja"], {}).jinja is True
    assert parse_config(["-to", "0"], {}).timeout == 0
    assert parse_config(["--threads-http", "0"], {}).n_threads_http == -1


def test_host_lists_and_tags_parse() -> None:
    assert parse_config(["--host", " 127.0.0.1 , ::1"], {}).host == "127.0.0.1,::1"
    assert parse_config(["--tags", "b, a,,b"], {}).model_tags == ("a", "b")
    assert parse_config(["-bs"], {}).sampling.backend_sampling is True
    assert parse_config([], {"LLAMA_ARG_TAGS": "t"}).model_tags == ("t",)
    assert "nor hold an empty address" in str(refused(["--host", "127.0.0.1,"]))


# --------------------------------------------------------------------------
# The process: exit status, -h, --version


def test_process_exit_statuses() -> None:
    proc = run("-m", "llamatwist", "--model-vocoder", "v.gguf")
    assert proc.returncode == 1
    assert proc.stderr == f"error: flag --model-vocoder is not supported: {_NO_SPEECH}\n"

    proc = run("-m", "llamatwist", "--spec-synth-len", "2")  # llama-server's start-up error, before any load
    assert proc.returncode == 1
    assert proc.stderr == "error: synthetic acceptance requires an initialized speculative decoding context\n"

    proc = run("-m", "llamatwist", "--api-key-file", "/nonexistent/keys.txt")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: failed to open file '/nonexistent/keys.txt': ")

    proc = run("-m", "llamatwist", env={"LLAMA_ARG_HF_REPO_V": "org/vocoder"})
    assert proc.returncode == 1
    assert "flag --hf-repo-v is not supported" in proc.stderr

    proc = run("-m", "llamatwist", "--bogus")
    assert proc.returncode == 2
    assert "llamatwist: error: unrecognized arguments: --bogus" in proc.stderr

    proc = run("-m", "llamatwist", "-np", "0")
    assert proc.returncode == 2
    assert "-np/--parallel" in proc.stderr


def test_help_lists_every_flag_with_default_and_env() -> None:
    proc = run("-m", "llamatwist", "-h")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # undo the wrapping
    for flag in FLAGS:
        for name in (*flag.names, *flag.neg):
            assert name in text
        assert f"(default: {cli.show_default(flag)})" in text
        if flag.env:
            assert f"(env: {flag.env})" in text
    for expected in ("(default: 2048)", "(default: 8080)", "(default: 0.80)"):
        assert expected in text
    assert "--smollm2-default" in text
    assert "--no-host" in text and "--model-vocoder" in text  # an implemented flag, and one refused


def test_help_and_parsing_need_no_heavy_imports() -> None:
    code = textwrap.dedent(
        """
        import sys
        from llamatwist import cli
        cli.build_parser().format_help()
        cli.parse_config(["-m", "x.gguf"], {})
        heavy = [m for m in sys.modules
                 if m.split(".")[0] in ("twisted", "cffi", "klein")
                 or m.startswith(("llamatwist.native", "llamatwist.engine"))]
        print(heavy)
        """
    )
    proc = run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_version() -> None:
    proc = run("-m", "llamatwist", "--version")
    assert proc.returncode == 0, proc.stderr
    first, second, backend, *devices = proc.stdout.splitlines()
    assert first.startswith("llamatwist ")
    pin = REPO / "llama_pin.json"
    commit = json.loads(pin.read_text())["commit"] if pin.exists() else "unknown"
    assert second == f"llama.cpp commit {commit}"
    # the build's backend, then each device ggml lists (the CPU among them)
    assert backend.startswith("backend: ") and backend != "backend: "
    assert any(d.startswith("device: CPU (cpu): ") for d in devices), devices


# --------------------------------------------------------------------------
# twistd plugin


def test_twistd_lists_the_plugin() -> None:
    proc = run("-m", "twisted", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "llamatwist" in proc.stdout


def test_twistd_passes_arguments_verbatim() -> None:
    twistd = "from twisted.scripts.twistd import run; run()"
    proc = run("-c", twistd, "-n", "llamatwist", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("llamatwist ")

    proc = run("-c", twistd, "-n", "llamatwist", "-m", "x.gguf", "-np", "0")
    assert proc.returncode == 2
    assert "-np/--parallel" in proc.stderr

    proc = run("-m", "twisted", "llamatwist", "-no-kvu", "--model-vocoder", "v.gguf")
    assert proc.returncode == 1
    assert "error: flag --model-vocoder is not supported" in proc.stderr


def test_tap_options_hold_the_config() -> None:
    from llamatwist.tap import Options

    options = Options()
    options.parseOptions(["-np", "2", "-no-kvu", "--port=0"])
    assert options.config is not None
    assert (options.config.n_parallel, options.config.port) == (2, 0)
    assert "-np N, --parallel N" in options.getUsage()


# --------------------------------------------------------------------------
# main(): startup errors, clean shutdown, exit code


class Boom(Exception):
    pass


@pytest.fixture
def fake_modules(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins for llamatwist.models/errors/server, and no logging set-up."""
    state = types.SimpleNamespace(fetched=0, configs=[])

    class ModelFetchError(Exception):
        pass

    class StartupError(Exception):
        pass

    def ensure_default_model() -> Path:
        state.fetched += 1
        if state.fetch_fails:
            raise ModelFetchError("no network")
        return Path("/models/default.gguf")

    def make_service(config: ServerConfig) -> Any:
        state.configs.append(config)
        raise StartupError("model file not found: x.gguf")

    state.fetch_fails = False
    models = types.ModuleType("llamatwist.models")
    models.ensure_default_model = ensure_default_model  # type: ignore[attr-defined]
    models.ModelFetchError = ModelFetchError  # type: ignore[attr-defined]
    errors = types.ModuleType("llamatwist.errors")
    errors.StartupError = StartupError  # type: ignore[attr-defined]
    service = types.ModuleType("llamatwist.server")
    service.make_service = make_service  # type: ignore[attr-defined]
    for module in (models, errors, service):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(logs, "setup", lambda config, **kw: None)
    return state


def test_main_reports_startup_error(
    fake_modules: types.SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-m", "x.gguf"]) == 1
    assert capsys.readouterr().err == "error: model file not found: x.gguf\n"
    assert fake_modules.fetched == 0


def test_main_resolves_the_default_model(
    fake_modules: types.SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--smollm2-default", "--port", "0"]) == 1
    assert fake_modules.fetched == 1
    assert fake_modules.configs[0].model == "/models/default.gguf"
    assert fake_modules.configs[0].port == 0

    fake_modules.fetch_fails = True
    assert cli.main([]) == 1
    assert capsys.readouterr().err.endswith("error: no network\n")


def test_main_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


SERVE = """
import os, signal, sys, types
from twisted.application.service import MultiService, Service
from twisted.internet import reactor

# As from a terminal: a job started in the background by a shell without job control inherits SIGINT
# ignored, and Twisted then (rightly) leaves it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

class Child(Service):
    def startService(self):
        Service.startService(self)
        print("started", flush=True)
        {action}
    def stopService(self):
        print("stopped", flush=True)
        return Service.stopService(self)

def make_service(config):
    top = MultiService()
    Child().setServiceParent(top)
    {exit_code}
    return top

for name in ("llamatwist.models", "llamatwist.server"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["llamatwist.models"].ModelFetchError = OSError
sys.modules["llamatwist.server"].make_service = make_service
from llamatwist import cli
sys.exit(cli.main(["-m", "x.gguf", "--log-disable"]))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_main_stops_cleanly_on_signal(signame: str) -> None:
    action = f"reactor.callLater(0, os.kill, os.getpid(), signal.{signame})"
    proc = run("-c", SERVE.format(action=action, exit_code=""))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["started", "stopped"]
    assert "Traceback" not in proc.stderr


def test_a_second_signal_while_stopping_is_ignored() -> None:
    # timeout(1) forwarding SIGTERM, an operator pressing Ctrl-C twice: one clean stop, no ReactorNotRunning
    action = ("reactor.callLater(0, lambda: [os.kill(os.getpid(), s) for s in (signal.SIGTERM, signal.SIGINT, "
              "signal.SIGTERM)])")
    proc = run("-c", SERVE.format(action=action, exit_code="").replace('"--log-disable"', '"-v"'))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["started", "stopped"]
    assert "Traceback" not in proc.stderr and "ReactorNotRunning" not in proc.stderr, proc.stderr
    assert proc.stderr.count("already shutting down") == 2, proc.stderr


def test_main_returns_the_service_exit_code() -> None:
    code = SERVE.format(
        action="reactor.callLater(0, reactor.stop)", exit_code="top.exit_code = 3"
    )
    proc = run("-c", code)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.split() == ["started", "stopped"]


# --------------------------------------------------------------------------
# Logging


@pytest.fixture
def root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """Root logger restored after the test; Twisted's global log untouched."""
    monkeypatch.setattr(logs, "_bridge_twisted", lambda: None)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    logs._handlers.clear()
    root.setLevel(level)


def test_log_levels(root_logger: logging.Logger) -> None:
    logs.setup(ServerConfig())
    assert root_logger.level == logging.INFO
    logs.setup(ServerConfig(verbose=True))
    assert root_logger.level == logging.DEBUG
    assert len(logs._handlers) == 1  # replaced, not added
    logs.setup(ServerConfig(log_disable=True))
    assert not root_logger.isEnabledFor(logging.CRITICAL)


def test_log_file_and_format(root_logger: logging.Logger, tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    path.write_text("old run\n")
    logs.setup(ServerConfig(log_file=str(path)))
    logging.getLogger("llamatwist.test").info("hello %d", 42)
    logging.getLogger("llamatwist.test").debug("hidden")
    for handler in logs._handlers:
        handler.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    letter, clock, rest = lines[0].split(" ", 2)
    assert letter == "I"
    assert len(clock) == len("15:04:05.123")
    assert clock[2] == ":"
    assert clock[8] == "."
    assert rest == "llamatwist.test: hello 42"


def test_twisted_and_python_logs_share_one_stream() -> None:
    code = textwrap.dedent(
        """
        import logging
        from twisted.logger import Logger
        from llamatwist import logs
        from llamatwist.config import ServerConfig
        Logger(namespace="early.twisted").info("buffered {n}", n=1)
        logs.setup(ServerConfig())
        logging.getLogger("llamatwist.x").warning("from python")
        Logger(namespace="some.twisted").info("from twisted {n}", n=2)
        Logger(namespace="some.twisted").debug("not shown")
        try:
            1 / 0
        except ZeroDivisionError:
            Logger(namespace="some.twisted").failure("it failed")
        print("stdout untouched")
        """
    )
    proc = run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "stdout untouched\n"
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("I ")
    assert lines[0].endswith("early.twisted: buffered 1")
    assert lines[1].startswith("W ")
    assert lines[1].endswith("llamatwist.x: from python")
    assert lines[2].endswith("some.twisted: from twisted 2")
    assert lines[3].startswith("C ")
    assert lines[3].endswith("some.twisted: it failed")
    assert "ZeroDivisionError" in proc.stderr
    assert "not shown" not in proc.stderr


def test_log_disable_silences_twisted_too() -> None:
    code = textwrap.dedent(
        """
        import logging
        from twisted.logger import Logger
        from llamatwist import logs
        from llamatwist.config import ServerConfig
        logs.setup(ServerConfig(log_disable=True))
        logging.getLogger("x").critical("python")
        Logger(namespace="y").critical("twisted")
        """
    )
    proc = run("-c", code)
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_under_twistd_python_logs_go_to_twisted(root_logger: logging.Logger) -> None:
    from twisted.logger import ILogObserver, LogLevel, globalLogPublisher

    seen: list[dict[str, Any]] = []
    observer = cast(ILogObserver, seen.append)
    globalLogPublisher.addObserver(observer)
    try:
        logs.setup(ServerConfig(), under_twistd=True)
        logging.getLogger("llamatwist.t").warning("to twisted %s", "ok")
    finally:
        globalLogPublisher.removeObserver(observer)
    events = [e for e in seen if e.get("log_namespace") == "llamatwist.t"]
    assert len(events) == 1
    assert events[0]["log_level"] == LogLevel.warn
    assert events[0]["text"] == "to twisted ok"


# --------------------------------------------------------------------------
# Sampling flags


def test_repeatable_sampling_flags_add_up() -> None:
    s = parse_config(["-l", "15043+1", "--logit-bias", "2-inf", "-l", "7 + 0.5"], {}).sampling
    assert s.logit_bias == ((15043, 1.0), (2, -float("inf")), (7, 0.5))
    s = parse_config(["--dry-sequence-breaker", "a", "--dry-sequence-breaker", "b"], {}).sampling
    assert s.dry_sequence_breakers == ("a", "b")
    s = parse_config(["--dry-sequence-breaker", "a", "--dry-sequence-breaker", "none"], {}).sampling
    assert s.dry_sequence_breakers == ()
    assert parse_config([], {}).sampling.dry_sequence_breakers == ("\n", ":", '"', "*")


def test_sampling_flags_as_llama_server() -> None:
    s = parse_config(["--ignore-eos", "--dry-base", "0.5", "--samplers", "penalties;TOP-K;nope"], {}).sampling
    assert (s.ignore_eos, s.dry_base, s.samplers) == (True, 1.75, ("penalties", "top_k"))
    assert parse_config(["--samplers", "top_k", "--sampler-seq", "tm"], {}).sampling.samplers == (
        "temperature", "min_p",
    )


@pytest.mark.parametrize("argv", [
    ["-l", "15043"], ["-l", "x+1"], ["-l", "1+x"], ["--mirostat", "3"], ["--dry-penalty-last-n", "-2"],
    ["--dry-allowed-length", "-1"], ["--adaptive-decay", "1"], ["--top-n-sigma", "x"],
])
def test_bad_sampling_values_are_usage_errors(argv: list[str]) -> None:
    assert refused(argv).exit_code == 2


def test_speculative_defaults() -> None:
    spec = parse_config(["--spec-type", "ngram-simple", "--draft-max", "8", "--spec-ngram-simple-size-n", "5"],
                        {}).sampling.speculative
    assert (spec.type, spec.n_max, spec.ngram_size_n) == ("ngram-simple", 8, 5)
    # as older llama-servers (the pinned one loads the draft and leaves it unused without --spec-type)
    assert parse_config(["-md", "d.gguf"], {}).sampling.speculative.type == "draft-simple"
    assert parse_config([], {}).sampling.speculative.type == "none"
    mtp = parse_config(["--spec-type", "draft-mtp"], {}).sampling.speculative
    assert (mtp.type, mtp.has_mtp, mtp.limit, parse_config([], {}).sampling.speculative.has_mtp) == (
        "draft-mtp", True, 3, False)
    assert "needs a draft model" in str(refused(["--spec-type", "draft-simple"]))
    eagle3 = parse_config(["-md", "d.gguf", "--spec-type", "draft-eagle3,ngram-mod"], {}).sampling.speculative
    assert (eagle3.types, eagle3.has_eagle3, eagle3.has_draft_model, eagle3.limit) == (
        ("draft-eagle3", "ngram-mod"), True, False, 64)
    assert "needs an EAGLE-3 draft model" in str(refused(["--spec-type", "draft-eagle3"]))
    dflash = parse_config(["-md", "d.gguf", "--spec-type", "draft-dflash"], {}).sampling.speculative
    assert (dflash.has_dflash, dflash.has_eagle3, dflash.has_draft_model, dflash.limit) == (True, False, False, 3)
    dspark = parse_config(["-md", "d.gguf", "--spec-type", "ngram-mod,draft-dspark"], {}).sampling.speculative
    assert (dspark.types, dspark.has_dspark, dspark.has_dflash, dspark.has_draft_model, dspark.limit) == (
        ("ngram-mod", "draft-dspark"), True, False, False, 64)
    assert "--spec-type draft-dspark needs a DSpark draft model" in str(refused(["--spec-type", "draft-dspark"]))
    assert "unknown speculative type: 'eagle'" in str(refused(["--spec-type", "eagle"]))  # llama-server's words
