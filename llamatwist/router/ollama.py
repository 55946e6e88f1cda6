# -*- test-case-name: tests.test_router_cache -*-
"""Ollama's routes that a router answers itself (the rest go to a model's server by ``model``):
``/api/tags`` and ``/api/ps`` from the catalog, ``/api/version``, and the store: ``/api/pull`` downloads into
the Hugging Face cache as ``POST /models`` does (``hf.co/<user>/<model>[:quant]`` or ``<user>/<model>[:quant]``;
a model the catalog has is there already), streaming Ollama's progress objects; ``/api/delete`` removes a
cached model as ``DELETE /models`` does; creating, copying and pushing are refused."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import treq
from klein import Klein
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool
from twisted.web.server import Request

from llamatwist.api.errors import BadGateway
from llamatwist.api.http import handler, read_json, send_json
from llamatwist.api.ollama.response import NEVER_EXPIRES, model_details, model_entry
from llamatwist.api.ollama.store import REFUSED, answer_statuses, pull_name, register_shared, streams
from llamatwist.api.ollama.stream import NDJSONStream
from llamatwist.router.catalog import CHILD_HOST
from llamatwist.router.downloads import Downloads
from llamatwist.router.fleet import LOADED, Fleet, Instance

__all__ = ["register"]

log = logging.getLogger("llamatwist.router")

_HUB_PREFIXES = ("hf.co/", "huggingface.co/")
_SUCCESS = {"status": "success"}


def _entry(inst: Instance) -> dict[str, Any]:
    """The model as Ollama's ``/api/tags`` lists it: its file, and what its server says of it once running."""
    options = inst.entry.options
    path = next((options[i + 1] for i, o in enumerate(options[:-1]) if o in ("-m", "--model")), "")
    meta = inst.info.get("meta") or {}
    return model_entry(inst.entry.name, path, model_details("", int(meta.get("n_params") or 0),
                                                            str(meta.get("ftype") or "")))


def _repo(name: str) -> str:
    """Ollama's name of a Hugging Face model (``hf.co/<user>/<model>:<quant>``) as -hf's."""
    for prefix in _HUB_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _progress(message: dict[str, Any]) -> dict[str, Any]:
    """A download's progress event as Ollama's pull progress (the file's URL for its digest)."""
    url, counts = next(iter(message["data"]["progress"].items()))
    out: dict[str, Any] = {"status": f"pulling {url.rsplit('/', 1)[-1]}", "digest": url, "completed": counts["done"]}
    if counts["total"] is not None:
        out["total"] = counts["total"]
    return out


def register(app: Klein, fleet: Fleet, downloads: Downloads, remove: Callable[[str], Awaitable[None]],
             pool: HTTPConnectionPool) -> None:
    """``remove(name)``: what ``DELETE /models`` does (cancel a download, or delete a cached model); ``pool``: the
    connections to the models' servers."""

    @app.route("/api/tags", methods=["GET"])
    @handler
    async def tags(request: Request) -> Any:
        return send_json(request, {"models": [_entry(i) for i in fleet.instances.values()]})

    @app.route("/api/ps", methods=["GET"])
    @handler
    async def ps(request: Request) -> Any:
        """The models whose servers run and hold their weights: each loaded one's own ``/api/ps`` says (one asleep
        after a keep_alive, or --sleep-idle-seconds, lists nothing) and when it is due to unload."""
        await fleet.check_sleep()
        loaded = [i for i in fleet.instances.values() if i.status == LOADED]
        answers = await defer.gatherResults([defer.ensureDeferred(_child_ps(i)) for i in loaded])
        return send_json(request, {"models": [m for models in answers for m in models]})

    async def _child_ps(inst: Instance) -> list[dict[str, Any]]:
        try:
            answer = await treq.get(f"http://{CHILD_HOST}:{inst.port}/api/ps", pool=pool, timeout=5)
            models = (await answer.json())["models"] if answer.code == 200 else None
        except Exception as exc:  # noqa: BLE001  # gone meanwhile, or busy loading: listed as the catalog says
            log.info("/api/ps of model %s failed: %s", inst.entry.name, exc)
            models = None
        if models is None:
            return [{**_entry(inst), "expires_at": NEVER_EXPIRES, "size_vram": 0}]
        return [{**_entry(inst), **{k: m[k] for k in ("expires_at", "size_vram", "context_length") if k in m}}
                for m in models[:1]]

    @app.route("/api/pull", methods=["POST"])
    @handler
    async def pull(request: Request) -> Any:
        body = read_json(request)
        name, stream = pull_name(body), streams(body)
        repo = _repo(name)
        if fleet.find(name) is not None or fleet.find(repo) is not None:
            return answer_statuses(request, stream, [{"status": "pulling manifest"}, _SUCCESS])
        events: list[dict[str, Any]] = []
        out = NDJSONStream(request) if stream else None

        def listen(message: dict[str, Any]) -> None:
            if message.get("model") == repo:
                events.append(message)
                if out is not None and out.started and message["event"] == "download_progress":
                    out.send(_progress(message))

        fleet.listeners.append(listen)
        try:
            await downloads.start(repo)  # the hub is asked first: its 400 / 503 comes before any line
            if out is not None:
                out.send({"status": "pulling manifest"})
                for message in events:  # what came before the first line
                    if message["event"] == "download_progress":
                        out.send(_progress(message))
            download = downloads.active.get(repo)
            if download is not None:
                await download.finished
        finally:
            fleet.listeners.remove(listen)
        failed = next((e["data"].get("error", "") for e in events if e["event"] == "download_failed"), None)
        if failed is not None or not any(e["event"] == "download_finished" for e in events):
            err = BadGateway(f"pulling {name} failed: {failed or 'the download was cancelled'}")
            if out is None:
                raise err
            out.send_error(err)
            return b""
        if out is None:
            return send_json(request, _SUCCESS)
        out.send({"status": "verifying sha256 digest"})
        out.send(_SUCCESS)
        return b""

    @app.route("/api/delete", methods=["DELETE"])
    @handler
    async def delete(request: Request) -> Any:
        await remove(pull_name(read_json(request)))
        return b""

    register_shared(app, (path for path in REFUSED if path != "/api/delete"))
