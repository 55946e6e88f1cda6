"""A GPU build (Vulkan on lavapipe here, CUDA on a lent GPU machine; issue 20): offload flags that do what
they say.

Runs only where a GPU build exists (``python build_native.py --backend vulkan|cuda``, or
LLAMATWIST_GPU_LIB_DIR naming one; LLAMATWIST_GPU_BACKEND picks one when both are there) and its device
is present (``mesa-vulkan-drivers`` gives lavapipe, a CPU Vulkan driver); everywhere else the module skips
and says why.  Lavapipe is a CPU-type Vulkan device, which ggml-vulkan uses only when named:
GGML_VK_VISIBLE_DEVICES=0.  ``scripts/gpu_check.py`` builds and runs this module, ``scripts/device_kit.py``
on a GPU machine.  Servers run llamatwist on the GPU build's libraries through LLAMATWIST_NATIVE_LIB_DIR;
the CPU reference is that build with ``-dev none``.  The model is the F32 test model, or an F32 model named
by LLAMATWIST_GPU_TEST_MODEL (the device kit's random-weight model of the same shape).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest

from tests.conftest import Server
from tests.models import _script

vc = _script("gpu_check")


def _gpu_build() -> tuple[Any, Path]:
    try:
        return vc.gpu_build(build=False)  # type: ignore[no-any-return]
    except vc.build_native_module().NativeBuildError as exc:
        pytest.skip(f"no GPU build ({exc})", allow_module_level=True)
    raise AssertionError("unreachable")


GPU, LIB_DIR = _gpu_build()
DEV = GPU.device  # Vulkan0, CUDA0
_devices = vc.run_cli(GPU, LIB_DIR, "--list-devices")
if _devices.returncode != 0 or f"{DEV}:" not in _devices.stdout:
    pytest.skip(f"the {GPU.name} build finds no {GPU.name} device here (for Vulkan: install "
                f"mesa-vulkan-drivers): {_devices.stdout.strip()} {_devices.stderr.strip()[-300:]}",
                allow_module_level=True)
LAVAPIPE = "llvmpipe" in _devices.stdout

N_TOKENS = 16
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def f32_model() -> str:
    return str(vc.gpu_test_model())


@pytest.fixture(scope="module")
def n_layers(f32_model: str) -> int:
    """The model's layers as llama.cpp counts them for -ngl: its blocks and the output layer."""
    reader = gguf.GGUFReader(f32_model)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    return int(reader.fields[f"{arch}.block_count"].parts[-1][0]) + 1


