# -*- test-case-name: tests.test_flags_download -*-
"""llama-server's model presets (--fim-qwen-*, --embd-gemma-default, --gpt-oss-*): a Hugging Face model
and the parameters llama.cpp's common/arg.cpp sets with it. Flags given explicitly win over a preset's
values, wherever they stand on the command line."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MODEL_PRESETS"]

_FIM: Final = {"port": 8012, "n_ubatch": 1024, "n_batch": 1024, "n_ctx": 0, "sampling.n_cache_reuse": 256}
_GPT_OSS: Final = {
    "port": 8013, "n_ubatch": 2048, "n_batch": 32768, "n_parallel": 2, "n_ctx": 131072 * 2, "jinja": True,
    "sampling.temperature": 1.0, "sampling.top_p": 1.0, "sampling.top_k": 0, "sampling.min_p": 0.01,
}
_QWEN_DRAFT: Final = {"hf_repo_draft": "ggml-org/Qwen2.5-Coder-0.5B-Q8_0-GGUF",
                      "hf_file_draft": "qwen2.5-coder-0.5b-q8_0.gguf"}


def _fim(name: str) -> dict[str, Any]:
    return {"hf_repo": f"ggml-org/{name}-Q8_0-GGUF", "hf_file": f"{name.lower()}-q8_0.gguf", **_FIM}


#: flag -> (help, ServerConfig fields ("sampling.<name>" for the request defaults))
MODEL_PRESETS: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "--embd-gemma-default": ("use default EmbeddingGemma model (note: can download weights from the internet)", {
        "hf_repo": "ggml-org/embeddinggemma-300M-qat-q4_0-GGUF", "hf_file": "embeddinggemma-300M-qat-Q4_0.gguf",
        "port": 8011, "n_ubatch": 2048, "n_batch": 2048, "n_parallel": 32, "n_ctx": 2048 * 32, "embeddings": True,
    }),
    "--fim-qwen-1.5b-default": ("use default Qwen 2.5 Coder 1.5B (note: can download weights from the internet)",
                                _fim("Qwen2.5-Coder-1.5B")),
    "--fim-qwen-3b-default": ("use default Qwen 2.5 Coder 3B (note: can download weights from the internet)",
                              _fim("Qwen2.5-Coder-3B")),
    "--fim-qwen-7b-default": ("use default Qwen 2.5 Coder 7B (note: can download weights from the internet)",
                              _fim("Qwen2.5-Coder-7B")),
    "--fim-qwen-7b-spec": (("use Qwen 2.5 Coder 7B + 0.5B draft for speculative decoding (note: can download "
                           "weights from the internet)"), _fim("Qwen2.5-Coder-7B") | _QWEN_DRAFT),
    "--fim-qwen-14b-spec": (("use Qwen 2.5 Coder 14B + 0.5B draft for speculative decoding (note: can download "
                            "weights from the internet)"), _fim("Qwen2.5-Coder-14B") | _QWEN_DRAFT),
    "--fim-qwen-30b-default": (("use default Qwen 3 Coder 30B A3B Instruct (note: can download weights from the "
                               "internet)"), _fim("Qwen3-Coder-30B-A3B-Instruct")),
    "--vision-gemma-4b-default": ("use Gemma 3 4B QAT (note: can download weights from the internet)", {
        "hf_repo": "ggml-org/gemma-3-4b-it-qat-GGUF", "port": 8014, "n_ctx": 0, "jinja": True}),
    "--vision-gemma-12b-default": ("use Gemma 3 12B QAT (note: can download weights from the internet)", {
        "hf_repo": "ggml-org/gemma-3-12b-it-qat-GGUF", "port": 8014, "n_ctx": 0, "jinja": True}),
    "--gpt-oss-20b-default": ("use gpt-oss-20b (note: can download weights from the internet)", {
        "hf_repo": "ggml-org/gpt-oss-20b-GGUF", "hf_file": "gpt-oss-20b-mxfp4.gguf", **_GPT_OSS}),
    "--gpt-oss-120b-default": ("use gpt-oss-120b (note: can download weights from the internet)", {
        "hf_repo": "ggml-org/gpt-oss-120b-GGUF", **_GPT_OSS}),
}
