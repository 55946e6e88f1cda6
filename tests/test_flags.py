"""The flags of issue 18, by their effect on a real server: RoPE/YaRN, model loading, overrides.

Each start-up flag is checked where it shows: greedy output, /props, /proc/PID/status
and /proc/PID/maps, a corrupted model refused; and each bad value is exit status 2.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Server
from tests.test_cli import run

SMALL = ("-c", "512", "-np", "1", "-t", "1", "--no-warmup")
PROMPT = {"prompt": "The capital of France is", "n_predict": 12, "temperature": 0, "seed": 1}


def proc_status(server: Server, key: str) -> str:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


def greedy(server: Server) -> str:
    resp = server.post("/completion", PROMPT)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["content"])


@pytest.fixture(scope="module")
def baseline(model_path: str) -> Any:
    srv = Server(["-m", model_path, *SMALL])
    yield srv
    srv.stop()


def test_rope_freq_base_changes_greedy_output_and_props(
    baseline: Server, make_server: Callable[..., Server], model_path: str
) -> None:
    srv = make_server("-m", model_path, *SMALL, "--rope-freq-base", "1000", "--yarn-orig-ctx", "256",
                      "--yarn-beta-fast", "16")
    assert greedy(srv) != greedy(baseline)
    rope = srv.get("/props").json()["rope"]
    assert rope["freq_base"] == 1000.0
    assert (rope["yarn_orig_ctx"], rope["yarn_beta_fast"], rope["scaling"]) == (256, 16.0, "model")
    base = baseline.get("/props").json()["rope"]
    assert (base["freq_base"], base["freq_scale"], base["yarn_ext_factor"]) == (0.0, 0.0, -1.0)


def test_rope_scaling_by_environment_changes_output(baseline: Server, model_path: str) -> None:
    # LLAMA_ARG_* variables reach the context too: linear scaling by 4 (freq scale 1/4)
    env = ["env", "LLAMA_ARG_ROPE_SCALING_TYPE=linear", "LLAMA_ARG_ROPE_SCALE=4"]
    srv = Server(["-m", model_path, *SMALL], command=[*env, sys.executable, "-m", "llamatwist"])
    try:
        rope = srv.get("/props").json()["rope"]
        assert (rope["scaling"], rope["freq_scale"]) == ("linear", 0.25)
        assert greedy(srv) != greedy(baseline)
    finally:
        srv.stop()


def test_rope_scaling_none_and_neutral_values_keep_the_output(
    baseline: Server, make_server: Callable[..., Server], model_path: str
) -> None:
    # the model's own values given explicitly: the same tokens (the flags are not just noise)
    srv = make_server("-m", model_path, *SMALL, "--rope-freq-scale", "1", "--yarn-ext-factor", "0")
    assert greedy(srv) == greedy(baseline)


def test_mlock_locks_the_model_in_memory(baseline: Server, make_server: Callable[..., Server],
                                         model_path: str) -> None:
    size_kib = Path(model_path).stat().st_size // 1024
    assert proc_status(baseline, "VmLck") == "0 kB"
    srv = make_server("-m", model_path, *SMALL, "--mlock")  # older llama-server's spelling of -lm mmap+mlock
    locked = int(proc_status(srv, "VmLck").split()[0])
    assert locked > size_kib * 0.8, (locked, size_kib)
    assert srv.get("/props").json()["load_mode"] == "mmap+mlock"


def test_load_mode_none_reads_the_model_instead_of_mapping_it(
    baseline: Server, make_server: Callable[..., Server], model_path: str
) -> None:
    def mapped(server: Server) -> bool:
        return model_path in Path(f"/proc/{server.proc.pid}/maps").read_text()

    assert mapped(baseline)  # auto: mmap
    srv = make_server("-m", model_path, *SMALL, "--load-mode", "none")
    assert not mapped(srv)
    assert greedy(srv) == greedy(baseline)


def test_lazy_mode_reaches_the_model_params() -> None:
    from llamatwist.engine.model import model_params
    from llamatwist.native.binding import ffi, lib

    # the field sits where llama.h has it (cffi takes the offsets from the compiler): after load_mode
    offsets = [ffi.offsetof("struct llama_model_params", f) for f in ("load_mode", "lazy_mode", "main_gpu")]
    assert offsets == sorted(offsets)
    assert lib.llama_model_default_params().lazy_mode == lib.LLAMA_LAZY_MODE_AUTO  # llama-server's default too
    for name, value in (("on", lib.LLAMA_LAZY_MODE_ON), ("off", lib.LLAMA_LAZY_MODE_OFF)):
        params = model_params(lazy_mode=name, load_mode="none")
        assert (params.lazy_mode, params.load_mode) == (value, lib.LLAMA_LOAD_MODE_NONE)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_lazy_mode_loads_the_same_model(baseline: Server, make_server: Callable[..., Server], model_path: str,
                                        mode: str) -> None:
    # the default model (llama architecture) marks no tensor for lazy reading: any mode loads it the same way
    srv = make_server("-m", model_path, *SMALL, "-lzm", mode)
    assert srv.get("/props").json()["lazy_mode"] == mode
    assert baseline.get("/props").json()["lazy_mode"] == "auto"
    assert "lazy read enabled" not in srv.log()
    assert greedy(srv) == greedy(baseline)


def test_override_kv_changes_what_the_model_reads(baseline: Server, make_server: Callable[..., Server],
                                                   model_path: str) -> None:
    srv = make_server("-m", model_path, *SMALL, "--override-kv",
                      "tokenizer.ggml.bos_token_id=int:5,general.name=str:renamed by flag")
    props = srv.get("/props").json()
    base = baseline.get("/props").json()
    assert props["bos_token"] != base["bos_token"]
    assert props["bos_token"] == srv.post("/detokenize", {"tokens": [5]}).json()["content"]
    assert props["kv_overrides"] == {"tokenizer.ggml.bos_token_id": "5", "general.name": "renamed by flag"}


def _corrupt_copy(model_path: str, dest: Path) -> Path:
    """A copy of the model with a NaN in its first F32 tensor."""
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(model_path)
    tensor = next(t for t in reader.tensors if t.tensor_type == GGMLQuantizationType.F32)
    offset = int(tensor.data_offset)
    del reader
    out = dest / "corrupt.gguf"
    shutil.copyfile(model_path, out)
    with open(out, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack("<f", math.nan))
    return out


def test_check_tensors_refuses_a_corrupted_model(tmp_path: Path, make_server: Callable[..., Server],
                                                  model_path: str) -> None:
    corrupt = _corrupt_copy(model_path, tmp_path)
    srv = make_server("-m", str(corrupt), *SMALL)  # without the check it loads
    assert srv.get("/health").status_code == 200
    bad = make_server("-m", str(corrupt), *SMALL, "--check-tensors", wait=False)
    assert bad.proc.wait(120) != 0
    assert "nan" in bad.log().lower()


def test_log_verbosity_colors_prefix_and_timestamps(baseline: Server, make_server: Callable[..., Server],
                                                     model_path: str) -> None:
    base = baseline.log()
    assert "\033[" not in base  # --log-colors auto: the log is not a terminal
    assert re.search(r"^I \d\d:\d\d:\d\d\.\d{3} \S+: ", base, re.MULTILINE)
    assert not re.search(r"^D ", base, re.MULTILINE)

    debug = make_server("-m", model_path, *SMALL, "-lv", "5", "--log-colors", "on")
    text = debug.log()
    assert re.search(r"^\033\[33mD \033\[34m\d\d:\d\d:\d\d\.\d{3} ", text, re.MULTILINE)  # llama.cpp's colours
    assert re.search(r"^\033\[32mI \033\[0m", text, re.MULTILINE)

    quiet = make_server("-m", model_path, *SMALL, "-lv", "2", "--no-log-prefix", "--no-log-timestamps")
    quiet.get("/health")
    lines = [line for line in quiet.log().splitlines() if line]
    assert not any(re.match(r"[IDWE] ", line) for line in lines)
    assert not any(re.match(r"\d\d:\d\d:", line) for line in lines)
    assert len(lines) < len(base.splitlines()) / 4  # warnings and errors only


def _gpus() -> list[Any]:
    from llamatwist.engine.model import devices

    return [d for d in devices() if d.kind != "cpu"]


def test_list_devices_prints_the_backend_devices_and_exits() -> None:
    proc = run("-m", "llamatwist", "--list-devices")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "Available devices:"
    gpus = _gpus()
    if not gpus:
        assert lines[1:] == ["  (none)"]
        return
    for line, dev in zip(lines[1:], gpus, strict=True):
        assert line.startswith(f"  {dev.name}: {dev.description} (") and line.endswith(" MiB free)")


@pytest.mark.skipif(bool(_gpus()), reason="this build has GPU devices")
@pytest.mark.parametrize("args", [["-dev", "CUDA0"], ["-mg", "1"], ["-ts", "3,1"], ["-sm", "row"],
                                  ["-ot", "blk=CUDA0"]])
def test_cpu_build_explains_gpu_values(args: list[str]) -> None:
    proc = run("-m", "llamatwist", *args)
    assert proc.returncode == 2
    assert "no GPU devices (CPU only)" in proc.stderr or "available buffer types: CPU" in proc.stderr


def test_cpu_placement_values_are_passed_to_libllama(make_server: Callable[..., Server], model_path: str) -> None:
    srv = make_server("-m", model_path, *SMALL, "-dev", "none", "-sm", "none", "-mg", "0", "-ts", "0",
                      "-ot", r"token_embd\.weight=CPU,blk\.0\..*=CPU", "-lv", "5",
                      "--numa", "distribute")
    log = srv.log()
    assert "tensor token_embd.weight" in log and "buffer type overridden to CPU" in log
    assert re.search(r"tensor blk\.0\.\S+ .*buffer type overridden to CPU", log)
    assert not re.search(r"tensor blk\.1\.\S+ .*buffer type overridden", log)
    assert greedy(srv)


@pytest.mark.parametrize(
    "args",
    [
        ["-dev", "CPU"],
        ["-dev", "NOSUCHDEVICE"],
        ["-C", "0xfg"],
        ["-Cr", "3"],
        ["-Cr", "0-512"],
        ["--cpu-strict", "yes"],
        ["--prio", "4"],
        ["--poll", "101"],
        ["-Cb", ""],
        ["--prio-batch", "-2"],
        ["--numa", "mirror"],
        ["-dev", ""],
        ["-ot", "token_embd=NOPE"],
        ["-ot", "no-equals-sign"],
        ["-ot", "([=CPU"],
        ["-sm", "diagonal"],
        ["-mg", "x"],
        ["-ts", "a,b"],
        ["-ts", "-1"],
        ["--log-colors", "sometimes"],
        ["-lv", "loud"],
        ["--rope-scaling", "ntk"],
        ["--rope-scale", "0"],
        ["--rope-freq-base", "fast"],
        ["--rope-freq-scale", "inf"],
        ["--yarn-orig-ctx", "-1"],
        ["--yarn-ext-factor", ""],
        ["-lm", "mmap-mlock"],
        ["--override-kv", "key-without-type"],
        ["--override-kv", "a=double:1"],
        ["--override-kv", "a=bool:yes"],
        ["--override-kv", "a=int:x"],
        ["--override-kv", "a=str:" + "x" * 128],
        ["--dry-penalty-last-n", "-2"],
        ["-fa", "maybe"],
        ["-lzm", "yes"],
        ["--lazy-mode", ""],
        ["-mmdev", "CPU"],
        ["-mmdev", "NOSUCHDEVICE"],
        ["--mmproj-device", ""],
        ["--log-prompts-dir", ""],
    ],
)
def test_bad_values_exit_2(args: list[str]) -> None:
    proc = run("-m", "llamatwist", *args)
    assert proc.returncode == 2, proc.stderr
    assert args[0] in proc.stderr


def test_bad_environment_value_exits_2() -> None:
    proc = run("-m", "llamatwist", env={"LLAMA_ARG_ROPE_SCALING_TYPE": "ntk"})
    assert proc.returncode == 2
    assert "LLAMA_ARG_ROPE_SCALING_TYPE" in proc.stderr
    # -mmdev's variable has no LLAMA_ARG_ prefix, as in llama-server; CPU is no offload device (-dev's rule)
    proc = run("-m", "llamatwist", env={"MTMD_BACKEND_DEVICE": "CPU"})
    assert proc.returncode == 2
    assert "MTMD_BACKEND_DEVICE" in proc.stderr and "invalid device: CPU" in proc.stderr
    assert "'none' keeps the projector on the CPU" in proc.stderr


def test_mmproj_device_takes_one_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from llamatwist.cli import ConfigError, convert, parse_config

    monkeypatch.setattr(convert, "_gpu_devices", lambda: ["Vulkan0", "Vulkan1"])
    assert parse_config(["-mmdev", "Vulkan1"], {}).projector_devices == ("Vulkan1",)
    assert parse_config(["-mmdev", "none"], {}).projector_devices == ()
    with pytest.raises(ConfigError, match="only one device may be specified for mmproj"):
        parse_config(["-mmdev", "Vulkan0,Vulkan1"], {})
    with pytest.raises(ConfigError, match="invalid device: Vulkan2"):
        parse_config(["-mmdev", "Vulkan2,Vulkan1"], {})  # the names are checked first, as llama-server
    # unset, it follows -dev (its first device; -dev none: the CPU); --no-mmproj-offload keeps it on the CPU
    assert parse_config(["-dev", "Vulkan1,Vulkan0"], {}).projector_devices == ("Vulkan1",)
    assert parse_config(["-dev", "none"], {}).projector_devices == ()
    assert parse_config([], {}).projector_devices is None  # libmtmd's first GPU
    assert parse_config(["-mmdev", "Vulkan1", "--no-mmproj-offload"], {}).projector_devices == ()


def thread_cpus(server: Server) -> set[str]:
    """The Cpus_allowed_list of the process's threads that have their own (the decode threads)."""
    out = set()
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out.add(line.split(":", 1)[1].strip())
    return out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_cpu_masks_pin_the_decode_threads(make_server: Callable[..., Server], model_path: str) -> None:
    first, second = sorted(os.sched_getaffinity(0))[:2]
    everything = thread_cpus(make_server("-m", model_path, *SMALL))
    srv = make_server("-m", model_path, "-c", "512", "-np", "1", "-t", "2", "-tb", "2", "--no-warmup",
                      "-C", f"{1 << second:x}", "--cpu-strict", "1", "-Crb", f"{first}-{first}", "--poll", "0")
    # prompt only: the batch pool's threads ran last
    assert srv.post("/completion", {"prompt": "The capital of France is", "n_predict": 0}).status_code == 200
    assert thread_cpus(srv) - everything == {str(first)}
    # generation: one token at a time, the generation pool
    assert greedy(srv)
    assert thread_cpus(srv) - everything == {str(second)}


