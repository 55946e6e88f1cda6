# -*- test-case-name: tests.test_responses -*-
"""OpenAI's Responses API — ``POST /v1/responses``, ``/v1/responses/input_tokens`` and the stored responses
(also without ``/v1``)
— on the chat pipeline: a request is translated into the OpenAI chat body ``/v1/chat/completions`` takes,
run by `prepare_chat` and api/pipeline.py as that route runs it, and the reply is translated back by
responses_stream.py.

The translation is llama-server's ``server_chat_convert_responses_to_chatcmpl``: ``instructions`` becomes a
system message, ``input`` a string or items (messages with ``input_text``/``output_text``/``input_image`` parts or a string,
``function_call``, ``function_call_output``, ``reasoning``; an assistant's consecutive items merge into one
message), ``tools`` (function) and ``tool_choice`` their chat forms, ``max_output_tokens`` ``max_tokens``,
``reasoning.effort`` ``reasoning_effort``; llama.cpp's own generation fields pass through. Beyond it:
``text.format`` (json_schema / json_object) constrains the output as the chat route's ``response_format``;
``previous_response_id`` continues a stored response (responses_store.py) — llama-server refuses it — with
an unknown id a 404, and ``GET``/``DELETE /v1/responses/{id}`` and ``GET .../input_items`` read, list and drop
stored responses as OpenAI's API does; and a client's mistake (an unknown item or part type, a non-function tool, a bad
``max_output_tokens``) is a 400 naming the field, where llama-server skips a non-function tool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.web.server import Request

from llamatwist.api.errors import REPORTED, InvalidRequest, NotFound, answer
from llamatwist.api.http import ApiContext, handler, json_bytes, query_param, read_json, send_json
from llamatwist.api.openai.chat import PreparedChat, count_chat_tokens, prepare_chat
from llamatwist.api.openai.responses_store import ResponseStore, StoredResponse, with_ids
from llamatwist.api.openai.responses_stream import Event, OutputBuilder, finish_fields, response_id, usage_json
from llamatwist.api.openai.tools import MessageStream
from llamatwist.api.params import FIELDS, INT32_MAX, optional, read_int
from llamatwist.api.pipeline import run_tasks
from llamatwist.api.streaming import SSEStream, partial_extras
from llamatwist.runtime import FinalResult, PartialResult

__all__ = ["ItemPage", "input_items", "item_page", "parse_item_page", "register", "to_chat_body"]

# llama.cpp's generation fields pass through, as on the other generation routes; not the ones a Responses
# field sets (max_output_tokens) nor token probabilities, which a Responses reply has no place for here
_OWN = frozenset({"n_predict", "max_completion_tokens", "max_tokens", "n_probs", "logprobs", "post_sampling_probs"})
_PASSED = (*(n for f in FIELDS for n in f.names if n not in _OWN), "chat_template_kwargs", "lora",
           "reasoning_format", "reasoning_budget_tokens", "reasoning_budget_message", "parallel_tool_calls")
_UNREAD = "is not supported: give an image as input_image with an image_url (a URL or a data: URL)"
_ROLES = ("user", "assistant", "system", "developer")
# Responses features that need what a local server has not got: refused rather than silently ignored
_REFUSED = {"background": "background responses are not supported", "conversation": "conversations are not "
            "supported; continue with previous_response_id", "prompt": "stored prompts are not supported"}


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise InvalidRequest(f"{where}: Input should be a valid string")
    return v


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise InvalidRequest(f"{where}: Input should be a valid object")
    return v


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    if "input" not in body:
        raise InvalidRequest("'input' is required")
    value = body["input"]
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or an array of items")
    return [_dict(item, f"input[{i}]") for i, item in enumerate(value)]


def _part_text(part: Any, at: str, kinds: tuple[str, ...]) -> str:
    kind = _dict(part, at).get("type")
    if kind in ("input_file", "input_audio"):
        raise InvalidRequest(f"{at}.type: {kind!r} {_UNREAD}")
    if kind not in kinds:
        raise InvalidRequest(f"{at}.type: must be one of {', '.join(repr(k) for k in kinds)}")
    return _str(part.get("refusal" if kind == "refusal" else "text"), f"{at}.text")


def _parts_text(content: Any, where: str, kinds: tuple[str, ...]) -> list[str]:
    """The texts of a message's content (a string, or parts of ``kinds``)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: Input should be a string or an array of content parts")
    return [_part_text(part, f"{where}[{j}]", kinds) for j, part in enumerate(content)]


