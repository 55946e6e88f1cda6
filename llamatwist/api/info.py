# -*- test-case-name: tests.test_server -*-
"""Server state routes: /health, /props, /models, /slots, /metrics."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamatwist import __version__
from llamatwist.api.completion import generation_settings
from llamatwist.api.errors import InvalidRequest, NotFound, NotSupported
from llamatwist.api.http import ApiContext, handler, read_json, send_json
from llamatwist.api.params import OutputOptions, generation_params
from llamatwist.config import ServerConfig
from llamatwist.engine.model import backend_name, devices, offloaded_layers
from llamatwist.media import MEDIA_MARKER
from llamatwist.metrics import MetricsExporter
from llamatwist.runtime import LoadedModel, SlotInfo, validate_filename

__all__ = ["listed_model", "model_list", "register"]

# llama-server's /slots settings when LLAMA_SERVER_SLOTS_DEBUG is unset (task_params::to_json's only_metrics)
SLOT_METRICS_PARAMS = frozenset((
    "seed", "temperature", "dynatemp_range", "dynatemp_exponent", "top_k", "top_p", "min_p", "top_n_sigma",
    "xtc_probability", "xtc_threshold", "typical_p", "repeat_last_n", "repeat_penalty", "presence_penalty",
    "frequency_penalty", "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "mirostat",
    "mirostat_tau", "mirostat_eta", "adaptive_target", "adaptive_decay", "max_tokens", "n_predict", "n_keep",
    "n_discard", "ignore_eos", "stream", "n_probs", "min_keep", "chat_format", "reasoning_format",
    "reasoning_in_content", "generation_prompt", "samplers", "speculative.types", "timings_per_token",
    "post_sampling_probs", "backend_sampling", "lora"))
_STARTED = int(time.time())  # the server process's start, as llama-server's Process-Start-Time-Unix


def _rope(config: ServerConfig) -> dict[str, Any]:
    return {
        "scaling": config.rope_scaling or "model",
        "freq_base": config.rope_freq_base,
        "freq_scale": config.rope_freq_scale,
        "yarn_orig_ctx": config.yarn_orig_ctx,
        "yarn_ext_factor": config.yarn_ext_factor,
        "yarn_attn_factor": config.yarn_attn_factor,
        "yarn_beta_slow": config.yarn_beta_slow,
        "yarn_beta_fast": config.yarn_beta_fast,
    }


def _offload(config: ServerConfig, loaded: LoadedModel) -> dict[str, Any]:
    """llamatwist's: the build's backend and devices, and where the model's layers went."""
    found = devices()
    n_layer = loaded.info.n_layer
    return {
        "backend": backend_name(found),
        "devices": [{"name": d.name, "description": d.description, "type": d.kind,
                     "memory_total": d.total, "memory_free": d.free} for d in found],
        "n_gpu_layers": loaded.n_gpu_layers,  # --fit may have lowered an unset -ngl
        "layers_offloaded": offloaded_layers(loaded.n_gpu_layers, n_layer, config.devices),
        "layers_total": n_layer + 1,  # the output layer counts, as in llama.cpp's "offloaded N/M layers"
        "kv_offload": config.kv_offload,
        # the multimodal projector's encoder (--mmproj-offload, -mmdev, -dev): offloaded or not, its backend
        "mmproj": None if loaded.mmproj_backend is None else {"offload": config.projector_devices != (),
                                                              "backend": loaded.mmproj_backend},
    }


# the output parser's settings /props lists: those of a request that names none (llama-server's defaults)
PROPS_OUTPUT = OutputOptions(reasoning_format="none")


def _env_int(name: str) -> int:
    """An integer environment variable read as C's atoi reads it (unset or not a number: 0)."""
    m = re.match(r"\s*[+-]?\d+", os.environ.get(name, ""))
    return int(m.group()) if m else 0


def listed_model(entry: dict[str, Any]) -> dict[str, Any]:
    """A model entry (OpenAI's: id, object, created, ...) with Anthropic's fields too (type, display_name,
    created_at), so that either SDK's models.list and models.retrieve read it."""
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["created"]))
    return {**entry, "type": "model", "display_name": entry["id"], "created_at": created}