def test_special_writes_generated_control_tokens(baseline: Server, make_server: Callable[..., Server],
                                                 model_path: str) -> None:
    start = baseline.post("/tokenize", {"content": "<|im_start|>", "parse_special": True}).json()["tokens"]
    assert len(start) == 1
    body = {"prompt": "Hi", "n_predict": 2, "temperature": 0, "logit_bias": [[start[0], 100]], "n_probs": 1,
            "post_sampling_probs": True}
    hidden = baseline.post("/completion", body).json()
    assert hidden["tokens_predicted"] == 2 and hidden["content"] == ""  # control tokens are not text by default
    srv = make_server("-m", model_path, *SMALL, "-sp")
    shown = srv.post("/completion", body).json()
    assert shown["content"] == "<|im_start|><|im_start|>"
    top = shown["completion_probabilities"][0]
    assert top["token"] == "<|im_start|>" and top["top_probs"][0]["token"] == "<|im_start|>"


def test_flash_attn_alone_means_on() -> None:
    from llamatwist.cli import parse_config

    assert parse_config(["-fa"], {}).flash_attn == "on"
    assert parse_config(["-fa", "-c", "512"], {}).n_ctx == 512  # the next flag is not taken as its value
    assert parse_config(["--flash-attn", "off"], {}).flash_attn == "off"
    assert parse_config([], {}).flash_attn == "auto"


