"""The Vulkan build on lavapipe (issue 20): offload flags that do what they say.

Runs only where the Vulkan build exists (``python build_native.py --backend
vulkan``, or LLAMATWIST_VULKAN_LIB_DIR naming one) and a Vulkan device is
there (``mesa-vulkan-drivers`` gives lavapipe, a CPU Vulkan driver);
everywhere else the module skips and says why.  Lavapipe is a CPU-type
Vulkan device, which ggml-vulkan uses only when named: GGML_VK_VISIBLE_DEVICES=0.  ``scripts/vulkan_check.py``
builds it and runs this module.  Servers run the installed llamatwist on the
Vulkan build's libraries through LLAMATWIST_NATIVE_LIB_DIR.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.models import _script, smollm2_f32_gguf

vc = _script("vulkan_check")


def _lib_dir() -> Path:
    try:
        return Path(vc.vulkan_lib_dir(build=False))
    except vc._build_native().NativeBuildError as exc:
        pytest.skip(f"no Vulkan build ({exc})", allow_module_level=True)
    raise AssertionError("unreachable")


LIB_DIR = _lib_dir()
_devices = vc.run_cli(LIB_DIR, "--list-devices")
if _devices.returncode != 0 or "Vulkan0:" not in _devices.stdout:
    pytest.skip(f"the Vulkan build finds no Vulkan device here (install mesa-vulkan-drivers): "
                f"{_devices.stdout.strip()} {_devices.stderr.strip()[-300:]}", allow_module_level=True)

N_TOKENS = 16
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def f32_model(model_path: str) -> str:
    return str(smollm2_f32_gguf(Path(model_path)))


def _common(model: str) -> list[str]:
    return ["-m", model, "-c", "512", "-np", "1", "-t", "2", *vc.EXACT]


@pytest.fixture
def vulkan(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start servers on the Vulkan build (the environment is the child's); stopped at teardown."""
    for name, value in vc.vulkan_env(LIB_DIR).items():
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
    """The installed (CPU) build: the reference output."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(vc.LIB_DIR_ENV, raising=False)
        srv = Server(_common(f32_model))
    yield srv
    srv.stop()


def _offload_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if "layers to the GPU; weights:" in ln]
    assert len(lines) == 1, log
    return lines[0]


def test_list_devices_and_version() -> None:
    assert re.search(r"^  Vulkan0: .+ \(\d+ MiB, \d+ MiB free\)$", _devices.stdout, re.MULTILINE), _devices.stdout
    version = vc.run_cli(LIB_DIR, "--version")
    assert version.returncode == 0, version.stderr
    assert "\nbackend: Vulkan\n" in version.stdout
    assert re.search(r"^device: Vulkan0 \((gpu|igpu)\): ", version.stdout, re.MULTILINE), version.stdout
    assert re.search(r"^device: CPU \(cpu\): ", version.stdout, re.MULTILINE)
    # The installed build says what it is too (CPU here), not Vulkan.
    plain = vc.run_cli(None, "--version")
    assert "backend: Vulkan" not in plain.stdout


def test_all_layers_on_vulkan_match_the_cpu(vulkan: Any, cpu_server: Server, f32_model: str) -> None:
    gpu = vulkan(*_common(f32_model), "-ngl", "99")
    offload = gpu.get("/props").json()["offload"]
    assert offload["backend"] == "Vulkan"
    assert offload["n_gpu_layers"] == 99
    assert offload["layers_offloaded"] == offload["layers_total"] == 31  # 30 blocks + the output layer
    assert offload["kv_offload"] is True
    assert [d["name"] for d in offload["devices"] if d["type"] != "cpu"] == ["Vulkan0"]
    line = _offload_line(gpu.log())
    assert "offloaded 31/31 layers" in line and "Vulkan0 " in line, line

    results = vc.compare(cpu_server.url, gpu.url, vc.PROMPTS[:2], N_TOKENS)
    for r in results:
        assert len(r.cpu) == len(r.gpu) == N_TOKENS
        # Identical, or apart only at a near tie (summation order), never a confident disagreement.
        assert r.near_tie(), r.describe()
        # Where they agree the probabilities agree closely too (F32 weights and KV on both).
        assert vc.prob_gap(r.cpu[:r.agreed], r.gpu[:r.agreed]) < 1e-2, r.describe()
    assert sum(r.agreed for r in results) >= N_TOKENS  # at least one prompt's worth agrees outright

    # the server keeps serving after all that
    assert gpu.get("/health").status_code == 200


@pytest.mark.parametrize("args", [("-ngl", "0"), ("-ngl", "99", "-dev", "none")], ids=["ngl0", "dev-none"])
def test_everything_on_the_cpu(vulkan: Any, cpu_server: Server, f32_model: str, args: tuple[str, ...]) -> None:
    srv = vulkan(*_common(f32_model), *args)
    offload = srv.get("/props").json()["offload"]
    assert offload["backend"] == "Vulkan"  # the build's; nothing of the model is on it
    assert offload["layers_offloaded"] == 0 and offload["layers_total"] == 31
    line = _offload_line(srv.log())
    assert "offloaded 0/31 layers" in line and "Vulkan0" not in line, line
    # The CPU's arithmetic: the same tokens as the CPU build.
    for r in vc.compare(cpu_server.url, srv.url, vc.PROMPTS[:1], 12):
        assert r.first_divergence is None, r.describe()


def test_unknown_device_is_refused(vulkan: Any, f32_model: str) -> None:
    srv = vulkan(*_common(f32_model), "-dev", "Vulkan7", wait=False)
    assert srv.proc.wait(60) != 0
    log = srv.log()
    assert "invalid device: Vulkan7" in log and "Vulkan0" in log, log  # names what there is
    assert "Traceback" not in log


@pytest.mark.parametrize(("devd", "on_gpu"), [("Vulkan0", 31), ("none", 0)])
def test_draft_model_goes_where_devd_says(vulkan: Any, f32_model: str, devd: str, on_gpu: int) -> None:
    """-devd/-ngld place the draft model on its own, the target staying on the CPU (-ngl 0); drafting works."""
    srv = vulkan(*_common(f32_model), "-ngl", "0", "-md", f32_model, "-ngld", "99", "-devd", devd,
                 "--draft-max", "4")
    lines = [ln for ln in srv.log().splitlines() if "layers to the GPU; weights:" in ln]
    assert len(lines) == 2, srv.log()  # the target, then the draft model
    assert "offloaded 0/31 layers" in lines[0] and "Vulkan0" not in lines[0], lines[0]
    assert f"offloaded {on_gpu}/31 layers" in lines[1], lines[1]
    assert ("Vulkan0 " in lines[1]) == (on_gpu > 0), lines[1]
    out = srv.post("/completion", {"prompt": "1, 2, 3, 4, 5, 6,", "n_predict": 8, "temperature": 0}).json()
    assert out["timings"]["draft_n"] > 0 and out["timings"]["draft_n_accepted"] > 0, out["timings"]


@pytest.fixture(scope="module")
def vision_files(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> tuple[str, str]:
    spec = importlib.util.spec_from_file_location("make_vision_model", REPO / "scripts" / "make_vision_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text, mmproj = module.make(tmp_path_factory.mktemp("vision"), Path(model_path))
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


def test_mmproj_offload_puts_the_encoder_on_vulkan(vulkan: Any, vision_files: tuple[str, str]) -> None:
    text, mmproj = vision_files
    on = vulkan("-m", text, "--mmproj", mmproj, "-c", "512", "-np", "1", "-t", "2", "-ngl", "99")
    off = vulkan("-m", text, "--mmproj", mmproj, "-c", "512", "-np", "1", "-t", "2", "-ngl", "99",
                 "--no-mmproj-offload")
    # -fa auto is off on lavapipe: with it on, the image after the prompt's text killed the server
    assert "flash attention off on Vulkan0 (lavapipe" in on.log()
    assert on.get("/props").json()["offload"]["mmproj"] == {"offload": True, "backend": "Vulkan0"}
    assert off.get("/props").json()["offload"]["mmproj"] == {"offload": False, "backend": "CPU"}
    a, b = _image_request(on), _image_request(off)
    assert a["timings"]["prompt_n"] == b["timings"]["prompt_n"] > 16  # the image's 16 tokens and the text
    # the same image embedded by either encoder: the first token's probabilities agree closely
    pa, pb = a["completion_probabilities"][0], b["completion_probabilities"][0]
    assert pa["id"] == pb["id"] and abs(pa["logprob"] - pb["logprob"]) < 1e-2, (pa, pb)


@pytest.mark.parametrize(("args", "backend"), [
    (("-mmdev", "none"), "CPU"),  # as --no-mmproj-offload
    (("-dev", "none"), "CPU"),  # unset, -mmdev follows -dev
    (("-dev", "none", "-mmdev", "Vulkan0"), "Vulkan0"),  # the projector offloaded, the model not
])
def test_mmproj_device_places_the_encoder(vulkan: Any, vision_files: tuple[str, str], args: tuple[str, ...],
                                          backend: str) -> None:
    text, mmproj = vision_files
    srv = vulkan("-m", text, "--mmproj", mmproj, "-c", "512", "-np", "1", "-t", "2", "-ngl", "99", *args)
    assert srv.get("/props").json()["offload"]["mmproj"] == {"offload": backend != "CPU", "backend": backend}
    assert _image_request(srv)["timings"]["prompt_n"] > 16


def test_no_kv_offload_keeps_the_cache_in_host_memory(vulkan: Any, f32_model: str) -> None:
    # llama.cpp reports its buffers at its INFO level: -v shows them.
    on = vulkan(*_common(f32_model), "-ngl", "99", "-v")
    off = vulkan(*_common(f32_model), "-ngl", "99", "-nkvo", "-v")
    kv = re.compile(r"(\S+) KV buffer size =\s*([\d.]+) MiB")
    on_bufs = {m[1] for m in kv.finditer(on.log())}
    off_bufs = {m[1] for m in kv.finditer(off.log())}
    assert on_bufs == {"Vulkan0"}, on.log()
    assert "Vulkan0" not in off_bufs and off_bufs, off.log()  # CPU (or a pinned host buffer)
    assert off.get("/props").json()["offload"]["kv_offload"] is False
    # Weights stay on the device either way, and both generate the same greedy text.
    assert "offloaded 31/31 layers" in _offload_line(off.log())
    a = vc.greedy(on.url, vc.PROMPTS[0], 12)
    b = vc.greedy(off.url, vc.PROMPTS[0], 12)
    assert [s.id for s in a] == [s.id for s in b]


@pytest.mark.parametrize("args", [
    ("-sm", "none", "-mg", "0"),
    ("-sm", "layer", "-ts", "1"),
])
def test_split_flags_with_one_device(vulkan: Any, f32_model: str, args: tuple[str, ...]) -> None:
    """One device: every split puts the whole model on it (-mg 0 is that device; -ts 1 its full share)."""
    srv = vulkan(*_common(f32_model), "-ngl", "99", *args)
    assert srv.get("/props").json()["offload"]["layers_offloaded"] == 31
    assert "Vulkan0 " in _offload_line(srv.log())
    assert srv.post("/completion", json={"prompt": "Hi", "n_predict": 4}).status_code == 200


@pytest.mark.parametrize(("args", "needle"), [
    (("-mg", "1"), "no GPU 1: devices of this build: Vulkan0"),
    (("-ts", "1,1"), "gives a share to 2 GPUs"),
    # Row split needs the backend's split buffer type (CUDA and SYCL have one; Vulkan does not): llama.cpp says so.
    (("-sm", "row"), "device Vulkan0 does not support split buffers"),
])
def test_split_flags_this_device_cannot_do_are_refused(vulkan: Any, f32_model: str,
                                                        args: tuple[str, ...], needle: str) -> None:
    srv = vulkan(*_common(f32_model), "-ngl", "99", *args, wait=False)
    assert srv.proc.wait(60) != 0
    assert needle in srv.log(), srv.log()