def _input_parts(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A user's (or a function output's) content as chat content: ``input_text`` parts as text parts,
    ``input_image`` as ``image_url`` parts (llama-server's translation)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: Input should be a string or an array of content parts")
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if _dict(part, at).get("type") != "input_image":
            out.append({"type": "text", "text": _part_text(part, at, ("input_text", "input_image"))})
        elif part.get("image_url") is None:
            why = "file ids are not supported; give " if part.get("file_id") is not None else ""
            raise InvalidRequest(f"{at}.image_url: Field required ({why}a URL or a data: URL)")
        else:
            out.append({"type": "image_url", "image_url": {"url": _str(part["image_url"], f"{at}.image_url")}})
    return out


def _assistant(out: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message an assistant item belongs to: the previous one, or a new one (llama-server
    merges a reply's consecutive items: reasoning, message, function calls)."""
    if not out or out[-1]["role"] != "assistant":
        out.append({"role": "assistant", "content": ""})
    return out[-1]


def _messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    calls: dict[str, str] = {}  # call_id -> function name, of the function_call items so far
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidRequest(f"{where}.role: must be one of {', '.join(repr(r) for r in _ROLES)}")
            if "content" not in item:
                raise InvalidRequest(f"{where}.content: Field required")
            if role == "assistant":
                texts = _parts_text(item["content"], f"{where}.content", ("output_text", "input_text", "refusal"))
                _assistant(out)["content"] += "".join(texts)
            else:
                out.append({"role": role, "content": _input_parts(item["content"], f"{where}.content")})
        elif kind == "function_call":
            call_id = _str(item.get("call_id"), f"{where}.call_id")
            name = _str(item.get("name"), f"{where}.name")
            calls[call_id] = name
            _assistant(out).setdefault("tool_calls", []).append({"id": call_id, "type": "function", "function": {
                "name": name, "arguments": _str(item.get("arguments"), f"{where}.arguments")}})
        elif kind == "function_call_output":
            call_id = _str(item.get("call_id"), f"{where}.call_id")
            if call_id not in calls:
                raise InvalidRequest(f"{where}.call_id: no function_call item with call_id {call_id!r} before it")
            output = _input_parts(item.get("output"), f"{where}.output")
            # text only: one string, as before; with images, the parts (llama-server's form)
            if isinstance(output, list) and all(p["type"] == "text" for p in output):
                output = "".join(p["text"] for p in output)
            out.append({"role": "tool", "tool_call_id": call_id, "name": calls[call_id], "content": output})
        elif kind == "reasoning":
            content = item.get("content") or []
            if not isinstance(content, list):
                raise InvalidRequest(f"{where}.content: Input should be an array of reasoning_text parts")
            text = "".join(_parts_text(content, f"{where}.content", ("reasoning_text",)))
            message = _assistant(out)
            message["reasoning_content"] = message.get("reasoning_content", "") + text
        else:
            raise InvalidRequest(f"{where}.type: unsupported item type {kind!r}: expected 'message', "
                                 "'function_call', 'function_call_output' or 'reasoning'")
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array of objects")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if _dict(tool, where).get("type") != "function":
            raise InvalidRequest(f"{where}.type: only 'function' tools are supported, not {tool.get('type')!r}")
        fn = {"name": _str(tool.get("name"), f"{where}.name")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": _str(choice.get("name"), "tool_choice.name")}}
    raise InvalidRequest("'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}")


def _response_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` as the chat route's ``response_format``."""
    fmt = _dict(text, "text").get("format")
    if fmt is None:
        return None
    kind = _dict(fmt, "text.format").get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = _dict(fmt.get("schema"), "text.format.schema")
        spec = {"name": _str(fmt.get("name", "response"), "text.format.name"), "schema": schema}
        if fmt.get("strict") is not None:
            spec["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequest("text.format.type: must be 'text', 'json_object' or 'json_schema'")


def to_chat_body(body: Mapping[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAI chat body for a Responses body whose whole input (history included) is ``items``."""
    for key, why in _REFUSED.items():
        if body.get(key):
            raise InvalidRequest(f"'{key}': {why}")
    out: dict[str, Any] = {key: body[key] for key in _PASSED if key in body}
    instructions = body.get("instructions")
    system = [{"role": "system", "content": _str(instructions, "instructions")}] if instructions is not None else []
    out["messages"] = system + _messages(items)
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    limit = body.get("max_output_tokens")
    if limit is not None:
        out["max_tokens"] = read_int("max_output_tokens", limit, 1, INT32_MAX)
    if body.get("text") is not None:
        response_format = _response_format(body["text"])
        if response_format is not None:
            out["response_format"] = response_format
    if body.get("reasoning") is not None:
        effort = _dict(body["reasoning"], "reasoning").get("effort")
        if effort is not None:
            out["reasoning_effort"] = _str(effort, "reasoning.effort")
    for key in ("stream", "store"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise InvalidRequest(f"'{key}' must be a boolean")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise InvalidRequest("'metadata' must be an object of strings")
    return out


@dataclass(frozen=True)
class ItemPage:
    limit: int = 20
    order: str = "desc"
    after: str | None = None


def parse_item_page(query: Mapping[str, str]) -> ItemPage:
    """The input-items list's query: ``limit`` 1..100 (20), ``order`` ``asc`` or ``desc`` (the default, as
    OpenAI's), ``after`` an item id."""
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest(f"'limit' must be an integer from 1 to 100, got {query.get('limit')!r}")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"'order' must be 'asc' or 'desc', got {order!r}")
    return ItemPage(limit, order, query.get("after"))


def item_page(items: list[dict[str, Any]], page: ItemPage) -> dict[str, Any]:
    """One page of a response's input items, as OpenAI's list object."""
    ordered = items if page.order == "asc" else items[::-1]
    if page.after is not None:
        ids = [item["id"] for item in ordered]
        if page.after not in ids:
            raise InvalidRequest(f"'after': no input item with id '{page.after}' in this response")
        ordered = ordered[ids.index(page.after) + 1 :]
    data = ordered[: page.limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > page.limit}


def _echo(body: Mapping[str, Any], chat: Mapping[str, Any]) -> dict[str, Any]:
    """The request fields a Responses object repeats, as they took effect."""
    return {
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "parallel_tool_calls": bool(chat.get("parallel_tool_calls")),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": chat.get("reasoning_effort"), "summary": None},
        "store": optional(body, "store", True), "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "top_p": body.get("top_p"), "error": None,
    }


def register(app: Klein, ctx: ApiContext) -> None:
    store = ResponseStore(ctx.config.responses_store_size)

    def stored(rid: str) -> StoredResponse:
        entry = store.get(rid)
        if entry is None:
            raise NotFound(f"Response with id '{rid}' not found.")
        return entry

    def history(body: Mapping[str, Any]) -> list[dict[str, Any]]:
        previous = body.get("previous_response_id")
        if previous is None:
            return []
        return list(stored(_str(previous, "previous_response_id")).conversation)

    def translate(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        items = [*history(body), *input_items(body)]
        return items, to_chat_body(body, items)

    @app.route("/v1/responses/<string:response_id>", methods=["GET"])
    @app.route("/responses/<string:response_id>", methods=["GET"])
    @handler
    async def retrieve(request: Request, response_id: str) -> Any:
        return send_json(request, stored(response_id).response)

    @app.route("/v1/responses/<string:response_id>", methods=["DELETE"])
    @app.route("/responses/<string:response_id>", methods=["DELETE"])
    @handler
    async def delete(request: Request, response_id: str) -> Any:
        if not store.delete(response_id):
            raise NotFound(f"Response with id '{response_id}' not found.")
        return send_json(request, {"id": response_id, "object": "response", "deleted": True})

    @app.route("/v1/responses/<string:response_id>/input_items", methods=["GET"])
    @app.route("/responses/<string:response_id>/input_items", methods=["GET"])
    @handler
    async def list_input_items(request: Request, response_id: str) -> Any:
        query = {name: query_param(request, name) for name in ("limit", "order", "after")}
        page = parse_item_page({k: v for k, v in query.items() if v is not None})
        return send_json(request, item_page(list(stored(response_id).input), page))

    @app.route("/v1/responses/input_tokens", methods=["POST"])
    @app.route("/responses/input_tokens", methods=["POST"])
    @handler
    async def input_tokens(request: Request) -> Any:
        """The prompt tokens of the request: what the response's usage.input_tokens would say."""
        loaded = ctx.require_generation()
        chat = translate(read_json(request))[1]
        n_tokens = await count_chat_tokens(ctx, loaded, chat)
        return send_json(request, {"object": "response.input_tokens", "input_tokens": n_tokens})

    @app.route("/v1/responses", methods=["POST"])
    @app.route("/responses", methods=["POST"])
    @handler
    async def responses(request: Request) -> Any:
        loaded = ctx.require_generation()
        body = read_json(request)
        items, chat = translate(body)
        prepared = await prepare_chat(ctx, loaded, chat)
        rid, created = response_id(), int(time.time())
        head = {"id": rid, "object": "response", "created_at": created, "model": ctx.model_alias,
                **_echo(body, chat)}

        def keep(response: dict[str, Any]) -> None:
            if optional(body, "store", True):
                store.put(rid, StoredResponse(response, tuple(with_ids(input_items(body))),
                                              (*items, *response["output"])))

        if prepared.req.params.stream:
            return await _stream(request, ctx, prepared, head, keep)
        try:
            r = (await run_tasks(ctx, request, prepared.prompts, prepared.req.params))[0]
        except CancelledError:
            return b""
        output = OutputBuilder()
        output.feed(MessageStream(prepared.syntax).finish(r.content)[1])
        output.close()
        response = {**head, **finish_fields(r), "output": output.output, "usage": usage_json(r)}
        keep(response)
        return send_json(request, response)


async def _stream(
    request: Request, ctx: ApiContext, prepared: PreparedChat, head: dict[str, Any],
    keep: Callable[[dict[str, Any]], None],
) -> bytes:
    """Responses events, each as ``event: TYPE`` + ``data: {...}``: ``response.created`` and
    ``response.in_progress`` with the first result (headers, and so an error's status, wait for it, as
    llama-server), the items' events, then ``response.completed`` (or ``response.incomplete``) with the
    whole response; an error after the start is an ``error`` event. ``timings_per_token``'s timings and
    ``return_progress``'s ``prompt_progress`` ride on the last event of each result, as llama-server's."""
    sse = SSEStream(request, prepared.req.params.sse_ping_interval)
    text, output = MessageStream(prepared.syntax), OutputBuilder()

    def send(events: list[Event]) -> None:
        for name, data in events:
            sse.send_raw(b"event: " + name.encode() + b"\ndata: " + json_bytes(data) + b"\n\n")

    pending = {**head, "status": "in_progress", "output": [], "usage": None}

    def start() -> list[Event]:
        # by the builder's count, not sse.started: a ':' keep-alive comment may have started the response
        if output.sequence_number == 0:
            return [output.event("response.created", response=pending),
                    output.event("response.in_progress", response=pending)]
        return []

    def partial(index: int, r: PartialResult) -> None:
        events = start()
        if r.progress is None:
            events += output.feed(text.feed(r.content))
        elif not events:  # prompt progress comes as another response.in_progress, as llama-server's
            events.append(output.event("response.in_progress", response=pending))
        if events:  # timings_per_token, return_progress: on the last event, as llama-server puts them
            events[-1][1].update(partial_extras(r))
        send(events)

    def final(index: int, r: FinalResult) -> None:
        send([*start(), *output.feed(text.finish(r.content)[1]), *output.close()])
        done = {**head, **finish_fields(r), "output": output.output, "usage": usage_json(r)}
        keep(done)
        kind = "response.completed" if done["status"] == "completed" else "response.incomplete"
        send([output.event(kind, response=done, timings=r.timings.to_json())])  # timings: llama-server's too

    try:
        await run_tasks(ctx, request, prepared.prompts, prepared.req.params, on_partial=partial, on_final=final)
    except CancelledError:
        return b""
    except REPORTED as err:
        if not sse.started:
            sse.send_error(err)  # a plain JSON error with its status
        else:
            send([output.error(answer(err))])
    return b""