def test_dry_penalty_last_n_minus_one_is_the_context_size(make_server: Callable[..., Server],
                                                          model_path: str) -> None:
    dry = ("--dry-multiplier", "5", "--dry-allowed-length", "1")
    srv = make_server("-m", model_path, *SMALL, *dry, "--dry-penalty-last-n", "-1")
    body = {"prompt": "one two three one two three one two three one two", "n_predict": 16, "temperature": 0,
            "seed": 1}
    whole = srv.post("/completion", body).json()
    assert whole["generation_settings"]["dry_penalty_last_n"] == -1
    n_ctx = srv.get("/slots").json()[0]["n_ctx"]
    explicit = srv.post("/completion", {**body, "dry_penalty_last_n": n_ctx}).json()
    off = srv.post("/completion", {**body, "dry_penalty_last_n": 0}).json()
    assert whole["content"] == explicit["content"]
    assert whole["content"] != off["content"]  # the penalty acts (with -1 passed through it would not)


def test_cpu_ffn_rules_become_tensor_overrides(make_server: Callable[..., Server], model_path: str) -> None:
    # -ncffn N: the dense FFN tensors of the first N layers; -cmoe/-ncmoe: MoE experts (none in this dense model)
    srv = make_server("-m", model_path, *SMALL, "-ncffn", "1", "-cmoe", "-ncmoe", "2", "-lv", "5")
    log = srv.log()
    for name in ("ffn_up", "ffn_down", "ffn_gate"):
        assert re.search(rf"tensor blk\.0\.{name}\.weight .*buffer type overridden to CPU", log), name
    assert not re.search(r"tensor blk\.1\.\S+ .*buffer type overridden", log)
    assert not re.search(r"exps.*buffer type overridden", log)
    assert greedy(srv)


