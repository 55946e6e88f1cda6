"""Message rewrites llama.cpp applies for one format before its template renders them (``common/chat.cpp``'s
``workaround::`` functions keyed to a format's handler), named in the format table
(``toolcalls.formats.Family.adapt_messages``); and the patches its template analysis applies to the thinking
markers it finds in some templates (``common/chat-diff-analyzer.cpp``)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["gemma4_model_turns", "marker_patches", "ministral3_blocks", "reasoning_as_thinking"]

Messages = list[dict[str, Any]]


def gemma4_model_turns(source: str, messages: Messages) -> Messages:
    """The older Gemma 4 templates read a call's results from the assistant message's ``tool_responses``, not
    from ``role: tool`` messages (llama.cpp's convert_tool_responses_gemma4): an assistant turn with calls, the
    results after it and a final answer without calls become one model turn. The newer template (OpenAI Chat
    Completions messages) takes them as they are."""
    if "{#- OpenAI Chat Completions:" in source:
        return messages
    out: Messages = []
    i = 0
    while i < len(messages):
        msg = messages[i]
        i += 1
        calls = msg.get("tool_calls")
        if msg.get("role") != "assistant" or not isinstance(calls, list) or not calls:
            out.append(msg)
            continue
        turn: dict[str, Any] = {"role": "assistant", "tool_calls": list(calls)}
        responses: list[dict[str, Any]] = []
        while i < len(messages) and messages[i].get("role") == "tool":
            result = messages[i]
            i += 1
            response = result.get("content")
            if isinstance(response, str):
                try:
                    response = json.loads(response)
                except ValueError:
                    pass
            name = ""
            if len(responses) < len(calls) and isinstance(calls[len(responses)].get("function"), dict):
                name = calls[len(responses)]["function"].get("name", "")
            responses.append({"name": name or result.get("tool_call_id", ""), "response": response})
        if responses:
            turn["tool_responses"] = responses
        following = messages[i] if i < len(messages) else None
        if following is not None and following.get("role") == "assistant" and not following.get("tool_calls") \
                and following.get("content"):
            turn["content"] = following["content"]
            i += 1
        if isinstance(msg.get("reasoning_content"), str):
            turn["reasoning_content"] = msg["reasoning_content"]
        out.append(turn)
    return out


def reasoning_as_thinking(_source: str, messages: Messages) -> Messages:
    """LFM2's templates read an assistant's reasoning as ``thinking``."""
    for msg in messages:
        if isinstance(msg.get("reasoning_content"), str):
            msg["thinking"] = msg["reasoning_content"]
    return messages


def ministral3_blocks(messages: Messages) -> Messages:
    """llama.cpp's Ministral 3 handler hands system and assistant messages to the template as content blocks:
    the reasoning as a ``thinking`` block, then the text (Devstral's template, which it also takes, shows no
    thinking blocks, so an assistant's reasoning drops out of its prompt there)."""
    for msg in messages:
        if msg.get("role") not in ("system", "assistant"):
            continue
        blocks: list[Any] = []
        reasoning = msg.pop("reasoning_content", None)
        if isinstance(reasoning, str):
            blocks.append({"type": "thinking", "thinking": reasoning})
        content = msg.get("content")
        if isinstance(content, str):
            blocks.append({"type": "text", "text": content})
        elif isinstance(content, list):
            blocks.extend(content)
        msg["content"] = blocks
    return messages


def marker_patches(source: str, spaced: tuple[str, str]) -> tuple[str, str]:
    """The thinking markers with their whitespace (as the template writes them), patched where llama.cpp's
    analysis patches them: Nemotron Nano v2's are set to ``"<think>\n"`` and a bare ``"</think>"``; Laguna's
    v4 template writes whitespace the model does not, so they are trimmed to the bare tags."""
    if all(m in source for m in ("<SPECIAL_10>", "<SPECIAL_11>", "<SPECIAL_12>", "<TOOL_RESPONSE>")):
        return "<think>\n", "</think>"
    if "laguna_glm_thinking" in source:
        return spaced[0].strip(), spaced[1].strip()
    return spaced
