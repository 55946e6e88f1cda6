"""The router's catalog: what --models-dir and --models-preset serve, and each child's command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamatwist.cli.parser import parse_config
from llamatwist.router.catalog import CatalogError, child_args, child_env, load_catalog, router_args, scan_models_dir


def _gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def test_models_dir_layout(tmp_path: Path) -> None:
    single = _gguf(tmp_path / "llama-3.2-1b-Q4_K_M.gguf")
    _gguf(tmp_path / "mmproj-loose.gguf")  # a companion file is no model on its own
    vision = _gguf(tmp_path / "gemma" / "gemma-3-4b-it-Q8_0.gguf")
    projector = _gguf(tmp_path / "gemma" / "mmproj-F16.gguf")
    first = _gguf(tmp_path / "kimi" / "Kimi-00001-of-00002.gguf")
    _gguf(tmp_path / "kimi" / "Kimi-00002-of-00002.gguf")
    (tmp_path / "empty").mkdir()
    (tmp_path / "README.md").write_text("not a model")
    models = scan_models_dir(str(tmp_path))
    assert set(models) == {"llama-3.2-1b-Q4_K_M", "gemma", "kimi"}
    assert models["llama-3.2-1b-Q4_K_M"].options == ("-m", str(single))
    assert models["gemma"].options == ("-m", str(vision), "--mmproj", str(projector))
    assert models["gemma"].mmproj == str(projector)
    assert models["kimi"].options == ("-m", str(first))
    assert {m.source for m in models.values()} == {"models_dir"}
    with pytest.raises(CatalogError, match="does not exist or is not a directory"):
        scan_models_dir(str(tmp_path / "missing"))


def test_preset_keys_values_and_precedence(tmp_path: Path) -> None:
    model = _gguf(tmp_path / "dir" / "a.gguf")
    ini = tmp_path / "p.ini"
    ini.write_text(
        "version = 1\n"
        "[*]\n"
        "c = 8192\n"
        "n-gpu-layers = 8\n"
        "[a]\n"
        "; comment\n"
        "chat-template = chatml\n"
        "jinja = true\n"
        "no-webui = true\n"  # a negative spelling, switched on: the UI off
        "cont-batching = off\n"
        "LLAMA_ARG_CACHE_RAM = 0\n"
        "ngl = 123\n"
        "alias = first, one\n"
        "tags = x\n"
        "port = 9999\n"  # the router's to set: dropped
        "stop-timeout = 3\n"
        "[b]\n"
        "model = /models/b.gguf\n"
        "load-on-startup = true\n"
    )
    catalog = load_catalog(str(tmp_path / "dir"), str(ini))
    a, b = catalog["a"], catalog["b"]
    assert a.source == "preset" and b.source == "preset"
    assert a.options == ("-c", "8192", "--n-gpu-layers", "8", "-m", str(model), "--chat-template", "chatml",
                         "--jinja", "--no-ui", "-nocb", "-cram", "0", "-ngl", "123")
    assert a.aliases == ("first", "one") and a.tags == ("x",) and a.stop_timeout == 3
    assert not a.load_on_startup and b.load_on_startup
    assert b.options == ("-c", "8192", "--n-gpu-layers", "8", "--model", "/models/b.gguf")
    # the child's command line: [*], the model's section, then the router's own flags (the last one wins)
    argv = ["--models-preset", str(ini), "-c", "4096", "--port", "8080", "--host", "0.0.0.0", "--api-key", "k",
            "--alias", "x", "-fa", "--temp", "0"]
    args = child_args(a, argv, 1234)
    config = parse_config(args, {})
    assert config.n_ctx == 4096 and config.n_gpu_layers == 123 and config.chat_template == "chatml"
    assert not config.webui and not config.cont_batching and config.cache_ram_mib == 0
    assert config.flash_attn == "on" and config.sampling.temperature == 0
    assert (config.host, config.port, config.alias, config.api_keys) == ("127.0.0.1", 1234, "a", ())


@pytest.mark.parametrize(("text", "error"), [
    ("[m]\nmodel = x.gguf\nbogus = 1\n", "option 'bogus' not recognized in preset 'm'"),
    ("[m]\nc = 1\n", "preset 'm' names no model"),
    ("[m]\nmodel = x.gguf\njinja = maybe\n", "takes true or false"),
    ("[m]\nmodel = x.gguf\nstop-timeout = soon\n", "stop-timeout of preset 'm'"),
    ("[m]\nmodel = x.gguf\n[m]\nmodel = y.gguf\n", "section 'm' already exists"),
    ("[m]\nmodel = x.gguf\n[n]\nmodel = y.gguf\nalias = m\n", "alias 'm' of model 'n'"),
    ("[m\n", "--models-preset"),
])
def test_bad_presets(tmp_path: Path, text: str, error: str) -> None:
    ini = tmp_path / "p.ini"
    ini.write_text(text)
    with pytest.raises(CatalogError, match=error):
        load_catalog(None, str(ini))


def test_router_args_keep_everything_but_the_routers_own() -> None:
    argv = ["--models-dir", "/m", "--models-max=2", "--no-models-autoload", "--port=80", "-c", "512", "--host",
            "::", "-fa", "on", "-fa", "--lora", "x.gguf", "--ssl-key-file", "k", "--ctx_size", "64", "-m", "z"]
    assert router_args(argv) == ["-c", "512", "-fa", "on", "-fa", "--lora", "x.gguf", "--ctx_size", "64"]


def test_child_env_drops_the_routers_variables() -> None:
    env = {"LLAMA_API_KEY": "k", "LLAMA_ARG_MODELS_DIR": "/m", "LLAMA_ARG_MODELS_PRESET": "p",
           "LLAMA_ARG_HOST": "0.0.0.0", "LLAMA_ARG_PORT": "80", "LLAMA_ARG_MODEL": "m", "LLAMA_ARG_CTX_SIZE": "64",
           "LLAMA_ARG_API_KEY_FILE": "f", "HOME": "/root", "AIP_MODE": "PREDICTION", "AIP_HTTP_PORT": "8080"}
    assert child_env(env) == {"LLAMA_ARG_CTX_SIZE": "64", "HOME": "/root"}