def test_buffer_and_cache_switches_reach_libllama(baseline: Server, make_server: Callable[..., Server],
                                                  model_path: str) -> None:
    """--no-repack, --no-host, --swa-full, --no-op-offload: libllama's own switches (this dense, unrepackable
    CPU model has nothing they change, so the greedy text stays the same)."""
    srv = make_server("-m", model_path, *SMALL, "--no-repack", "--no-host", "--swa-full", "--no-op-offload")
    assert greedy(srv) == greedy(baseline)


def test_cache_prompt_default(make_server: Callable[..., Server], model_path: str) -> None:
    srv = make_server("-m", model_path, *SMALL, "--no-cache-prompt")
    first = srv.post("/completion", PROMPT).json()
    again = srv.post("/completion", PROMPT).json()
    assert first["timings"]["cache_n"] == 0 and again["timings"]["cache_n"] == 0
    asked = srv.post("/completion", {**PROMPT, "cache_prompt": True}).json()  # a request may still ask for it
    reused = srv.post("/completion", {**PROMPT, "cache_prompt": True}).json()
    assert asked["timings"]["cache_n"] == 0 and reused["timings"]["cache_n"] > 0


def test_reverse_prompt_is_the_default_stop(baseline: Server, make_server: Callable[..., Server],
                                            model_path: str) -> None:
    text = greedy(baseline)
    word = text.split()[2]  # a word the model writes, deterministic for this build
    srv = make_server("-m", model_path, *SMALL, "-r", word, "-r", "never-written")
    out = srv.post("/completion", PROMPT).json()
    assert out["stop_type"] == "word" and out["stopping_word"] == word
    assert out["content"] == text[:text.index(word)]
    assert out["generation_settings"]["stop"] == [word, "never-written"]
    own = srv.post("/completion", {**PROMPT, "stop": ["zzz"]}).json()  # a request's own stop strings replace them
    assert own["content"] == text and own["generation_settings"]["stop"] == ["zzz"]
    assert srv.get("/props").json()["default_generation_settings"]["params"]["stop"] == [word, "never-written"]


