"""build_native.py: CPU feature mapping, cache keys, source placement, the
real cached build, and toolchain errors."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "build_native.py"


def _load() -> ModuleType:
    # Load by path: build_native.py is a build-time script, not part of the package.
    if "build_native" in sys.modules:
        return sys.modules["build_native"]
    spec = importlib.util.spec_from_file_location("build_native", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_native"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bn = _load()

# A Sapphire Rapids guest: AVX-512 everywhere plus AMX.
SPR_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme de pse tsc msr pae sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt avx f16c \
bmi1 avx2 bmi2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi \
avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu
"""

# An AMD Zen 2 guest: AVX2 but no AVX-512.
ZEN2_CPUINFO = """\
processor\t: 0
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 sha_ni
"""


def test_cpuinfo_parsing_reads_first_processor() -> None:
    flags = bn.parse_cpu_flags(SPR_CPUINFO)
    assert {"avx512f", "amx_tile", "amx_int8", "avx_vnni"} <= flags
    assert "Features" not in flags and flags != {"fpu"}
    assert bn.parse_cpu_flags("processor : 0\nFeatures : fp asimd sve\n") == {"fp", "asimd", "sve"}
    assert bn.parse_cpu_flags("") == frozenset()


def test_amx_stays_off_unless_asked() -> None:
    flags = bn.parse_cpu_flags(SPR_CPUINFO)
    default = bn.ggml_cpu_options(flags)
    assert default["GGML_AVX512"] and default["GGML_AVX512_VNNI"] and default["GGML_AVX512_BF16"]
    assert default["GGML_AVX512_VBMI"] and default["GGML_AVX_VNNI"] and default["GGML_AVX2"]
    assert not any(default[k] for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"))
    opted = bn.ggml_cpu_options(flags, amx=True)
    assert all(opted[k] for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"))
    # --amx cannot enable what the CPU lacks.
    assert not bn.ggml_cpu_options(bn.parse_cpu_flags(ZEN2_CPUINFO), amx=True)["GGML_AMX_TILE"]


def test_avx512_needs_all_of_its_subsets() -> None:
    zen2 = bn.ggml_cpu_options(bn.parse_cpu_flags(ZEN2_CPUINFO))
    assert zen2["GGML_AVX2"] and zen2["GGML_FMA"] and zen2["GGML_BMI2"] and zen2["GGML_SSE42"]
    assert not zen2["GGML_AVX512"] and not zen2["GGML_AVX_VNNI"]
    # avx512f alone (no bw/vl/dq/cd) would miscompile ggml's AVX512 kernels.
    assert not bn.ggml_cpu_options({"avx512f"})["GGML_AVX512"]


def test_cache_key_tracks_configuration() -> None:
    cpu = {"ggml": ["GGML_AVX2"]}
    base = bn.cache_key("sdist:abc", "cpu", ["-DA=1", "-DB=2"], cpu, False)
    assert base == bn.cache_key("sdist:abc", "cpu", ["-DB=2", "-DA=1"], cpu, False)
    assert base.startswith("cpu-")
    variants = {
        bn.cache_key("sdist:abd", "cpu", ["-DA=1", "-DB=2"], cpu, False),
        bn.cache_key("sdist:abc", "cuda", ["-DA=1", "-DB=2"], cpu, False),
        bn.cache_key("sdist:abc", "cpu", ["-DA=1"], cpu, False),
        bn.cache_key("sdist:abc", "cpu", ["-DA=1", "-DB=2"], {"ggml": ["GGML_AVX2", "GGML_AVX512"]}, False),
        bn.cache_key("sdist:abc", "cpu", ["-DA=1", "-DB=2"], cpu, True),
    }
    assert base not in variants and len(variants) == 5


def _make_sdist(path: Path, top: str, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_place_source_extracts_only_the_subdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMATWIST_CACHE_DIR", str(tmp_path / "cache"))
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    files = {"vendor/llama.cpp/CMakeLists.txt": b"project(x)\n",
             "vendor/llama.cpp/include/llama.h": b"/* h */\n",
             "llama_cpp/__init__.py": b"# not wanted\n"}
    sha = _make_sdist(downloads / "fake_pkg-1.0.tar.gz", "fake_pkg-1.0", files)
    pin = bn.Pin(package="fake-pkg", version="1.0", sha256=sha, upstream="u", commit="c",
                 subdir="vendor/llama.cpp")
    dest = tmp_path / "third_party" / "llama.cpp"

    assert bn.place_source(pin, dest) == dest
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        bn.SRC_MARKER, "CMakeLists.txt", "include/llama.h"]
    assert (dest / bn.SRC_MARKER).read_text().strip() == sha

    # Already placed: no re-extraction, even with the cached sdist gone.
    (dest / "CMakeLists.txt").write_text("locally edited\n")
    (downloads / "fake_pkg-1.0.tar.gz").unlink()
    bn.place_source(pin, dest)
    assert (dest / "CMakeLists.txt").read_text() == "locally edited\n"


def test_extraction_rejects_escaping_members(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    _make_sdist(archive, "pkg-1.0", {"vendor/llama.cpp/../../../escape.txt": b"x"})
    with pytest.raises(bn.NativeBuildError, match="unsafe"):
        bn._extract_subtree(archive, "pkg-1.0/vendor/llama.cpp/", tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.timeout(3600)  # builds once if the cache is cold; a hit is instant
def test_real_build_cache_hit_is_fast() -> None:
    bn.ensure_native()  # whatever `pip install -e .` used (same env overrides)
    start = time.perf_counter()
    build = bn.ensure_native()
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"cache hit took {elapsed:.3f}s"
    assert (build.lib_dir / "libllama.so").exists() or (build.lib_dir / "libllama.dylib").exists()
    for header in ("llama.h", "ggml.h", "gguf.h", "mtmd.h", "mtmd-helper.h"):
        assert (build.include_dir / header).is_file(), header
    assert (build.prefix / bn.DONE_MARKER).is_file()

    libs = build.runtime_libraries()
    assert {"libllama", "libggml", "libggml-base", "libmtmd"} <= {n.split(".")[0] for n in libs}
    readelf = shutil.which("readelf")
    if sys.platform.startswith("linux") and readelf:
        for soname, real in libs.items():
            dyn = subprocess.run([readelf, "-d", str(real)], check=True, capture_output=True, text=True).stdout
            assert f"Library soname: [{soname}]" in dyn
            assert "[$ORIGIN]" in dyn  # libraries find each other wherever they are copied


def test_cli_prints_prefix_on_cache_hit(capsys: pytest.CaptureFixture[str]) -> None:
    build = bn.ensure_native()
    assert bn.main([]) == 0
    assert capsys.readouterr().out.strip() == str(build.prefix)


def _env_without(tool: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LLAMATWIST_") and k not in ("CUDACXX", "CUDA_HOME", "CUDA_PATH")}
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(d for d in dirs if d and not (Path(d) / tool).exists())
    env["LLAMATWIST_CACHE_DIR"] = str(tmp_path / "cache")  # a cached build must not mask the check
    return env


@pytest.mark.parametrize(("backend", "needle"), [
    ("cuda", "nvcc was not found"),
    pytest.param("metal", "only available on macOS",
                 marks=pytest.mark.skipif(sys.platform == "darwin", reason="metal is available here")),
])
def test_missing_backend_toolchain_fails_cleanly(tmp_path: Path, backend: str, needle: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--backend", backend],
                          check=False, capture_output=True, text=True, timeout=60,
                          env=_env_without("nvcc", tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("build_native: error: ") and needle in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "cache" / "downloads").exists()  # failed before fetching anything


def test_cmake_arg_values_may_look_like_options() -> None:
    assert bn._glue_cmake_args(["--cmake-arg", "-DX=1", "--jobs", "2"]) == ["--cmake-arg=-DX=1", "--jobs", "2"]
    ns = bn._parser().parse_args(bn._glue_cmake_args(["--cmake-arg", "-DX=1", "--cmake-arg", "-DY=2"]))
    assert ns.cmake_arg == ["-DX=1", "-DY=2"]


def test_environment_steers_options(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"LLAMATWIST_BACKEND": "vulkan", "LLAMATWIST_JOBS": "3", "LLAMATWIST_AMX": "1",
           "LLAMATWIST_CMAKE_ARGS": "-DA=1 '-DB=two words'", "LLAMATWIST_LLAMA_SRC": "/src"}
    assert bn._env_options(env) == {"backend": "vulkan", "jobs": 3, "amx": True,
                                    "cmake_args": ("-DA=1", "-DB=two words"), "llama_src": "/src"}
    monkeypatch.setenv("LLAMATWIST_BACKEND", "bogus")
    with pytest.raises(bn.NativeBuildError, match="unknown backend 'bogus'"):
        bn.ensure_native()


def test_avx2_variant_options_have_no_avx512_whatever_the_host() -> None:
    options = bn.variant_cpu_options("avx2")
    assert set(options) == set(bn.X86_FEATURES) | set(bn.AMX_FEATURES)
    assert {k for k, v in options.items() if v} == {
        "GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"}
    for off in ("GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX_VNNI",
                "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert options[off] is False, off
    with pytest.raises(bn.NativeBuildError, match="unknown cpu variant 'sse2'"):
        bn.variant_cpu_options("sse2")


@pytest.mark.parametrize("cpuinfo", [SPR_CPUINFO, ZEN2_CPUINFO])
def test_avx2_variant_ignores_the_host_cpu(monkeypatch: pytest.MonkeyPatch, cpuinfo: str) -> None:
    monkeypatch.setattr(bn, "_read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(bn.platform, "machine", lambda: "x86_64")
    options, identity = bn.host_cpu(False, "avx2")
    assert options == bn.variant_cpu_options("avx2")
    assert identity == {"variant": "avx2", "ggml": sorted(k for k, v in options.items() if v)}
    with pytest.raises(bn.NativeBuildError, match="--amx needs the native cpu variant"):
        bn.host_cpu(True, "avx2")


def test_avx2_variant_is_x86_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bn.platform, "machine", lambda: "aarch64")
    with pytest.raises(bn.NativeBuildError, match="for x86-64 CPUs; this is aarch64"):
        bn.host_cpu(False, "avx2")


def test_cpu_variant_has_its_own_cache_key() -> None:
    cpu = {"ggml": ["GGML_AVX2"]}
    native = bn.cache_key("sdist:abc", "cpu", [], cpu, False)
    # The native variant keeps the key builds had before variants existed.
    assert native == bn.cache_key("sdist:abc", "cpu", [], cpu, False, "native")
    avx2 = bn.cache_key("sdist:abc", "cpu", [], cpu, False, "avx2")
    assert avx2 != native and avx2.startswith("cpu-avx2-") and len(avx2) == len("cpu-avx2-") + 16


def test_avx2_host_native_build_is_not_the_avx2_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    # On an AVX2-only host both compile the same options, but the variant's key is
    # host-independent (the same on every machine), so they stay two entries.
    monkeypatch.setattr(bn, "_read_cpuinfo", lambda: ZEN2_CPUINFO)
    monkeypatch.setattr(bn, "_is_x86_64_linux", lambda: True)
    monkeypatch.setattr(bn.platform, "machine", lambda: "x86_64")
    native_options, native_cpu = bn.host_cpu(False)
    variant_options, variant_cpu = bn.host_cpu(False, "avx2")
    assert native_options == variant_options
    assert bn.cache_key("sdist:abc", "cpu", [], native_cpu, False) != \
        bn.cache_key("sdist:abc", "cpu", [], variant_cpu, False, "avx2")


def _configure_args(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str] | None = None,
                    **kwargs: object) -> tuple[str, list[str]]:
    """Run ensure_native up to CMake configure (no toolchain, no source needed); return (key, args)."""
    monkeypatch.setenv("LLAMATWIST_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("LLAMATWIST_BACKEND", "LLAMATWIST_CMAKE_ARGS", "LLAMATWIST_LLAMA_SRC", "LLAMATWIST_AMX",
                "LLAMATWIST_CPU_VARIANT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in (env or {}).items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(bn, "_is_x86_64_linux", lambda: True)
    monkeypatch.setattr(bn.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(bn, "_read_cpuinfo", lambda: SPR_CPUINFO)
    monkeypatch.setattr(bn, "find_toolchain", lambda backend: bn.Toolchain("cmake", "ninja", ()))
    monkeypatch.setattr(bn, "place_source", lambda pin, src: src)
    seen: list[list[str]] = []

    class Stop(Exception):
        pass

    def fake_run_logged(cmd: list[object], log_path: Path, what: str) -> None:
        seen.append([str(c) for c in cmd])
        raise Stop

    monkeypatch.setattr(bn, "_run_logged", fake_run_logged)
    with pytest.raises(Stop):
        bn.ensure_native(**kwargs)  # type: ignore[arg-type]
    key = next(p.name for p in (tmp_path / "cache" / "native" / "build").iterdir())
    return key, seen[0]


def test_avx2_variant_configures_cmake_without_avx512(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key, args = _configure_args(monkeypatch, tmp_path, cpu_variant="avx2")
    assert key.startswith("cpu-avx2-")
    assert "-DGGML_NATIVE=OFF" in args
    for on in ("GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"):
        assert f"-D{on}=ON" in args, on
    for off in ("GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX_VNNI",
                "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert f"-D{off}=OFF" in args, off
    assert not any(a.endswith("=ON") and ("AVX512" in a or "AMX" in a or "VNNI" in a) for a in args)


def test_native_variant_on_an_avx512_host_keeps_avx512(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key, args = _configure_args(monkeypatch, tmp_path)
    assert not key.startswith("cpu-avx2-")
    assert "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_VNNI=ON" in args and "-DGGML_NATIVE=OFF" in args


def test_cpu_variant_from_environment_and_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert bn._env_options({"LLAMATWIST_CPU_VARIANT": " AVX2 "}) == {"cpu_variant": "avx2"}
    assert bn._parser().parse_args(["--cpu-variant", "avx2"]).cpu_variant == "avx2"
    assert bn._parser().parse_args([]).cpu_variant is None
    key, _ = _configure_args(monkeypatch, tmp_path / "env", env={"LLAMATWIST_CPU_VARIANT": "avx2"})
    assert key.startswith("cpu-avx2-")
    # The command-line option wins over the environment.
    key, args = _configure_args(monkeypatch, tmp_path / "cli", env={"LLAMATWIST_CPU_VARIANT": "avx2"},
                                cpu_variant="native")
    assert not key.startswith("cpu-avx2-") and "-DGGML_AVX512=ON" in args
    monkeypatch.setenv("LLAMATWIST_CPU_VARIANT", "avx9")
    with pytest.raises(bn.NativeBuildError, match="unknown cpu variant 'avx9'"):
        bn.ensure_native()


def test_vulkan_missing_pieces_are_named_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No system prefix, no SDK, no glslc/cmake/ninja/compiler on PATH: one error names them all.
    monkeypatch.setattr(bn, "SYSTEM_PREFIXES", (tmp_path / "usr",))
    for var in ("VULKAN_SDK", "CMAKE_PREFIX_PATH", "CC", "CXX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(bn, "_find_tool", lambda name, module, attr: None)
    with pytest.raises(bn.NativeBuildError) as info:
        bn.find_toolchain("vulkan")
    message = str(info.value)
    assert "\n" not in message and message.startswith("the vulkan build needs 7 missing piece(s): ")
    for piece in ("glslc shader compiler", "Vulkan headers", "Vulkan loader library", "SPIRV-Headers",
                  "cmake", "ninja", "C/C++ compiler", "apt install glslc libvulkan-dev spirv-headers"):
        assert piece in message

    # An SDK-style prefix with every piece satisfies the Vulkan part; only the build tools are left.
    sdk = tmp_path / "sdk"
    for rel in ("include/vulkan/vulkan.h", "lib/libvulkan.so",
                "share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake"):
        (sdk / rel).parent.mkdir(parents=True, exist_ok=True)
        (sdk / rel).write_text("")
    (sdk / "bin").mkdir()
    (sdk / "bin" / "glslc").write_text("#!/bin/sh\n")
    (sdk / "bin" / "glslc").chmod(0o755)
    monkeypatch.setenv("VULKAN_SDK", str(sdk))
    assert bn._vulkan_missing() == []
    with pytest.raises(bn.NativeBuildError, match=r"needs 3 missing piece\(s\): cmake .*; ninja .*; a C/C\+\+"):
        bn.find_toolchain("vulkan")

    # A runtime-only loader (libvulkan.so.1, no development link) cannot be linked against.
    (sdk / "lib" / "libvulkan.so").rename(sdk / "lib" / "libvulkan.so.1")
    assert bn._vulkan_missing() == ["the Vulkan loader library (libvulkan-dev)"]


@pytest.mark.skipif(shutil.which("glslc") is None, reason="glslc is not installed here")
def test_vulkan_build_without_glslc_on_path_fails_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--backend", "vulkan"],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={**_env_without("glslc", tmp_path), "VULKAN_SDK": ""}, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("build_native: error: the vulkan build needs "), proc.stderr
    assert "the glslc shader compiler (glslc)" in lines[0]
    assert not (tmp_path / "cache" / "downloads").exists()


def test_vulkan_from_environment_is_the_cli_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `LLAMATWIST_BACKEND=vulkan pip install .` (setup.py calls ensure_native()) must reuse the cache entry
    # `build_native.py --backend vulkan` made, and configure ggml-vulkan alone among the GPU backends.
    env_key, env_args = _configure_args(monkeypatch, tmp_path / "env", env={"LLAMATWIST_BACKEND": "vulkan"})
    cli_key, cli_args = _configure_args(monkeypatch, tmp_path / "cli", backend="vulkan")
    assert env_key == cli_key and env_key.startswith("vulkan-")
    def same(args: list[str]) -> list[str]:  # less the paths under each run's own cache
        return [a for a in args[args.index("-B") + 2:] if str(tmp_path) not in a]

    assert same(cli_args) == same(env_args)
    assert "-DGGML_VULKAN=ON" in cli_args and "-DGGML_CUDA=OFF" in cli_args and "-DGGML_METAL=OFF" in cli_args
    cpu_key, _ = _configure_args(monkeypatch, tmp_path / "cpu")
    assert cpu_key.startswith("cpu-") and cpu_key != cli_key
    # Not built yet: build=False says what to run instead of compiling.
    with pytest.raises(bn.NativeBuildError, match=r"not in the cache .*`python build_native.py --backend vulkan`"):
        bn.ensure_native(backend="vulkan", build=False)


def _vulkan_prefix(root: Path, core_header: str) -> Path:
    (root / "include" / "vulkan").mkdir(parents=True)
    (root / "include" / "vulkan" / "vulkan_core.h").write_text(core_header)
    return root


def test_vulkan_shim_only_for_headers_without_layer_settings(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VULKAN_SDK", raising=False)
    monkeypatch.delenv("CMAKE_PREFIX_PATH", raising=False)
    old = _vulkan_prefix(tmp_path / "old", "#define VK_HEADER_VERSION 239\n")
    new = _vulkan_prefix(tmp_path / "new", "#define VK_HEADER_VERSION 309\n#define VK_EXT_layer_settings 1\n")
    monkeypatch.setattr(bn, "SYSTEM_PREFIXES", (old,))
    build_dir = tmp_path / "build"
    assert bn.vulkan_compat_args(build_dir) == [f"-DCMAKE_CXX_FLAGS=-I{build_dir / 'vulkan-compat'}"]
    shim = (build_dir / "vulkan-compat" / "vulkan" / "vulkan.hpp").read_text()
    assert shim.startswith("// Written by llamatwist") and "#include_next <vulkan/vulkan.hpp>" in shim
    # Newer headers first (an SDK or CMAKE_PREFIX_PATH, as CMake searches them): no shim.
    monkeypatch.setenv("CMAKE_PREFIX_PATH", str(new))
    assert bn.vulkan_compat_args(tmp_path / "build2") == []
    assert not (tmp_path / "build2").exists()


# The pinned ggml-vulkan.cpp's use of VK_EXT_layer_settings (ggml_vk_instance_init), verbatim in substance.
_LAYER_SETTINGS_USE = """\
#include <vulkan/vulkan.hpp>
vk::Instance make(bool layer_settings) {
    vk::ApplicationInfo app_info{ "ggml-vulkan", 1, nullptr, 0, VK_API_VERSION_1_2 };
    std::vector<const char*> layers, extensions;
    VkBool32 enable_best_practice = layer_settings;
    std::vector<vk::LayerSettingEXT> settings = {
        { "VK_LAYER_KHRONOS_validation", "validate_best_practices", vk::LayerSettingTypeEXT::eBool32, 1,
          &enable_best_practice },
    };
    vk::LayerSettingsCreateInfoEXT layer_setting_info(settings);
    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions,
                                                &layer_setting_info);
    static_assert(sizeof(vk::LayerSettingsCreateInfoEXT) == 32 && sizeof(vk::LayerSettingEXT) == 32);
    return vk::createInstance(instance_create_info);
}
"""


@pytest.mark.skipif(not Path("/usr/include/vulkan/vulkan.hpp").is_file() or shutil.which("c++") is None,
                    reason="needs a C++ compiler and the system Vulkan headers (libvulkan-dev)")
def test_vulkan_shim_compiles_ggml_vulkans_layer_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VULKAN_SDK", raising=False)
    monkeypatch.delenv("CMAKE_PREFIX_PATH", raising=False)
    monkeypatch.setattr(bn, "SYSTEM_PREFIXES", (Path("/usr"),))
    src = tmp_path / "use.cpp"
    src.write_text(_LAYER_SETTINGS_USE)
    args = bn.vulkan_compat_args(tmp_path / "build")
    flags = [a.removeprefix("-DCMAKE_CXX_FLAGS=") for a in args]
    proc = subprocess.run(["c++", "-std=gnu++17", "-fsyntax-only", *flags, str(src)],
                          check=False, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if args:  # these headers lack the extension: without the shim the same code does not compile
        proc = subprocess.run(["c++", "-std=gnu++17", "-fsyntax-only", str(src)],
                              check=False, capture_output=True, text=True, timeout=240)
        assert proc.returncode != 0 and "LayerSettingEXT" in proc.stderr
