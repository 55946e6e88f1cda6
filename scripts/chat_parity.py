#!/usr/bin/env python3
"""Compare llamatwist's chat handling with the pinned llama-server's, template by template.

For each of llama.cpp's ``models/templates`` (or those whose name contains an argument), both servers start
on the default model with ``--jinja --chat-template-file T`` and get the same requests:

- ``/apply-template`` for ten conversations (plain, system, history, tools, a tool call and its result, text
  parts, reasoning in history, thinking off, an assistant prefill, a developer message): the prompts must
  be equal, and a difference is printed as a unified diff;
- three greedy chat completions without prompt caching (tools with ``tool_choice`` auto and required, no
  tools): the parsed message (content, reasoning_content, tool calls, finish reason) is compared.

The completions of a tiny model can part by numerical noise alone when the prompts' KV cells sit elsewhere
in the cache, and llamatwist forces a ``required`` call where this llama-server does not (README, "Tools and
reasoning"), so read those rows with care; the template rows are exact. Prints one block per difference and
a table of templates per kind of difference at the end::

    python scripts/chat_parity.py                 # all pinned templates (about 30 minutes on 2 cores)
    python scripts/chat_parity.py Qwen3 GLM-4.6   # those whose file name contains a word

Needs the package installed and the reference llama-server (``bench.vs_llama_server.reference_server``
builds it once in the native cache).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import resolve_model
from bench.loadgen import Server, spawn_server
from bench.vs_llama_server import reference_server

TEMPLATES = REPO / "third_party" / "llama.cpp" / "models" / "templates"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["location"]}}}]  # fmt: skip
USER = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"role": "assistant", "content": None, "tool_calls": [{
    "id": "abc123XYZ", "type": "function",
    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]}  # fmt: skip
RESULT = {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": "22 degrees"}
CONVERSATIONS: dict[str, dict[str, Any]] = {
    "plain": {"messages": [USER]},
    "system": {"messages": [{"role": "system", "content": "Be brief."}, USER]},
    "history": {"messages": [USER, {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Rome?"}]},
    "tools": {"messages": [USER], "tools": TOOLS},
    "tool-history": {"messages": [USER, CALL, RESULT], "tools": TOOLS},
    "parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                        {"type": "text", "text": "there"}]}]},
    "reasoning": {"messages": [USER, {"role": "assistant", "content": "Sunny.", "reasoning_content": "Hm."},
                               {"role": "user", "content": "Rome?"}]},
    "no-thinking": {"messages": [USER], "chat_template_kwargs": {"enable_thinking": False}},
    "prefill": {"messages": [USER, {"role": "assistant", "content": "The weather"}]},
    "developer": {"messages": [{"role": "developer", "content": "Be brief."}, USER]},
}
GREEDY = {"temperature": 0, "cache_prompt": False}
COMPLETIONS: dict[str, dict[str, Any]] = {
    "tools-auto": {"messages": [USER], "tools": TOOLS, "max_tokens": 48, **GREEDY},
    "tools-required": {"messages": [USER], "tools": TOOLS, "tool_choice": "required", "max_tokens": 96, **GREEDY},
    "no-tools": {"messages": [USER], "max_tokens": 24, **GREEDY},
}


def post(server: Server, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = requests.post(server.url + path, json=body, timeout=300)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text[:300]


def message(answer: tuple[int, Any]) -> tuple[int, Any]:
    """The parsed parts of a chat completion (tool arguments as JSON values where they parse)."""
    status, body = answer
    if status != 200 or not isinstance(body, dict):
        return answer
    choice = body["choices"][0]
    m = choice["message"]

    def arguments(text: str) -> Any:
        try:
            return json.loads(text) if text else None
        except ValueError:
            return "not JSON: " + text

    calls = [(c["function"]["name"], arguments(c["function"]["arguments"])) for c in m.get("tool_calls") or []]
    return status, {"content": m.get("content"), "reasoning_content": m.get("reasoning_content"), "tool_calls": calls,
                    "finish_reason": choice["finish_reason"]}


def compare(template: Path, model: str, kinds: dict[str, list[str]]) -> None:
    extra = ["--jinja", "--chat-template-file", str(template)]
    servers = {}
    try:
        servers["llama-server"] = spawn_server(model, 1, threads=2, n_ctx=4096, extra=extra,
                                               program=[str(reference_server())])
        servers["llamatwist"] = spawn_server(model, 1, threads=2, n_ctx=4096, extra=extra)
    except RuntimeError as exc:
        print(f"== {template.name}: a server did not start\n{str(exc)[-600:]}")
        kinds["start"].append(template.stem)
        for s in servers.values():
            s.stop()
        return
    try:
        for kind, body in CONVERSATIONS.items():
            theirs, ours = (post(s, "/apply-template", body) for s in servers.values())
            if theirs == ours:
                continue
            kinds[f"template {kind}"].append(template.stem)
            if theirs[0] == ours[0] == 200:
                diff = difflib.unified_diff(theirs[1]["prompt"].splitlines(True), ours[1]["prompt"].splitlines(True),
                                            "llama-server", "llamatwist", n=1)
                print(f"== {template.name} template {kind}\n{''.join(diff)[:2000]}")
            else:
                print(f"== {template.name} template {kind}\n  llama-server {theirs}\n  llamatwist   {ours}")
        for kind, body in COMPLETIONS.items():
            theirs, ours = (message(post(s, "/v1/chat/completions", body)) for s in servers.values())
            if theirs != ours:
                kinds[f"completion {kind}"].append(template.stem)
                print(f"== {template.name} completion {kind}\n  llama-server {json.dumps(theirs)[:600]}\n"
                      f"  llamatwist   {json.dumps(ours)[:600]}")
    finally:
        for s in servers.values():
            s.stop()
    print(f"-- {template.name} compared", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("words", nargs="*", help="compare only templates whose file name contains one of these")
    ap.add_argument("-m", "--model", help="GGUF path (default: the project's default model)")
    args = ap.parse_args()
    templates = sorted(TEMPLATES.glob("*.jinja"))
    if not templates:
        sys.exit(f"no templates in {TEMPLATES}: build or place the llama.cpp source first (build_native.py)")
    if args.words:
        templates = [t for t in templates if any(w in t.name for w in args.words)]
    model = resolve_model(args.model)
    kinds: dict[str, list[str]] = defaultdict(list)
    for template in templates:
        compare(template, model, kinds)
    print(f"\n{len(templates)} templates compared; templates per difference:")
    for kind in sorted(kinds):
        print(f"  {kind} ({len(kinds[kind])}): {' '.join(kinds[kind])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