def test_embd_normalize_default(make_server: Callable[..., Server], model_path: str) -> None:
    def norm(srv: Server) -> float:
        v = srv.post("/v1/embeddings", {"input": "hello"}).json()["data"][0]["embedding"]
        return math.sqrt(sum(x * x for x in v))

    default = make_server("-m", model_path, *SMALL, "--embeddings", "--pooling", "mean")
    raw = make_server("-m", model_path, *SMALL, "--embeddings", "--pooling", "mean", "--embd-normalize", "-1")
    assert abs(norm(default) - 1.0) < 1e-4
    assert abs(norm(raw) - 1.0) > 1e-2
    # a request's own field still wins
    v = raw.post("/v1/embeddings", {"input": "hello", "embd_normalize": 2}).json()["data"][0]["embedding"]
    assert abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4


def test_reuse_port_lets_two_servers_share_a_port(make_server: Callable[..., Server], model_path: str) -> None:
    from tests.conftest import free_port

    port = free_port()
    servers = []
    for _ in range(2):  # the later --port wins over the harness's own
        srv = make_server("-m", model_path, *SMALL, "--reuse-port", "--port", str(port), wait=False)
        srv.port, srv.url = port, f"http://127.0.0.1:{port}"
        servers.append(srv)
    # the kernel spreads connections over both processes, so a 200 from /health says only that one of them
    # is ready: wait for each one's own log line
    deadline = time.monotonic() + 120
    while not all("model loaded" in srv.log() for srv in servers):
        assert all(srv.proc.poll() is None for srv in servers), [srv.log() for srv in servers]
        assert time.monotonic() < deadline, [srv.log() for srv in servers]
        time.sleep(0.1)
    assert all("listening" in srv.log() for srv in servers)
    for _ in range(8):
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    # without it the second bind fails
    third = make_server("-m", model_path, *SMALL, "--port", str(port), wait=False)
    assert third.proc.wait(60) != 0


