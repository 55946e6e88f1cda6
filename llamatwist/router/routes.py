# -*- test-case-name: tests.test_router -*-
"""The router's HTTP API, as llama-server's router mode.

Its own routes: ``/health``, ``/models`` and ``/v1/models`` (every model with its status), ``/props``
(the router's; with ``?model=`` the model's), ``POST /models/load`` and ``/models/unload``, ``POST /models``
(a download into the Hugging Face cache: downloads.py) and ``DELETE /models`` (a cache model's files, or a
download), and ``GET /models/sse`` (status events). Every other route goes to a model's server: a POST by its body's
``model``, a GET or DELETE by the ``model`` query parameter; a model not running is loaded first unless
``--no-models-autoload`` (``?autoload=true|false`` decides per request).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import treq
from klein import Klein
from twisted.internet import defer, threads
from twisted.internet.error import ConnectError
from twisted.web.client import Agent
from twisted.web.server import Request

from llamatwist import __version__
from llamatwist.api import server_tools, vertex, webui
from llamatwist.api.app import add_error_handlers
from llamatwist.api.errors import (
    InvalidRequest,
    NotFound,
    ServerError,
    Unavailable,
    register_error_shape,
)
from llamatwist.api.http import handler, load_json, query_param, read_json, send_json
from llamatwist.api.info import listed_model, model_list
from llamatwist.api.ollama.response import error_shape as ollama_error
from llamatwist.api.openapi import OPERATIONS
from llamatwist.api.stream_sessions import conversation_id
from llamatwist.config import ServerConfig
from llamatwist.router import ollama
from llamatwist.router.catalog import CHILD_HOST, CatalogError, load_catalog, remove_cached_model
from llamatwist.router.downloads import Downloads
from llamatwist.router.fleet import LOADED, Fleet, Instance
from llamatwist.router.proxy import forward, quiet_pool
from llamatwist.tools.service import ToolsService

__all__ = ["build_router_app"]

log = logging.getLogger("llamatwist.router")

_MAX_CONVERSATIONS = 10_000  # conversations whose model the router remembers (the least recent forgotten)


def _autoload(request: Request, default: bool) -> bool:
    value = query_param(request, "autoload")
    return default if value is None else value in ("true", "1")


def _model_json(inst: Instance, created: int) -> dict[str, Any]:
    entry = inst.entry
    out: dict[str, Any] = listed_model({
        "id": entry.name, "aliases": list(entry.aliases), "tags": list(entry.tags), "object": "model",
        "owned_by": "llamacpp", "created": created, "status": inst.status_json(),
        "architecture": {"input_modalities": list(entry.inputs), "output_modalities": ["text"]},
        "source": entry.source, "can_remove": entry.source == "cache",
    })
    if inst.running:
        for key, value in inst.info.items():
            out.setdefault(key, value)
    return out


def build_router_app(fleet: Fleet, reactor: Any, config: ServerConfig, tools: ToolsService | None = None) -> Klein:
    app = Klein()
    webui.register(app, config)  # first: its routes win over the catch-all ones that forward to a model
    vertex.register(app, config.vertex, [path for _, path in OPERATIONS], config.api_prefix)
    pool = quiet_pool(reactor)
    agent = Agent(reactor, pool=pool)
    conv_models: OrderedDict[str, str] = OrderedDict()  # conversation -> the model its stream went to
    prefix = config.api_prefix.encode("utf-8")
    autoload_default = config.models_autoload

    @app.route("/health", methods=["GET"])
    @app.route("/v1/health", methods=["GET"])
    @handler
    async def health(request: Request) -> Any:
        return send_json(request, {"status": "ok"})

    async def reload_catalog() -> None:
        try:
            catalog = await threads.deferToThread(load_catalog, config.models_dir, config.models_preset)
        except CatalogError as exc:
            raise ServerError(f"cannot reload the models: {exc}") from None
        await fleet.reload(catalog)

    downloads = Downloads(fleet, reactor, reload_catalog, config.hf_token)

    @app.route("/models", methods=["GET"])
    @app.route("/v1/models", methods=["GET"])
    @handler
    async def models(request: Request) -> Any:
        if query_param(request, "reload"):
            await reload_catalog()
        await fleet.check_sleep()
        created = int(time.time())
        listed = [_model_json(i, created) for i in fleet.instances.values()]
        listed += [listed_model(d.model_json(created)) for d in downloads.active.values()]
        return send_json(request, model_list(listed))

    @app.route("/models/<path:model_id>", methods=["GET"])
    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    @handler
    async def model(request: Request, model_id: str) -> Any:
        """One model of the catalog, as OpenAI's ``models.retrieve``: by its name or an alias."""
        inst = fleet.find(model_id)
        if inst is None:
            raise NotFound(f"The model '{model_id}' does not exist")
        await fleet.check_sleep()
        return send_json(request, _model_json(inst, int(time.time())))

    @app.route("/props", methods=["GET"])
    @handler
    async def props(request: Request) -> Any:
        if query_param(request, "model") is not None:
            return await relay(request, query_param(request, "model"))
        return send_json(request, {
            "role": "router",
            "max_instances": fleet.models_max,
            "models_autoload": autoload_default,
            "model_alias": "llamatwist",
            "model_path": "none",
            "default_generation_settings": {"params": {}, "n_ctx": 0},
            "build_info": f"llamatwist {__version__}",
            "ui_settings": config.ui_config,
            "cors_proxy_enabled": config.ui_mcp_proxy,
        })

    @app.route("/models/load", methods=["POST"])
    @handler
    async def load(request: Request) -> Any:
        inst = fleet.known(read_json(request).get("model"))
        if inst.running:
            raise InvalidRequest("model is already running")
        await fleet.load(inst)
        return send_json(request, {"success": True})

    @app.route("/models/unload", methods=["POST"])
    @handler
    async def unload(request: Request) -> Any:
        name = read_json(request).get("model")
        inst = fleet.find(name) if isinstance(name, str) else None
        if inst is None:
            raise InvalidRequest("model is not found")
        if not inst.running:
            raise InvalidRequest("model is not running")
        fleet.unload(inst)
        return send_json(request, {"success": True})

    @app.route("/models", methods=["POST"])
    @handler
    async def download(request: Request) -> Any:
        """Download a model into the Hugging Face cache (``{"model": "<user>/<model>[:quant]"}``)."""
        await downloads.start(read_json(request).get("model"))
        return send_json(request, {"success": True})

    async def remove_model(name: str) -> None:
        """A model of the Hugging Face cache: stopped if running, its files deleted; a download, cancelled."""
        if await downloads.cancel(name):
            return
        inst = fleet.known(name)
        if inst.entry.source != "cache":
            raise InvalidRequest(f"model '{inst.entry.name}' is not removable (not from the cache)")
        await fleet.remove(inst)
        removed = await threads.deferToThread(remove_cached_model, inst.entry.name)
        log.info("removed model %s from the cache (%d files)", inst.entry.name, len(removed))

    @app.route("/models", methods=["DELETE"])
    @handler
    async def remove(request: Request) -> Any:
        """llama-server's removal of a cached model or a download (``?model=``)."""
        name = query_param(request, "model")
        if not name:
            raise InvalidRequest("model must be a non-empty string")
        await remove_model(name)
        return send_json(request, {"success": True})

    ollama.register(app, fleet, downloads, remove_model, pool)

    server_tools.register(app, tools, config.ui_mcp_proxy, reactor)

    @app.route("/models/sse", methods=["GET"])
    def events(request: Request) -> Any:
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")

        def send(message: dict[str, Any]) -> None:
            request.write(b"data: " + json.dumps(message).encode() + b"\n\n")

        fleet.listeners.append(send)
        request.write(b": connected\n\n")
        left: defer.Deferred[None] = defer.Deferred()  # the answer ends when the client leaves

        def gone(_: object) -> None:
            fleet.listeners.remove(send)
            left.callback(None)

        request.notifyFinish().addBoth(gone)
        return left

    async def relay(request: Request, name: Any) -> Any:
        inst = fleet.require(name)
        if inst.status != LOADED or inst.stopping:
            if not _autoload(request, autoload_default):
                raise InvalidRequest("model is not loaded")
            gone: list[bool] = []
            request.notifyFinish().addErrback(lambda _: gone.append(True))
            await fleet.ensure_ready(inst, lambda: bool(gone))
        if request.method == b"POST":
            inst.last_used = time.monotonic()
            conv = conversation_id(request)
            if conv:  # its resumable stream lives in this model's server: /v1/stream goes there
                conv_models[conv] = inst.entry.name
                conv_models.move_to_end(conv)
                while len(conv_models) > _MAX_CONVERSATIONS:
                    conv_models.popitem(last=False)
        inst.requests += 1
        body = b""
        if request.content is not None:  # a BytesIO, or a temporary file past 100 kB (Twisted's choice)
            request.content.seek(0)
            body = request.content.read()
        path = request.path[len(prefix):]  # as sent (still percent-encoded), without --api-prefix
        query = request.uri.partition(b"?")[2]
        try:
            await forward(request, agent, inst.port, path + (b"?" + query if query else b""), body)
        except ConnectError:
            raise Unavailable(f"model {inst.entry.name} is not reachable (its server stopped)") from None
        finally:
            inst.requests -= 1
            fleet.changed()
        return None

    def stream_owner(request: Request) -> str:
        """The model whose server holds a conversation's resumable stream: ?model=, else where its POST went."""
        named = query_param(request, "model")
        conv = query_param(request, "conv_id") or ""
        name = named or conv_models.get(conv)
        inst = fleet.find(name) if name else None
        if inst is None or inst.status != LOADED:
            if not conv:
                raise InvalidRequest("Missing conversation id in path")
            raise NotFound("Stream not found or expired")
        return inst.entry.name

    @app.route("/v1/stream", methods=["GET", "DELETE"])
    @handler
    async def stream(request: Request) -> Any:
        return await relay(request, stream_owner(request))

    async def response_owner(response_id: str) -> str:
        """The loaded model whose server stored a response (each keeps its own): the first that has it."""
        for inst in list(fleet.instances.values()):
            if inst.status != LOADED:
                continue
            url = f"http://{CHILD_HOST}:{inst.port}/v1/responses/{quote(response_id, safe='')}"
            try:
                answer = await treq.get(url, pool=pool, timeout=5)
                await answer.content()
            except Exception as exc:  # noqa: BLE001  # gone meanwhile: it holds nothing now
                log.info("response lookup on model %s failed: %s", inst.entry.name, exc)
                continue
            if answer.code == 200:
                return inst.entry.name
        raise NotFound(f"Response with id '{response_id}' not found.")

    @app.route("/v1/responses/<string:response_id>", methods=["GET", "DELETE"])
    @app.route("/responses/<string:response_id>", methods=["GET", "DELETE"])
    @app.route("/v1/responses/<string:response_id>/input_items", methods=["GET"])
    @app.route("/responses/<string:response_id>/input_items", methods=["GET"])
    @handler
    async def stored_response(request: Request, response_id: str) -> Any:
        """A stored response goes by ?model=, else to the model that has it (OpenAI's SDK names none)."""
        return await relay(request, query_param(request, "model") or await response_owner(response_id))

    @app.route("/v1/streams/lookup", methods=["POST"])
    @handler
    async def lookup(request: Request) -> Any:
        """Asked of every loaded model that holds one of the conversations, the answers joined."""
        ids = read_json(request).get("conversation_ids")
        wanted = [i for i in ids if isinstance(i, str) and i] if isinstance(ids, list) else []
        owners: dict[int, tuple[Instance, list[str]]] = {}  # by port: the server holding them now
        for conv in wanted:
            inst = fleet.instances.get(conv_models.get(conv, ""))
            if inst is not None and inst.status == LOADED:
                owners.setdefault(inst.port, (inst, []))[1].append(conv)
        found: list[Any] = []
        for port, (inst, convs) in owners.items():
            url = f"http://{CHILD_HOST}:{port}/v1/streams/lookup"
            try:
                answer = await treq.post(url, json={"conversation_ids": convs}, pool=pool, timeout=5)
                found += await answer.json()
            except Exception as exc:  # noqa: BLE001  # gone meanwhile: it holds no stream now
                log.info("stream lookup on model %s failed: %s", inst.entry.name, exc)
        return send_json(request, found)

    @app.route("/", branch=True, methods=["POST", "PUT"])
    @handler
    async def by_body(request: Request) -> Any:
        ctype = request.getHeader(b"content-type") or b""
        if ctype.lower().startswith(b"multipart/form-data"):  # /v1/audio/transcriptions: a form field
            return await relay(request, query_param(request, "model"))  # Twisted put the form's fields in args
        raw = request.content.read() if request.content is not None else b""
        body = load_json(raw) if raw.strip() else {}
        return await relay(request, body.get("model") if isinstance(body, dict) else None)

    @app.route("/", branch=True, methods=["GET", "DELETE"])
    @handler
    async def by_query(request: Request) -> Any:
        return await relay(request, query_param(request, "model"))

    register_error_shape(b"/api", ollama_error)  # the router's own errors there (an unknown model) too
    add_error_handlers(app)
    return app