def _common(model: str) -> list[str]:
    return ["-m", model, "-c", "512", "-np", "1", "-t", "2", *vc.EXACT]


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start servers on the GPU build (the environment is the child's); stopped at teardown."""
    for name, value in vc.gpu_env(GPU, LIB_DIR).items():
        monkeypatch.setenv(name, value)
    started: list[Server] = []

    def start(*args: str, wait: bool = True) -> Server:
        srv = Server(list(args), wait=wait)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def cpu_server(f32_model: str) -> Iterator[Server]:
    """The GPU build with no GPU device (-dev none): the CPU's arithmetic, the reference output."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in vc.gpu_env(GPU, LIB_DIR).items():
            mp.setenv(name, value)
        srv = Server([*_common(f32_model), "-dev", "none"])
    yield srv
    srv.stop()


def _offload_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if "layers to the GPU; weights:" in ln]
    assert len(lines) == 1, log
    return lines[0]


def test_list_devices_and_version() -> None:
    assert re.search(rf"^  {DEV}: .+ \(\d+ MiB, \d+ MiB free\)$", _devices.stdout, re.MULTILINE), _devices.stdout
    version = vc.run_cli(GPU, LIB_DIR, "--version")
    assert version.returncode == 0, version.stderr
    assert f"\nbackend: {GPU.name}\n" in version.stdout
    assert re.search(rf"^device: {DEV} \((gpu|igpu)\): ", version.stdout, re.MULTILINE), version.stdout
    assert re.search(r"^device: CPU \(cpu\): ", version.stdout, re.MULTILINE)
    # The installed build says what it is too: where it is the CPU build, not this backend.
    plain = vc.run_cli(GPU, None, "--version")
    assert plain.returncode == 0, plain.stderr
    assert ("backend: CPU\n" in plain.stdout) != (f"backend: {GPU.name}\n" in plain.stdout), plain.stdout


def test_all_layers_on_the_gpu_match_the_cpu(gpu: Any, cpu_server: Server, f32_model: str, n_layers: int) -> None:
    srv = gpu(*_common(f32_model), "-ngl", "99")
    offload = srv.get("/props").json()["offload"]
    assert offload["backend"] == GPU.name
    assert offload["n_gpu_layers"] == 99
    assert offload["layers_offloaded"] == offload["layers_total"] == n_layers  # the blocks + the output layer
    assert offload["kv_offload"] is True
    assert [d["name"] for d in offload["devices"] if d["type"] != "cpu"] == [DEV]
    line = _offload_line(srv.log())
    assert f"offloaded {n_layers}/{n_layers} layers" in line and f"{DEV} " in line, line

    results = vc.compare(cpu_server.url, srv.url, vc.PROMPTS[:2], N_TOKENS, GPU.name)
    for r in results:
        assert len(r.cpu) == len(r.gpu) == N_TOKENS
        # Identical, or apart only at a near tie (summation order), never a confident disagreement.
        assert r.near_tie(), r.describe()
        # Where they agree the probabilities agree closely too (F32 weights and KV on both).
        assert vc.prob_gap(r.cpu[:r.agreed], r.gpu[:r.agreed]) < 1e-2, r.describe()
    assert sum(r.agreed for r in results) >= N_TOKENS  # at least one prompt's worth agrees outright

    # the server keeps serving after all that
    assert srv.get("/health").status_code == 200


@pytest.mark.parametrize("args", [("-ngl", "0"), ("-ngl", "99", "-dev", "none")], ids=["ngl0", "dev-none"])
def test_everything_on_the_cpu(gpu: Any, cpu_server: Server, f32_model: str, n_layers: int,
                               args: tuple[str, ...]) -> None:
    srv = gpu(*_common(f32_model), *args)
    offload = srv.get("/props").json()["offload"]
    assert offload["backend"] == GPU.name  # the build's; nothing of the model is on it
    assert offload["layers_offloaded"] == 0 and offload["layers_total"] == n_layers
    line = _offload_line(srv.log())
    assert f"offloaded 0/{n_layers} layers" in line and DEV not in line, line
    # The CPU's arithmetic: the same tokens as the build without its GPU.
    for r in vc.compare(cpu_server.url, srv.url, vc.PROMPTS[:1], 12):
        assert r.first_divergence is None, r.describe()


def test_unknown_device_is_refused(gpu: Any, f32_model: str) -> None:
    srv = gpu(*_common(f32_model), "-dev", f"{GPU.name}7", wait=False)
    assert srv.proc.wait(60) != 0
    log = srv.log()
    assert f"invalid device: {GPU.name}7" in log and DEV in log, log  # names what there is
    assert "Traceback" not in log


@pytest.mark.parametrize("on_device", [True, False], ids=["devd-gpu", "devd-none"])
def test_draft_model_goes_where_devd_says(gpu: Any, f32_model: str, n_layers: int, on_device: bool) -> None:
    """-devd/-ngld place the draft model on its own, the target staying on the CPU (-ngl 0); drafting works."""
    srv = gpu(*_common(f32_model), "-ngl", "0", "-md", f32_model, "-ngld", "99",
              "-devd", DEV if on_device else "none", "--draft-max", "4")
    lines = [ln for ln in srv.log().splitlines() if "layers to the GPU; weights:" in ln]
    assert len(lines) == 2, srv.log()  # the target, then the draft model
    assert f"offloaded 0/{n_layers} layers" in lines[0] and DEV not in lines[0], lines[0]
    assert f"offloaded {n_layers if on_device else 0}/{n_layers} layers" in lines[1], lines[1]
    assert (f"{DEV} " in lines[1]) == on_device, lines[1]
    out = srv.post("/completion", {"prompt": "1, 2, 3, 4, 5, 6,", "n_predict": 8, "temperature": 0}).json()
    assert out["timings"]["draft_n"] > 0 and out["timings"]["draft_n_accepted"] > 0, out["timings"]


@pytest.fixture(scope="module")
def vision_files(tmp_path_factory: pytest.TempPathFactory, f32_model: str) -> tuple[str, str]:
    spec = importlib.util.spec_from_file_location("make_vision_model", REPO / "scripts" / "make_vision_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text, mmproj = module.make(tmp_path_factory.mktemp("vision"), Path(f32_model))
    return str(text), str(mmproj)


def _image_request(srv: Server) -> dict[str, Any]:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 90)).save(buf, "PNG")
    body = {"prompt": {"prompt_string": "Look: <__media__>\nWhat is it?",
                       "multimodal_data": [base64.b64encode(buf.getvalue()).decode()]},
            "n_predict": 4, "temperature": 0, "n_probs": 1}
    out = srv.post("/completion", body)
    assert out.status_code == 200, out.text
    return dict(out.json())


def test_mmproj_offload_puts_the_encoder_on_the_gpu(gpu: Any, vision_files: tuple[str, str]) -> None:
    text, mmproj = vision_files
    on = gpu("-m", text, "--mmproj", mmproj, "-c", "512", "-np", "1", "-t", "2", "-ngl", "99")
    off = gpu("-m", text, "--mmproj", mmproj, "-c", "512", "-np", "1", "-t", "2", "-ngl", "99",
                 "--no-mmproj-offload")
    # -fa auto is off on lavapipe (only): with it on, the image after the prompt's text killed the server
    assert ("flash attention off on Vulkan0 (lavapipe" in on.log()) == LAVAPIPE
    assert on.get("/props").json()["offload"]["mmproj"] == {"offload": True, "backend": DEV}
    assert off.get("/props").json()["offload"]["mmproj"] == {"offload": False, "backend": "CPU"}
    a, b = _image_request(on), _image_request(off)
    assert a["timings"]["prompt_n"] == b["timings"]["prompt_n"] > 16  # the image's 16 tokens and the text
    # the same image embedded by either encoder: the first token and its probability agree closely
    pa, pb = a["completion_probabilities"][0], b["completion_probabilities"][0]
    assert pa["id"] == pb["id"] and abs(math.exp(pa["logprob"]) - math.exp(pb["logprob"])) < 1e-2, (pa, pb)


@pytest.mark.parametrize(("args", "backend"), [
    (("-mmdev", "none"), "CPU"),  # as --no-mmproj-offload
    (("-dev", "none"), "CPU"),  # unset, -mmdev follows -dev
    (("-dev", "none", "-mmdev", DEV), DEV),  # the projector offloaded, the model not
])
def test_mmproj_device_places_the_encoder(gpu: Any, vision_files: tuple[str, str], args: tuple[str, ...],
                                          backend: str) -> None:
    text, mmproj = vision_files
    srv = gpu("-m", text, "--mmproj", mmproj, "-c", "512", "-np", "1", "-t", "2", "-ngl", "99", *args)
    assert srv.get("/props").json()["offload"]["mmproj"] == {"offload": backend != "CPU", "backend": backend}
    assert _image_request(srv)["timings"]["prompt_n"] > 16


def test_no_kv_offload_keeps_the_cache_in_host_memory(gpu: Any, f32_model: str, n_layers: int) -> None:
    # llama.cpp reports its buffers at its INFO level: -v shows them.
    on = gpu(*_common(f32_model), "-ngl", "99", "-v")
    off = gpu(*_common(f32_model), "-ngl", "99", "-nkvo", "-v")
    kv = re.compile(r"(\S+) KV buffer size =\s*([\d.]+) MiB")
    on_bufs = {m[1] for m in kv.finditer(on.log())}
    off_bufs = {m[1] for m in kv.finditer(off.log())}
    assert on_bufs == {DEV}, on.log()
    assert DEV not in off_bufs and off_bufs, off.log()  # CPU (or a pinned host buffer)
    assert off.get("/props").json()["offload"]["kv_offload"] is False
    # Weights stay on the device either way, and both generate the same greedy text.
    assert f"offloaded {n_layers}/{n_layers} layers" in _offload_line(off.log())
    a = vc.greedy(on.url, vc.PROMPTS[0], 12)
    b = vc.greedy(off.url, vc.PROMPTS[0], 12)
    assert [s.id for s in a] == [s.id for s in b]


# Row split needs the backend's split buffer type: CUDA (and SYCL) have one, Vulkan does not.
ROW_SPLIT = GPU.backend == "cuda"


@pytest.mark.parametrize("args", [
    ("-sm", "none", "-mg", "0"),
    ("-sm", "layer", "-ts", "1"),
    *([("-sm", "row")] if ROW_SPLIT else []),
])
def test_split_flags_with_one_device(gpu: Any, f32_model: str, n_layers: int, args: tuple[str, ...]) -> None:
    """One device: every split puts the whole model on it (-mg 0 is that device; -ts 1 its full share)."""
    srv = gpu(*_common(f32_model), "-ngl", "99", *args)
    assert srv.get("/props").json()["offload"]["layers_offloaded"] == n_layers
    assert f"{DEV} " in _offload_line(srv.log())
    assert srv.post("/completion", json={"prompt": "Hi", "n_predict": 4}).status_code == 200


@pytest.mark.parametrize(("args", "needle"), [
    (("-mg", "1"), f"no GPU 1: devices of this build: {DEV}"),
    (("-ts", "1,1"), "gives a share to 2 GPUs"),
    # without a split buffer type llama.cpp says so
    *([] if ROW_SPLIT else [(("-sm", "row"), f"device {DEV} does not support split buffers")]),
])
def test_split_flags_this_device_cannot_do_are_refused(gpu: Any, f32_model: str,
                                                        args: tuple[str, ...], needle: str) -> None:
    srv = gpu(*_common(f32_model), "-ngl", "99", *args, wait=False)
    assert srv.proc.wait(60) != 0
    assert needle in srv.log(), srv.log()


def test_fit_offloads_the_layers_that_fit(gpu: Any, cpu_server: Server, f32_model: str, n_layers: int) -> None:
    """-ngl unset: --fit measures the model on the GPU and offloads only what leaves -fitt MiB free there."""
    roomy = gpu(*_common(f32_model))
    assert roomy.get("/props").json()["offload"]["layers_offloaded"] == n_layers
    found = re.search(rf"fit: fits, no changes needed; {DEV}: (\d+) MiB used, (\d+) MiB left", roomy.log())
    assert found, roomy.log()
    used, left = int(found[1]), int(found[2])
    roomy.stop()
    # Room for all but a few MiB of it: the first layers fit, the last ones not.
    srv = gpu(*_common(f32_model), "-fitt", str(left + max(2, used // 8)))
    offload = srv.get("/props").json()["offload"]
    assert 0 <= offload["layers_offloaded"] < n_layers, offload
    assert offload["n_gpu_layers"] == offload["layers_offloaded"]
    assert f"fit: {offload['layers_offloaded']}/{n_layers} layers offloaded to {DEV}" in srv.log()
    assert f"offloaded {offload['layers_offloaded']}/{n_layers} layers" in _offload_line(srv.log())
    for r in vc.compare(cpu_server.url, srv.url, vc.PROMPTS[:1], N_TOKENS, GPU.name):
        assert r.near_tie(), r.describe()
