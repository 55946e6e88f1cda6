# -*- test-case-name: tests.test_router -*-
"""``make_router_service``: router mode as one Twisted MultiService.

Started without a model and with ``--models-dir`` or ``--models-preset``, llamatwist serves many models
the way llama-server's router does: the router loads no model itself; each model runs in its own
``llamatwist`` process on a local port, started on demand, and the router forwards requests to it.
Stopping the router stops every model's server.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer

from llamatwist.api.security import SecureResource, SecurityPolicy
from llamatwist.config import ServerConfig
from llamatwist.errors import StartupError
from llamatwist.router.catalog import CatalogError, load_catalog
from llamatwist.router.fleet import Fleet
from llamatwist.router.routes import build_router_app
from llamatwist.server import add_listeners
from llamatwist.tools.service import tools_service

__all__ = ["RouterService", "make_router_service"]

log = logging.getLogger("llamatwist.router")


class RouterService(MultiService):
    exit_code = 0

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        names = ", ".join(self.fleet.instances) or "none"
        log.info("router mode: %d models (%s); each loads on its first request", len(self.fleet.instances), names)
        for inst in self.fleet.instances.values():
            if inst.entry.load_on_startup:
                self.fleet.spawn(inst)

    def stopService(self) -> defer.Deferred[None]:
        stopped = self.fleet.stop_all()
        stopped.addCallback(lambda _: MultiService.stopService(self))
        return stopped  # type: ignore[no-any-return]


def make_router_service(config: ServerConfig, reactor: Any = None) -> RouterService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        catalog = load_catalog(config.models_dir, config.models_preset)
    except CatalogError as exc:
        raise StartupError(str(exc)) from None
    starting = [e.name for e in catalog.values() if e.load_on_startup]
    if config.models_max > 0 and len(starting) > config.models_max:
        raise StartupError(f"number of models to load on startup ({len(starting)}) exceeds models_max "
                           f"({config.models_max})")
    fleet = Fleet(catalog, config.argv, config.models_max, reactor)
    top = RouterService(fleet)
    tools = tools_service(config, reactor)
    if tools is not None:
        tools.setServiceParent(top)
    resource = SecureResource(build_router_app(fleet, reactor, config, tools).resource(),
                              SecurityPolicy.from_config(config), is_ready=lambda: not fleet.stopped)
    add_listeners(top, resource, config, reactor)
    return top