def model_list(data: list[dict[str, Any]]) -> dict[str, Any]:
    """The models list: OpenAI's shape, with Anthropic's paging fields (one page)."""
    return {"object": "list", "data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def register(app: Klein, ctx: ApiContext) -> None:
    exporter = MetricsExporter(lambda: ctx.engine.metrics())  # the engine is read when scraped
    slots_debug = _env_int("LLAMA_SERVER_SLOTS_DEBUG") != 0

    def model_info(loaded: LoadedModel) -> dict[str, Any]:
        info = loaded.info
        return listed_model({
            "id": ctx.model_alias,
            # a set in llama-server, which names the model itself when no -a is given
            "aliases": list(ctx.config.aliases or (ctx.model_alias,)),
            "tags": list(ctx.config.model_tags),
            "object": "model",
            "created": int(time.time()),
            "owned_by": "llamacpp",
            "meta": {
                "vocab_type": info.vocab_type,
                "n_vocab": info.n_vocab,
                "n_ctx": loaded.n_ctx_slot,
                "n_ctx_train": info.n_ctx_train,
                "n_embd": info.n_embd,
                "n_params": info.n_params,
                "size": info.size,
                "ftype": info.ftype,
            },
        })

    @app.route("/health", methods=["GET"])
    @app.route("/v1/health", methods=["GET"])
    @handler
    async def health(request: Request) -> Any:
        ctx.require_ready()
        return send_json(request, {"status": "ok"})

    @app.route("/props", methods=["GET"])
    @handler
    async def props(request: Request) -> Any:
        loaded = ctx.require_ready()
        defaults = generation_params({}, ctx.config.sampling)
        fmt = ctx.chat_formatter
        # the first call probes the template (a dozen renders): off the reactor thread; cached afterwards
        caps, thinks = await ctx.engine.in_pool(lambda: (fmt.caps, fmt.may_think)) if fmt is not None else ({}, False)
        return send_json(request, {
            "default_generation_settings": {
                # the full form (llama-server's /props gives a shorter one), with its parser entries
                "params": generation_settings(PROPS_OUTPUT.echoed_by(defaults), defaults.sampler.seed, loaded.eog),
                "n_ctx": loaded.n_ctx_slot,
            },
            "total_slots": loaded.n_slots,
            "model_alias": ctx.model_alias,
            "model_ftype": loaded.info.ftype,
            "model_path": ctx.model_path,
            "modalities": {"vision": loaded.vision, "video": loaded.video, "audio": loaded.audio},
            "media_marker": MEDIA_MARKER,
            "endpoint_slots": ctx.config.slots,
            "endpoint_props": ctx.config.endpoint_props,
            "endpoint_metrics": ctx.config.metrics,
            "ui": ctx.config.webui,
            "chat_template_caps": caps,
            "chat_template": ctx.chat_formatter.source if ctx.chat_formatter else (loaded.chat_template or ""),
            "bos_token": ctx.engine.token_piece(loaded.bos).decode("utf-8", "replace") if loaded.bos >= 0 else "",
            "eos_token": ctx.engine.token_piece(loaded.eos).decode("utf-8", "replace") if loaded.eos >= 0 else "",
            "build_info": f"llamatwist {__version__}",
            "ui_settings": ctx.config.ui_config,
            "cors_proxy_enabled": ctx.config.ui_mcp_proxy,
            "is_sleeping": ctx.engine.sleeping,
            # llamatwist's: the template has a thinking block (replies are parsed for reasoning), which the web UI's
            # reasoning picker needs (llama-server's UI guesses it from chat_template)
            "supports_thinking": thinks,
            # llamatwist's: the start-up RoPE/YaRN and loading settings (0 or negative = the model's own)
            "rope": _rope(ctx.config),
            "load_mode": ctx.config.load_mode,
            "lazy_mode": ctx.config.lazy_mode,
            "kv_overrides": {key: value for key, _, value in ctx.config.override_kv},
            "offload": _offload(ctx.config, loaded),
        })

    @app.route("/props", methods=["POST"])
    @handler
    async def set_props(request: Request) -> Any:
        if not ctx.config.endpoint_props:
            raise NotSupported("This server does not support changing global properties. Start it with `--props`")
        ctx.require_ready()
        read_json(request)  # nothing is settable yet; the body must still be valid JSON
        return send_json(request, {"success": True})

    @app.route("/models", methods=["GET"])
    @app.route("/v1/models", methods=["GET"])
    @handler
    async def models(request: Request) -> Any:
        loaded = ctx.require_ready()
        multimodal = loaded.vision or loaded.audio
        return send_json(request, model_list([model_info(loaded)]) | {
            # llama-server's Ollama-style list beside OpenAI's
            "models": [{
                "name": ctx.model_alias, "model": ctx.model_alias, "modified_at": "", "size": "", "digest": "",
                "type": "model", "description": "", "tags": [""],
                "capabilities": ["completion", "multimodal"] if multimodal else ["completion"],
                "parameters": "",
                "details": {"parent_model": "", "format": "gguf", "family": "", "families": [""],
                            "parameter_size": "", "quantization_level": ""},
            }],
        })

    @app.route("/models/<path:model_id>", methods=["GET"])
    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    @handler
    async def model(request: Request, model_id: str) -> Any:
        """One model, as OpenAI's ``models.retrieve``: by its name or any of its aliases."""
        loaded = ctx.require_ready()
        info = model_info(loaded)
        # a model named by its path (no -a) has an id starting with "/": the URL's "//" reads as one
        names = {info["id"], *info["aliases"]}
        if model_id not in names and "/" + model_id not in names:
            raise NotFound(f"The model '{model_id}' does not exist")
        return send_json(request, info)

    @app.route("/slots", methods=["GET"])
    @handler
    async def slots(request: Request) -> Any:
        if not ctx.config.slots:
            raise NotSupported("This server does not support slots endpoint. Start it with `--slots`")
        loaded = ctx.require_ready()
        return send_json(request, [await slot_json(s, loaded.eog) for s in ctx.engine.slots()])

    async def slot_json(s: SlotInfo, eog: tuple[int, ...]) -> dict[str, Any]:
        """llama-server's /slots entry: the slot, then its current (or last) task. As llama-server, the task's
        prompt, its text so far and its whole settings (grammar, stops, biases) are shown only with
        LLAMA_SERVER_SLOTS_DEBUG set: another client's request is not everyone's to read."""
        spec = s.params.speculative if s.params is not None else None
        out: dict[str, Any] = {"id": s.id, "n_ctx": s.n_ctx, "speculative": bool(spec and spec.active),
                               "is_processing": s.is_processing}
        if s.params is None:
            return out
        out.update({
            "id_task": s.id_task,
            "n_prompt_tokens": s.n_prompt_tokens,
            "n_prompt_tokens_processed": s.n_prompt_tokens_processed,
            "n_prompt_tokens_cache": s.n_prompt_tokens_cache,
            "params": generation_settings(s.params, s.seed, eog=eog),
            "next_token": [{"has_next_token": s.has_next_token, "has_new_line": s.is_processing and "\n" in s.generated,
                            "n_remain": s.n_remain, "n_decoded": s.n_decoded}],
        })
        if not slots_debug:
            out["params"] = {k: v for k, v in out["params"].items() if k in SLOT_METRICS_PARAMS}
            return out
        out["prompt"] = await ctx.engine.detokenize(list(s.prompt))
        out["generated"] = s.generated
        return out

    @app.route("/slots/<int:id_slot>", methods=["POST"])
    @handler
    async def slot_action(request: Request, id_slot: int) -> Any:
        if not ctx.config.slot_save_path:
            raise NotSupported("This server does not support slots action. Start it with `--slot-save-path`")
        ctx.require_ready()
        args: dict[bytes, list[bytes]] = request.args or {}
        action = (args.get(b"action") or [b""])[0].decode("utf-8", "replace")
        if action not in ("save", "restore", "erase"):
            raise InvalidRequest("Invalid action")
        path = None
        if action != "erase":
            path = Path(ctx.config.slot_save_path) / validate_filename(read_json(request).get("filename"))
        return send_json(request, await ctx.engine.slot_action(id_slot, action, path))

    @app.route("/metrics", methods=["GET"])
    @handler
    async def metrics(request: Request) -> Any:
        if not ctx.config.metrics:
            raise NotSupported("This server does not support metrics endpoint. Start it with `--metrics`")
        ctx.require_ready()
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4")
        request.setHeader(b"Process-Start-Time-Unix", str(_STARTED).encode())
        own = ctx.request_metrics.render() if ctx.request_metrics is not None else b""
        return exporter.render() + own
