# -*- test-case-name: tests.test_router_cache -*-
"""``POST /models``: a model downloaded into the Hugging Face cache while the router serves (llama-server's).

The hub is asked first, so a name it does not know is the request's 400; the download then runs in a
thread, listed by ``/models`` as ``downloading`` with its progress and told on ``/models/sse``
(``download_progress``, then ``download_finished`` or ``download_failed``). When it ends the catalog is read
again, and the cache's new model is listed (``<user>/<model>:<TAG>``). ``DELETE /models`` cancels one (the
partial file stays, and a later download resumes it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, threads

from llamatwist.api.errors import InvalidRequest, Unavailable
from llamatwist.cli.download import DownloadError
from llamatwist.cli.hf import HfDownload, HubUnreachable, fetch_hf, hf_repo, plan_hf
from llamatwist.router.fleet import Fleet

__all__ = ["Download", "Downloads"]

log = logging.getLogger("llamatwist.router")


class Cancelled(DownloadError):
    pass


@dataclass
class Download:
    name: str
    url: str
    done: int = 0
    total: int | None = None
    cancelled: bool = False
    finished: defer.Deferred[None] = field(default_factory=defer.Deferred)

    def model_json(self, created: int) -> dict[str, Any]:
        """Its /models entry, as llama-server lists a model being downloaded."""
        return {"id": self.name, "aliases": [], "tags": [], "object": "model", "owned_by": "llamacpp",
                "created": created, "status": {"value": "downloading", "args": []},
                "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
                "source": "cache", "can_remove": True, "progress": self.progress_json()}

    def progress_json(self) -> dict[str, Any]:
        return {self.url: {"done": self.done, "total": self.total}}


class Downloads:
    def __init__(self, fleet: Fleet, reactor: Any, reload: Callable[[], Awaitable[None]],
                 token: str | None) -> None:
        self.active: dict[str, Download] = {}
        self._fleet = fleet
        self._reactor = reactor
        self._reload = reload
        self._token = token

    async def start(self, name: Any) -> None:
        """Ask the hub for `name`'s file and start downloading it (400 for a name the hub cannot serve)."""
        if not isinstance(name, str) or not name:
            raise InvalidRequest("model must be a non-empty string")
        try:
            hf_repo(name)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if self._fleet.find(name) is not None or name in self.active:
            raise InvalidRequest(f"model '{name}' already exists")
        try:
            plan: HfDownload = await threads.deferToThread(plan_hf, name, token=self._token, mmproj=True)
        except HubUnreachable as exc:
            raise Unavailable(f"cannot reach the Hugging Face hub: {exc}") from None
        except DownloadError as exc:
            raise InvalidRequest(f"model validation failed, unable to download: {exc}") from None
        if name in self.active:  # another request started it meanwhile
            raise InvalidRequest(f"model '{name}' already exists")
        download = Download(name, plan.url)
        self.active[name] = download
        log.info("starting download for model %s: %s", name, plan.url)
        self._tell(name, "download_progress", {"progress": download.progress_json()})
        defer.ensureDeferred(self._run(download, plan))

    async def _run(self, download: Download, plan: HfDownload) -> None:
        def progress(done: int, total: int | None) -> None:  # in the download's thread
            if download.cancelled:
                raise Cancelled("cancelled")
            self._reactor.callFromThread(self._progressed, download, done, total)

        try:
            await threads.deferToThread(fetch_hf, plan, token=self._token, progress=progress)
        except Cancelled:
            log.info("download of model %s cancelled", download.name)
        except Exception as exc:  # noqa: BLE001  # any failure ends this download, not the router
            log.error("download of model %s failed: %s", download.name, exc)
            self._tell(download.name, "download_failed", {"error": str(exc)})
        else:
            log.info("download of model %s finished", download.name)
            self._tell(download.name, "download_finished", {})
        finally:
            self.active.pop(download.name, None)
            try:
                await self._reload()  # the cache's new model is listed under its own name
            finally:
                download.finished.callback(None)

    def _progressed(self, download: Download, done: int, total: int | None) -> None:
        download.done, download.total = done, total
        self._tell(download.name, "download_progress", {"progress": download.progress_json()})

    async def cancel(self, name: str) -> bool:
        """Stop `name`'s download (False when none runs); fires once it has stopped."""
        download = self.active.get(name)
        if download is None:
            return False
        download.cancelled = True
        await download.finished
        self._tell(name, "model_remove", {})
        return True

    def _tell(self, name: str, event: str, data: dict[str, Any]) -> None:
        message = {"model": name, "event": event, "data": data}
        for listener in list(self._fleet.listeners):
            listener(message)
