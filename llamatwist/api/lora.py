# -*- test-case-name: tests.test_lora -*-
"""LoRA adapter routes: GET /lora-adapters lists the adapters loaded at start-up (--lora, --lora-scaled)."""

from __future__ import annotations

import dataclasses
from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamatwist.api.http import ApiContext, handler, send_json

__all__ = ["register"]


def register(app: Klein, ctx: ApiContext) -> None:
    @app.route("/lora-adapters", methods=["GET"])
    @handler
    async def lora_adapters(request: Request) -> Any:
        loaded = ctx.require_ready()
        return send_json(request, [dataclasses.asdict(info) for info in loaded.loras])