def test_kv_unified_per_slot_sizes_the_pool_and_caps_slots(make_server: Callable[..., Server],
                                                           model_path: str) -> None:
    # without -c: the pool is n_parallel * N, each slot at most N
    sized = make_server("-m", model_path, "-np", "2", "-kvu", "-t", "1", "--kv-unified-per-slot", "384")
    assert [s["n_ctx"] for s in sized.get("/slots").json()] == [384, 384]
    assert sized.get("/props").json()["default_generation_settings"]["n_ctx"] == 384
    # with -c: the pool as given, slots capped
    capped = make_server("-m", model_path, "-np", "2", "-kvu", "-c", "1024", "-t", "1", "--kv-unified-per-slot", "256")
    assert [s["n_ctx"] for s in capped.get("/slots").json()] == [256, 256]
    assert "capping per-slot context (1024) to --kv-unified-per-slot (256)" in capped.log()
    long = capped.post("/completion", {"prompt": "word " * 300, "n_predict": 1})
    assert long.status_code == 400  # over the slot's 256 tokens


def test_log_jsonl_writes_json_lines_to_stdout(make_server: Callable[..., Server], model_path: str,
                                               tmp_path: Path) -> None:
    import json

    log_file = tmp_path / "server.log"
    srv = make_server("-m", model_path, *SMALL, "--log-jsonl", "--log-file", str(log_file))
    assert srv.post("/completion", {**PROMPT, "n_predict": 1}).status_code == 200
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines and all(set(e) == {"type", "time", "level", "msg"} and e["type"] == "log" for e in lines)
    assert any(e["level"] == "info" and "model loaded" in e["msg"] for e in lines)
    assert all(e["time"] >= 0 for e in lines) and any(e["time"] > 0 for e in lines)
    console = [line for line in srv.log().splitlines() if line.startswith("{")]
    assert console and json.loads(console[0])["type"] == "log"  # the console gets the same lines


def test_reasoning_preserve_reaches_the_template(make_server: Callable[..., Server], model_path: str,
                                                 tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}[preserve={{ preserve_reasoning }}]")
    body = {"messages": [{"role": "user", "content": "hi"}]}
    on = make_server("-m", model_path, *SMALL, "--jinja", "--chat-template-file", str(template))
    off = make_server("-m", model_path, *SMALL, "--jinja", "--chat-template-file", str(template),
                      "--no-reasoning-preserve")
    assert on.post("/apply-template", body).json()["prompt"].endswith("[preserve=True]")
    assert off.post("/apply-template", body).json()["prompt"].endswith("[preserve=False]")


def test_vision_presets_are_llama_servers() -> None:
    from llamatwist.cli import parse_config

    c = parse_config(["--vision-gemma-4b-default"], {})
    assert (c.hf_repo, c.port, c.n_ctx, c.jinja) == ("ggml-org/gemma-3-4b-it-qat-GGUF", 8014, 0, True)
    assert parse_config(["--vision-gemma-12b-default"], {}).hf_repo == "ggml-org/gemma-3-12b-it-qat-GGUF"
