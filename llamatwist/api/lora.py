# -*- test-case-name: tests.test_lora -*-
"""LoRA adapter routes: GET /lora-adapters lists the adapters loaded at start-up (--lora, --lora-scaled) with
their server-wide scales; POST /lora-adapters sets those scales."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from llamatwist.api.errors import InvalidRequest

if TYPE_CHECKING:
    from klein import Klein
    from twisted.web.server import Request

    from llamatwist.api.http import ApiContext

__all__ = ["check_lora_ids", "parse_lora_list", "read_lora", "register"]


def read_lora(value: Any, name: str = "lora") -> tuple[tuple[int, float], ...]:
    """A request's ``lora`` field, ``[{"id": 0, "scale": 0.5}, ...]``, as (id, scale) pairs."""
    return tuple(_entries(value, name, None))


def check_lora_ids(pairs: tuple[tuple[int, float], ...] | None, n_adapters: int, name: str = "lora") -> None:
    for i, (lid, _) in enumerate(pairs or ()):
        if not lid < n_adapters:
            raise InvalidRequest(f"'{name}[{i}].id': no LoRA adapter with id {lid} ({n_adapters} loaded)")


def parse_lora_list(value: Any, n_adapters: int, name: str = "lora") -> tuple[float, ...]:
    """``[{"id": 0, "scale": 0.5}, ...]`` as one scale per adapter id; ids not listed get 0 (llama-server)."""
    scales = [0.0] * n_adapters
    for lid, scale in _entries(value, name, n_adapters):
        scales[lid] = scale
    return tuple(scales)


def _entries(value: Any, name: str, n_adapters: int | None) -> list[tuple[int, float]]:
    if not isinstance(value, list):
        raise InvalidRequest(f"'{name}' must be an array of {{\"id\", \"scale\"}} objects")
    out: list[tuple[int, float]] = []
    for i, entry in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"id", "scale"}:
            raise InvalidRequest(f"'{where}' must be an object with only 'id' and 'scale'")
        lid, scale = entry.get("id"), entry.get("scale")
        if isinstance(lid, bool) or not isinstance(lid, int):
            raise InvalidRequest(f"'{where}.id' must be an integer")
        if lid < 0 or (n_adapters is not None and lid >= n_adapters):
            raise InvalidRequest(f"'{where}.id': no LoRA adapter with id {lid}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise InvalidRequest(f"'{where}.scale' must be a finite number")
        out.append((lid, float(scale)))
    return out


def register(app: Klein, ctx: ApiContext) -> None:
    from llamatwist.api.http import handler, load_json, send_json  # http imports params, which imports this module

    @app.route("/lora-adapters", methods=["GET"])
    @handler
    async def lora_adapters(request: Request) -> Any:
        loaded = ctx.require_ready()
        scales = ctx.engine.lora_scales()
        return send_json(request, [dataclasses.asdict(dataclasses.replace(info, scale=scales[info.id]))
                                   for info in loaded.loras])

    @app.route("/lora-adapters", methods=["POST"])
    @handler
    async def set_lora_adapters(request: Request) -> Any:
        loaded = ctx.require_ready()
        body = load_json(request.content.read() if request.content is not None else b"")
        if not isinstance(body, list):
            raise InvalidRequest("Request body must be an array")
        await ctx.engine.set_lora_scales(parse_lora_list(body, len(loaded.loras), "body"))
        return send_json(request, {"success": True})
