# -*- test-case-name: tests.test_openapi -*-
"""``GET /openapi.json``: an OpenAPI 3.1 description of every route.

The generation fields every completion-like route takes come from `params.FIELDS` (the one parameter
table), so a field added there is documented with no second edit. What is listed here is only what the
table cannot know: each route's own body fields, its answer, and which family's error shape it uses.
Request bodies stay open (``additionalProperties``) as the server is: llama-server's clients send fields
of newer servers, and an unknown field is never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.web.server import Request

from llamatwist import __version__
from llamatwist.api.http import ApiContext, handler, send_json
from llamatwist.api.params import FIELDS, field_schema

__all__ = ["OPERATIONS", "Operation", "document", "register", "registered_operations"]

_ANY: dict[str, Any] = {}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_OBJ = {"type": "object"}
_TOKENS = {"type": "array", "items": _INT}
# llama-server's prompt shapes: a string, token ids, a mix, an object, or a list of them (several prompts)
_PROMPT = {"oneOf": [_STR, {"type": "array"}, _OBJ]}
_MESSAGES = {
    "type": "array",
    "items": {"type": "object", "properties": {"role": _STR, "content": _ANY}, "required": ["role"]},
}


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    body: str | None = None  # a request schema of `_BODIES`
    # json | text | html | javascript | binary | sse (json, or an event stream with stream: true) | ndjson (json, or
    # newline-delimited JSON objects unless stream: false)
    answer: str = "json"
    errors: str = "llama"  # which error shape: llama (OpenAI-like) | anthropic | ollama
    query: tuple[tuple[str, bool], ...] = ()  # (name, required) string query parameters
    public: bool = False  # served without an API key
    form: bool = False  # the body is a multipart form (file uploads), not JSON


def _body(props: Mapping[str, Any], required: tuple[str, ...] = (), generation: bool = False) -> dict[str, Any]:
    own: dict[str, Any] = {"type": "object", "properties": dict(props), "additionalProperties": True}
    if required:
        own["required"] = list(required)
    return {"allOf": [{"$ref": "#/components/schemas/GenerationFields"}, own]} if generation else own


_CONSTRAINT = {
    "grammar": _STR, "json_schema": _OBJ, "response_format": _OBJ, "lora": {"type": "array"},
}
_CHAT = {
    "messages": _MESSAGES, "model": _STR, "tools": {"type": "array"}, "tool_choice": _ANY,
    "parallel_tool_calls": _BOOL, "chat_template_kwargs": _OBJ, "reasoning_format": _STR,
    "add_generation_prompt": _BOOL, "continue_final_message": _BOOL, "stream_options": _OBJ, **_CONSTRAINT,
}

_BLOCK = {"type": "object", "properties": {"type": {"enum": ["text", "tool_use", "tool_result", "thinking"]}},
          "required": ["type"]}
_ANTHROPIC = {
    "model": _STR, "max_tokens": {"type": "integer", "minimum": 1},
    "messages": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["role", "content"], "properties": {
            "role": {"enum": ["user", "assistant"]},
            "content": {"oneOf": [_STR, {"type": "array", "items": _BLOCK}]}}}},
    "system": {"oneOf": [_STR, {"type": "array", "items": _BLOCK}]}, "tools": {"type": "array"},
    "tool_choice": {"type": "object", "properties": {"type": {"enum": ["auto", "any", "tool", "none"]}}},
    "stop_sequences": {"type": "array", "items": _STR}, "temperature": {"type": "number"},
    "top_p": {"type": "number"}, "top_k": _INT, "metadata": _OBJ, "thinking": _OBJ, "stream": _BOOL,
}

# seconds, or a Go duration ("5m", "1h30m", "-1")
_KEEP_ALIVE = {"oneOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?(\d+(\.\d*)?(ns|us|ms|s|m|h)?)+$"}]}
_OLLAMA_GEN = {"model": _STR, "options": _OBJ, "format": {"oneOf": [{"enum": ["", "json"]}, _OBJ]},
               "stream": _BOOL, "think": {"oneOf": [_BOOL, {"enum": ["low", "medium", "high"]}]},
               "logprobs": _BOOL, "top_logprobs": _INT, "keep_alive": _KEEP_ALIVE}
_OLLAMA_MESSAGES = {"type": "array", "items": {"type": "object", "required": ["role"], "properties": {
    "role": _STR, "content": _STR, "thinking": _STR, "images": {"type": "array", "items": _STR},
    "tool_calls": {"type": "array"}, "tool_name": _STR}}}

_RESP_ITEM = {"type": "object", "properties": {
    "type": {"enum": ["message", "function_call", "function_call_output", "reasoning"]},
    "role": {"enum": ["user", "assistant", "system", "developer"]}}}
_RESPONSES = {
    "model": _STR, "input": {"oneOf": [_STR, {"type": "array", "items": _RESP_ITEM}]}, "instructions": _STR,
    "tools": {"type": "array", "items": {"type": "object", "properties": {"type": {"const": "function"},
                                                                          "name": _STR}}},
    "tool_choice": {"oneOf": [{"enum": ["auto", "none", "required"]}, _OBJ]},
    "max_output_tokens": {"type": "integer", "minimum": 1}, "temperature": {"type": "number"},
    "top_p": {"type": "number"}, "text": _OBJ, "reasoning": _OBJ, "stream": _BOOL, "store": _BOOL,
    "previous_response_id": _STR, "metadata": _OBJ, "parallel_tool_calls": _BOOL,
}

_BODIES: dict[str, dict[str, Any]] = {
    "Completion": _body({"prompt": _PROMPT, **_CONSTRAINT}, ("prompt",), generation=True),
    "OpenAICompletion": _body({"prompt": _PROMPT, "model": _STR, "echo": _BOOL, "best_of": _INT, "suffix": _STR,
                               **_CONSTRAINT}, ("prompt",),
                              generation=True),
    "Infill": _body({"input_prefix": _STR, "input_suffix": _STR, "input_extra": {"type": "array"},
                     "prompt": _STR}, generation=True),
    "ChatCompletion": _body({**_CHAT, "prediction": {"type": "object"}}, ("messages",), generation=True),
    "ApplyTemplate": _body(_CHAT, ("messages",)),
    "Tokenize": _body({"content": _PROMPT, "add_special": _BOOL, "parse_special": _BOOL, "with_pieces": _BOOL},
                      ("content",)),
    "Detokenize": _body({"tokens": _TOKENS}, ("tokens",)),
    "Embedding": _body({"input": _PROMPT, "content": _PROMPT, "embd_normalize": _INT, "encoding_format": _STR,
                        "dimensions": _INT, "model": _STR}),
    "Rerank": _body({"query": _STR, "documents": {"type": "array", "items": _STR}, "top_n": _INT,
                     "return_text": _BOOL}, ("query", "documents")),
    "Props": _body({}),
    "SlotFile": _body({"filename": _STR}),
    "AnthropicMessages": _body(_ANTHROPIC, ("model", "max_tokens", "messages")),
    "AnthropicCountTokens": _body(_ANTHROPIC, ("model", "messages")),
    "Responses": _body(_RESPONSES, ("input",)),
    "StreamLookup": _body({"conversation_ids": {"type": "array", "items": _STR}}, ("conversation_ids",)),
    "ToolCall": _body({"tool": _STR, "params": _OBJ, "stream": _BOOL}, ("tool",)),
    "OllamaChat": _body({**_OLLAMA_GEN, "messages": _OLLAMA_MESSAGES, "tools": {"type": "array"}}, ("model",)),
    "OllamaGenerate": _body({**_OLLAMA_GEN, "prompt": _STR, "suffix": _STR, "system": _STR, "raw": _BOOL,
                             "images": {"type": "array", "items": _STR}, "context": _TOKENS}, ("model",)),
    "OllamaEmbed": _body({"model": _STR, "input": {"oneOf": [_STR, {"type": "array", "items": _STR}]},
                          "dimensions": _INT, "truncate": _BOOL, "options": _OBJ}, ("model", "input")),
    "OllamaEmbeddings": _body({"model": _STR, "prompt": _STR}, ("model", "prompt")),
    "OllamaShow": _body({"model": _STR}, ("model",)),
    "OllamaPull": _body({"model": _STR, "name": _STR, "insecure": _BOOL, "stream": _BOOL}),
    "OllamaModel": _body({"model": _STR}, ("model",)),
    "ChatControl": _body({"id": _STR, "action": {"enum": ["reasoning_end"]}}, ("id", "action")),
    "Transcription": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream"}, "model": _STR, "prompt": _STR,
        "language": _STR, "response_format": {"enum": ["json"]}, "stream": {"enum": ["true", "false"]},
        "temperature": _STR, "max_tokens": _STR}},
    "LoraScales": {"type": "array", "items": {
        "type": "object", "properties": {"id": _INT, "scale": {"type": "number"}}, "required": ["id", "scale"]}},
}

_T_GEN, _T_OAI, _T_EMB, _T_SRV, _T_UI = "generation", "openai", "embeddings", "server", "web ui"
_T_ANT, _T_AUD, _T_OLL = "anthropic", "audio", "ollama"

# (method, path) -> what it does. A test checks this against the routes the app registers, both ways.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("get", "/health"): Operation("Health (503 while loading)", _T_SRV, public=True),
    ("get", "/v1/health"): Operation("Health, OpenAI-prefixed alias", _T_SRV, public=True),
    ("get", "/props"): Operation("Server properties and default generation settings", _T_SRV),
    ("post", "/props"): Operation("Change global properties (needs --props)", _T_SRV, "Props"),
    ("get", "/models"): Operation("The loaded model", _T_SRV),
    ("get", "/v1/models"): Operation("The loaded model (OpenAI list)", _T_OAI),
    ("get", "/v1/models/{model_id}"): Operation("The model, by its name or an alias (OpenAI's retrieve)", _T_OAI),
    ("get", "/models/{model_id}"): Operation("The model, by its name or an alias (alias)", _T_OAI),
    ("get", "/slots"): Operation("Slot states (needs --slots)", _T_SRV),
    ("post", "/slots/{id_slot}"): Operation("Save, restore or erase a slot's KV cache (needs --slot-save-path)",
                                            _T_SRV, "SlotFile", query=(("action", True),)),
    ("get", "/metrics"): Operation("Prometheus metrics (needs --metrics)", _T_SRV, answer="text"),
    ("get", "/openapi.json"): Operation("This document", _T_SRV),
    ("get", "/lora-adapters"): Operation("Loaded LoRA adapters and their server-wide scales", _T_SRV),
    ("post", "/lora-adapters"): Operation("Set the server-wide LoRA scales", _T_SRV, "LoraScales"),
    ("post", "/completion"): Operation("Native completion", _T_GEN, "Completion", "sse"),
    ("post", "/completions"): Operation("Native completion (alias)", _T_GEN, "Completion", "sse"),
    ("post", "/infill"): Operation("Fill in the middle (needs FIM tokens)", _T_GEN, "Infill", "sse"),
    ("post", "/tokenize"): Operation("Tokenize text", _T_GEN, "Tokenize"),
    ("post", "/detokenize"): Operation("Token ids to text", _T_GEN, "Detokenize"),
    ("post", "/apply-template"): Operation("Render a chat with the model's template", _T_GEN, "ApplyTemplate"),
    ("post", "/v1/completions"): Operation("OpenAI text completion", _T_OAI, "OpenAICompletion", "sse"),
    ("post", "/v1/chat/completions"): Operation("OpenAI chat completion", _T_OAI, "ChatCompletion", "sse"),
    ("post", "/chat/completions"): Operation("OpenAI chat completion (alias)", _T_OAI, "ChatCompletion", "sse"),
    ("post", "/v1/chat/completions/control"): Operation("End the thinking of a running chat completion that asked "
                                                        "for reasoning_control", _T_OAI, "ChatControl"),
    ("post", "/v1/chat/completions/input_tokens"): Operation("Count a chat request's prompt tokens", _T_OAI,
                                                             "ChatCompletion"),
    ("post", "/chat/completions/input_tokens"): Operation("Count a chat request's prompt tokens (alias)", _T_OAI,
                                                          "ChatCompletion"),
    ("post", "/embedding"): Operation("Native embeddings (needs --embeddings)", _T_EMB, "Embedding"),
    ("post", "/embeddings"): Operation("Native embeddings (alias)", _T_EMB, "Embedding"),
    ("post", "/v1/embeddings"): Operation("OpenAI embeddings", _T_EMB, "Embedding"),
    ("post", "/rerank"): Operation("Rerank documents (needs --reranking)", _T_EMB, "Rerank"),
    ("post", "/reranking"): Operation("Rerank (alias)", _T_EMB, "Rerank"),
    ("post", "/v1/rerank"): Operation("Rerank (alias)", _T_EMB, "Rerank"),
    ("post", "/v1/reranking"): Operation("Rerank (alias)", _T_EMB, "Rerank"),
    ("post", "/v1/messages"): Operation("Anthropic Messages", _T_ANT, "AnthropicMessages", "sse", "anthropic"),
    ("post", "/v1/messages/count_tokens"): Operation("Count an Anthropic request's prompt tokens", _T_ANT,
                                                     "AnthropicCountTokens", errors="anthropic"),
    ("post", "/api/chat"): Operation("Ollama chat (streams NDJSON unless stream is false)", _T_OLL, "OllamaChat",
                                     "ndjson", "ollama"),
    ("post", "/api/generate"): Operation("Ollama generate (streams NDJSON unless stream is false)", _T_OLL,
                                         "OllamaGenerate", "ndjson", "ollama"),
    ("post", "/api/embed"): Operation("Ollama embeddings (needs --embeddings)", _T_EMB, "OllamaEmbed",
                                      errors="ollama"),
    ("post", "/api/embeddings"): Operation("Ollama embeddings, legacy form", _T_EMB, "OllamaEmbeddings",
                                           errors="ollama"),
    ("post", "/api/show"): Operation("Ollama: the model's details, template and capabilities", _T_OLL,
                                     "OllamaShow", errors="ollama"),
    ("get", "/api/tags"): Operation("Ollama: the models served", _T_OLL, errors="ollama"),
    ("get", "/api/ps"): Operation("Ollama: the models loaded", _T_OLL, errors="ollama"),
    ("get", "/api/version"): Operation("Ollama: the API version followed", _T_OLL, errors="ollama"),
    ("post", "/api/pull"): Operation("Ollama: pull a model (a router downloads it into the Hugging Face cache; a "
                                     "server of one model has it)", _T_OLL, "OllamaPull", "ndjson", "ollama"),
    ("delete", "/api/delete"): Operation("Ollama: delete a model (a router's cached model; refused with 403 on a "
                                         "server of one model)", _T_OLL, "OllamaModel", errors="ollama"),
    ("post", "/api/create"): Operation("Ollama: create a model (refused: 403)", _T_OLL, errors="ollama"),
    ("post", "/api/copy"): Operation("Ollama: copy a model (refused: 403)", _T_OLL, errors="ollama"),
    ("post", "/api/push"): Operation("Ollama: push a model (refused: 403)", _T_OLL, errors="ollama"),
    ("post", "/api/blobs/{digest}"): Operation("Ollama: upload a model file (refused: 403; HEAD too)", _T_OLL, errors="ollama"),
    ("post", "/v1/responses"): Operation("OpenAI Responses", _T_OAI, "Responses", "sse"),
    ("post", "/responses"): Operation("OpenAI Responses (alias)", _T_OAI, "Responses", "sse"),
    ("post", "/v1/responses/input_tokens"): Operation("Count a Responses request's input tokens", _T_OAI,
                                                      "Responses"),
    ("post", "/responses/input_tokens"): Operation("Count a Responses request's input tokens (alias)", _T_OAI,
                                                   "Responses"),
    ("get", "/v1/responses/{response_id}"): Operation("A stored response", _T_OAI),
    ("get", "/responses/{response_id}"): Operation("A stored response (alias)", _T_OAI),
    ("delete", "/v1/responses/{response_id}"): Operation("Delete a stored response", _T_OAI),
    ("delete", "/responses/{response_id}"): Operation("Delete a stored response (alias)", _T_OAI),
    ("get", "/v1/responses/{response_id}/input_items"): Operation(
        "A stored response's input items", _T_OAI, query=(("limit", False), ("order", False), ("after", False))),
    ("get", "/responses/{response_id}/input_items"): Operation(
        "A stored response's input items (alias)", _T_OAI,
        query=(("limit", False), ("order", False), ("after", False))),
    ("post", "/v1/audio/transcriptions"): Operation("OpenAI audio transcription (needs an audio projector)", _T_AUD,
                                                    "Transcription", "sse", form=True),
    ("post", "/audio/transcriptions"): Operation("OpenAI audio transcription (alias)", _T_AUD, "Transcription",
                                                 "sse", form=True),
    ("get", "/v1/stream"): Operation("Reattach to a resumable stream (one started with X-Conversation-Id)", _T_GEN,
                                     answer="sse", query=(("conv_id", True), ("from", False))),
    ("delete", "/v1/stream"): Operation("Stop a resumable stream", _T_GEN, query=(("conv_id", True),)),
    ("post", "/v1/streams/lookup"): Operation("Which of these conversations have a resumable stream", _T_GEN,
                                              "StreamLookup"),
    ("get", "/tools"): Operation("The server tools (--tools) and the MCP servers' tools, with their definitions "
                                 "(403 feature_disabled without them)", _T_SRV),
    ("post", "/tools"): Operation("Call a server tool; headers x-tool-cwd, x-tool-runtime, x-resp-type (403 "
                                  "feature_disabled without --tools or MCP servers)", _T_SRV, "ToolCall", "sse"),
    ("get", "/cors-proxy"): Operation("The UI's MCP proxy (--ui-mcp-proxy; 403 feature_disabled without it): "
                                      "x-llama-server-proxy-header-* headers are forwarded", _T_SRV,
                                      answer="text", query=(("url", True),)),
    ("post", "/cors-proxy"): Operation("The UI's MCP proxy, POST", _T_SRV, answer="text", query=(("url", True),)),
    ("get", "/"): Operation("The web UI", _T_UI, answer="html", public=True),
    ("get", "/index.html"): Operation("The web UI", _T_UI, answer="html", public=True),
    ("get", "/completion.js"): Operation("llama-server's completion.js helper", _T_UI, answer="javascript",
                                         public=True),
    ("get", "/pdf.min.mjs"): Operation("pdf.js, which the web UI loads to read a PDF attachment's text", _T_UI,
                                       answer="javascript", public=True),
    ("get", "/pdf.worker.min.mjs"): Operation("pdf.js's worker (the web UI's PDF attachments)", _T_UI,
                                              answer="javascript", public=True),
    ("get", "/mcp.min.mjs"): Operation("The MCP client the web UI loads to call MCP servers' tools", _T_UI,
                                       answer="javascript", public=True),
    ("get", "/pdfjs/{kind}/{name}"): Operation("pdf.js's data files, fetched for a PDF that needs them: cmaps/*.bcmap "
                                               "(CJK text), wasm/*.wasm (JBIG2, JPEG 2000, colour), iccs/*.icc",
                                               _T_UI, answer="binary", public=True),
    ("get", "/sw.js"): Operation("A service worker that removes itself: a browser that ran llama-server's web UI here "
                                 "drops that UI's cached copy", _T_UI, answer="javascript", public=True),
    ("get", "/mermaid.min.js"): Operation("Mermaid, which the web UI loads to draw mermaid diagrams in replies", _T_UI,
                                          answer="javascript", public=True),
}

_MEDIA = {"text": "text/plain", "html": "text/html", "javascript": "text/javascript",
          "binary": "application/octet-stream"}
_ERROR_STATUSES = ("400", "401", "403", "404", "500", "501", "503")


def _responses(op: Operation) -> dict[str, Any]:
    if op.answer in _MEDIA:
        ok = {"description": "OK", "content": {_MEDIA[op.answer]: {"schema": _STR}}}
    else:
        content: dict[str, Any] = {"application/json": {"schema": _ANY}}
        if op.answer == "sse":
            content["text/event-stream"] = {"schema": _STR}
        elif op.answer == "ndjson":
            content["application/x-ndjson"] = {"schema": _STR}
        ok = {"description": "OK", "content": content}
    ref = {"$ref": f"#/components/responses/{_ERRORS[op.errors]}"}
    return {"200": ok, **{status: ref for status in _ERROR_STATUSES}}


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('-', '_') or 'root'}"
        .replace("{", "").replace("}", "").replace(".", "_"),
        "responses": _responses(op),
    }
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 0} if name == "id_slot" else _STR}
        for name in _path_params(path)
    ]
    params += [{"name": n, "in": "query", "required": req, "schema": _STR} for n, req in op.query]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data" if op.form else "application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.body}"}}},
        }
    if op.public:
        out["security"] = []
    return out


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]


def _generation_fields() -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in FIELDS:
        for i, name in enumerate(f.names):
            schema = dict(field_schema(f))
            if i:
                schema["description"] = f"alias of {f.names[0]}" + (
                    f"; {schema['description']}" if "description" in schema else "")
            props[name] = schema
    return {"type": "object", "properties": props, "additionalProperties": True}


def _error_schema() -> dict[str, Any]:
    inner = {"type": "object", "properties": {"code": _INT, "message": _STR, "type": _STR},
             "required": ["code", "message", "type"]}
    return {"type": "object", "properties": {"error": inner}, "required": ["error"]}


def _anthropic_error_schema() -> dict[str, Any]:
    inner = {"type": "object", "properties": {"type": _STR, "message": _STR}, "required": ["type", "message"]}
    return {"type": "object", "properties": {"type": {"const": "error"}, "error": inner},
            "required": ["type", "error"]}


def _ollama_error_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"error": _STR}, "required": ["error"]}


_ERRORS = {"llama": "Error", "anthropic": "AnthropicError", "ollama": "OllamaError"}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        paths.setdefault(path, {})[method] = _operation(method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llamatwist",
            "version": __version__,
            "description": "llama.cpp's llama-server REST API, served by llamatwist.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "GenerationFields": _generation_fields(),
                "Error": _error_schema(),
                "AnthropicError": _anthropic_error_schema(),
                "OllamaError": _ollama_error_schema(),
                **_BODIES,
            },
            "responses": {
                "Error": {"description": "An error in llama-server's shape",
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "AnthropicError": {"description": "An error in Anthropic's shape", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/AnthropicError"}}}},
                "OllamaError": {"description": "An error in Ollama's shape", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/OllamaError"}}}},
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "--api-key / --api-key-file"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


def registered_operations(app: Klein) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route ``app`` serves; HEAD and OPTIONS answer with their GET."""
    out = set()
    for rule in app.url_map.iter_rules():
        path = rule.rule
        for arg in rule.arguments:
            for conv in ("int:", "string:", "path:", ""):
                path = path.replace(f"<{conv}{arg}>", "{" + arg + "}")
        out |= {(m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return out


def register(app: Klein, ctx: ApiContext) -> None:
    doc = document()

    @app.route("/openapi.json", methods=["GET"])
    @handler
    async def openapi(request: Request) -> Any:
        return send_json(request, doc)
