"""llama.cpp's built-in (non-Jinja) chat templates, re-implemented in Python.

These mirror ``src/llama-chat.cpp``: ``LLM_CHAT_TEMPLATES`` (the names ``--chat-template`` accepts),
``llm_chat_detect_template`` (the substring heuristic that maps a Jinja source to one of them, used by
``--no-jinja``) and ``llm_chat_apply_template`` (the formatters). Outputs are byte-for-byte those of llama.cpp,
including its quirks (e.g. llama2 never emits a generation prompt, gemma folds the system prompt into the next
user turn).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["BUILTIN_NAMES", "apply_builtin", "detect_builtin", "format_builtin_names"]

Chat = Sequence[tuple[str, str]]  # (role, content) pairs
_Formatter = Callable[[Chat, bool], str]

_WS = " \t\n\v\f\r"  # C isspace() in the "C" locale: llama.cpp's trim() uses it


def _trim(text: str) -> str:
    return text.strip(_WS)


def _chatml(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in chat)
    return out + ("<|im_start|>assistant\n" if add_ass else "")


def _mistral_v7(tekken: bool) -> _Formatter:
    # Official mistral 'v7' (and 'v7-tekken', which drops the spaces). No generation prompt.
    sp = "" if tekken else " "

    def fmt(chat: Chat, add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role == "system":
                out.append(f"[SYSTEM_PROMPT]{sp}{content}[/SYSTEM_PROMPT]")
            elif role == "user":
                out.append(f"[INST]{sp}{content}[/INST]")
            else:
                out.append(f"{sp}{content}</s>")
        return "".join(out)

    return fmt


def _mistral_v1_v3(variant: str) -> _Formatter:
    leading = " " if variant == "v1" else ""
    trailing = "" if variant == "v3-tekken" else " "
    trim_assistant = variant == "v3"

    def fmt(chat: Chat, add_ass: bool) -> str:
        out = []
        inside_turn = False
        for role, content in chat:
            if not inside_turn:
                out.append(f"{leading}[INST]{trailing}")
                inside_turn = True
            if role == "system":
                out.append(content + "\n\n")
            elif role == "user":
                out.append(f"{content}{leading}[/INST]")
            else:
                out.append(f"{trailing}{_trim(content) if trim_assistant else content}</s>")
                inside_turn = False
        return "".join(out)

    return fmt


def _llama2(system: bool, bos_inside: bool, strip: bool) -> _Formatter:
    def fmt(chat: Chat, add_ass: bool) -> str:
        out = ["[INST] "]
        inside_turn = True  # the leading BOS is the tokenizer's job
        for role, raw in chat:
            content = _trim(raw) if strip else raw
            if not inside_turn:
                inside_turn = True
                out.append("<s>[INST] " if bos_inside else "[INST] ")
            if role == "system":
                # without <<SYS>> support the system text still goes first in the turn, without markers
                out.append(f"<<SYS>>\n{content}\n<</SYS>>\n\n" if system else content + "\n")
            elif role == "user":
                out.append(content + " [/INST]")
            else:
                out.append(content + "</s>")
                inside_turn = False
        return "".join(out)

    return fmt


def _phi3(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|{role}|>\n{content}<|end|>\n" for role, content in chat)
    return out + ("<|assistant|>\n" if add_ass else "")


def _phi4(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|im_start|>{role}<|im_sep|>{content}<|im_end|>" for role, content in chat)
    return out + ("<|im_start|>assistant<|im_sep|>" if add_ass else "")


def _falcon3(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|{role}|>\n{content}\n" for role, content in chat)
    return out + ("<|assistant|>\n" if add_ass else "")


def _zephyr(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|{role}|>\n{content}<|endoftext|>\n" for role, content in chat)
    return out + ("<|assistant|>\n" if add_ass else "")


def _monarch(chat: Chat, add_ass: bool) -> str:
    # BOS is written inside the history, except before the first message (the tokenizer adds that one).
    out = "".join(f"{'' if i == 0 else '<s>'}{role}\n{content}</s>\n" for i, (role, content) in enumerate(chat))
    return out + ("<s>assistant\n" if add_ass else "")


def _gemma(chat: Chat, add_ass: bool) -> str:
    out = []
    system_prompt = ""
    for role, content in chat:
        if role == "system":
            # gemma has no system role: merged into the next user turn
            system_prompt += _trim(content)
            continue
        role = "model" if role == "assistant" else role
        out.append(f"<start_of_turn>{role}\n")
        if system_prompt and role != "model":
            out.append(system_prompt + "\n\n")
            system_prompt = ""
        out.append(_trim(content) + "<end_of_turn>\n")
    if add_ass:
        out.append("<start_of_turn>model\n")
    return "".join(out)


def _orion(chat: Chat, add_ass: bool) -> str:
    out = []
    system_prompt = ""
    for role, content in chat:
        if role == "system":
            system_prompt += content
        elif role == "user":
            out.append("Human: ")
            if system_prompt:
                out.append(system_prompt + "\n\n")
                system_prompt = ""
            out.append(content + "\n\nAssistant: </s>")
        else:
            out.append(content + "</s>")
    return "".join(out)


def _openchat(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(content + "<|end_of_turn|>")
        else:
            # toupper() on the first byte only
            first = role[:1]
            role = (first.upper() if first.isascii() else first) + role[1:]
            out.append(f"GPT4 Correct {role}: {content}<|end_of_turn|>")
    if add_ass:
        out.append("GPT4 Correct Assistant:")
    return "".join(out)


def _vicuna(orca: bool) -> _Formatter:
    def fmt(chat: Chat, add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role == "system":
                out.append(f"SYSTEM: {content}\n" if orca else content + "\n\n")
            elif role == "user":
                out.append(f"USER: {content}\n")
            elif role == "assistant":
                out.append(f"ASSISTANT: {content}</s>\n")
        if add_ass:
            out.append("ASSISTANT:")
        return "".join(out)

    return fmt


def _deepseek(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(content)
        elif role == "user":
            out.append(f"### Instruction:\n{content}\n")
        elif role == "assistant":
            out.append(f"### Response:\n{content}\n<|EOT|>\n")
    if add_ass:
        out.append("### Response:\n")
    return "".join(out)


def _command_r(chat: Chat, add_ass: bool) -> str:
    tokens = {"system": "<|SYSTEM_TOKEN|>", "user": "<|USER_TOKEN|>", "assistant": "<|CHATBOT_TOKEN|>"}
    out = [
        f"<|START_OF_TURN_TOKEN|>{tokens[role]}{_trim(content)}<|END_OF_TURN_TOKEN|>"
        for role, content in chat
        if role in tokens
    ]
    if add_ass:
        out.append("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>")
    return "".join(out)


def _llama3(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{_trim(content)}<|eot_id|>" for role, content in chat)
    return out + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_ass else "")


def _chatglm3(chat: Chat, add_ass: bool) -> str:
    out = "[gMASK]sop" + "".join(f"<|{role}|>\n {content}" for role, content in chat)
    return out + ("<|assistant|>" if add_ass else "")


def _chatglm4(chat: Chat, add_ass: bool) -> str:
    out = "[gMASK]<sop>" + "".join(f"<|{role}|>\n{content}" for role, content in chat)
    return out + ("<|assistant|>\n" if add_ass else "")


def _glmedge(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|{role}|>\n{content}" for role, content in chat)
    return out + ("<|assistant|>" if add_ass else "")


def _minicpm(chat: Chat, add_ass: bool) -> str:
    return "".join(f"<用户>{_trim(content)}<AI>" if role == "user" else _trim(content) for role, content in chat)


def _deepseek2(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(content + "\n\n")
        elif role == "user":
            out.append(f"User: {content}\n\n")
        elif role == "assistant":
            out.append(f"Assistant: {content}<｜end▁of▁sentence｜>")
    if add_ass:
        out.append("Assistant:")
    return "".join(out)


def _deepseek3(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(content + "\n\n")
        elif role == "user":
            out.append("<｜User｜>" + content)
        elif role == "assistant":
            out.append(f"<｜Assistant｜>{content}<｜end▁of▁sentence｜>")
    if add_ass:
        out.append("<｜Assistant｜>")
    return "".join(out)


def _deepseek_ocr(chat: Chat, add_ass: bool) -> str:
    return "".join(content for _, content in chat)


def _exaone(with_tool: bool) -> _Formatter:
    def fmt(chat: Chat, add_ass: bool) -> str:
        out = []
        for role, content in chat:
            if role == "system":
                out.append(f"[|system|]{_trim(content)}[|endofturn|]\n")
            elif role == "user":
                out.append(f"[|user|]{_trim(content)}\n")
            elif role == "assistant":
                out.append(f"[|assistant|]{_trim(content)}[|endofturn|]\n")
            elif role == "tool" and with_tool:
                out.append(f"[|tool|]{_trim(content)}[|endofturn|]\n")
        if add_ass:
            out.append("[|assistant|]")
        return "".join(out)

    return fmt


def _exaone_moe(chat: Chat, add_ass: bool) -> str:
    out = [
        f"<|{role}|>\n{_trim(content)}<|endofturn|>\n"
        for role, content in chat
        if role in ("system", "user", "assistant", "tool")
    ]
    if add_ass:
        out.append("<|assistant|>\n")
    return "".join(out)


def _rwkv_world(chat: Chat, add_ass: bool) -> str:
    # "\n\n" is the model's end-of-turn; the generation prompt follows a final user message regardless of add_ass
    out = []
    for i, (role, content) in enumerate(chat):
        if role == "system":
            out.append(f"System: {_trim(content)}\n\n")
        elif role == "user":
            out.append(f"User: {_trim(content)}\n\n")
            if i == len(chat) - 1:
                out.append("Assistant:")
        elif role == "assistant":
            out.append(f"Assistant: {_trim(content)}\n\n")
    return "".join(out)


def _granite3(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        out.append(f"<|start_of_role|>{role}<|end_of_role|>")
        if role == "assistant_tool_call":
            out.append("<|tool_call|>")
        out.append(content + "<|end_of_text|>\n")
    if add_ass:
        out.append("<|start_of_role|>assistant<|end_of_role|>")
    return "".join(out)


def _granite4(chat: Chat, add_ass: bool) -> str:
    # granite-4.0 and granite-4.1 format identically in llama.cpp
    out = []
    for role, content in chat:
        if role == "assistant_tool_call":
            out.append("<|start_of_role|>assistant<|end_of_role|><|tool_call|>")
        else:
            out.append(f"<|start_of_role|>{role}<|end_of_role|>")
        out.append(content + "<|end_of_text|>\n")
    if add_ass:
        out.append("<|start_of_role|>assistant<|end_of_role|>")
    return "".join(out)


def _gigachat(chat: Chat, add_ass: bool) -> str:
    has_system = bool(chat) and chat[0][0] == "system"
    out = [f"<s>{chat[0][1]}<|message_sep|>" if has_system else "<s>"]
    for role, content in chat[1 if has_system else 0 :]:
        if role == "user":
            out.append(f"user<|role_sep|>{content}<|message_sep|>available functions<|role_sep|>[]<|message_sep|>")
        elif role == "assistant":
            out.append(f"assistant<|role_sep|>{content}<|message_sep|>")
    if add_ass:
        out.append("assistant<|role_sep|>")
    return "".join(out)


def _megrez(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|role_start|>{role}<|role_end|>{content}<|turn_end|>" for role, content in chat)
    return out + ("<|role_start|>assistant<|role_end|>" if add_ass else "")


def _yandex(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "user":
            out.append(f" Пользователь: {content}\n\n")
        elif role == "assistant":
            out.append(f" Ассистент: {content}\n\n")
    if add_ass:
        out.append(" Ассистент:[SEP]")
    return "".join(out)


def _ascii_upper(text: str) -> str:
    # std::toupper in the "C" locale touches ASCII letters only
    return "".join(c.upper() if "a" <= c <= "z" else c for c in text)


def _bailing(think: bool) -> _Formatter:
    def fmt(chat: Chat, add_ass: bool) -> str:
        out = [f"<role>{'HUMAN' if role == 'user' else _ascii_upper(role)}</role>{content}" for role, content in chat]
        if add_ass:
            out.append("<role>ASSISTANT</role>" + ("<think>" if think else ""))
        return "".join(out)

    return fmt


def _bailing2(chat: Chat, add_ass: bool) -> str:
    has_system = bool(chat) and chat[0][0] == "system"
    out = [] if has_system else ["<role>SYSTEM</role>detailed thinking off<|role_end|>"]
    for role, content in chat:
        out.append(f"<role>{'HUMAN' if role == 'user' else _ascii_upper(role)}</role>{content}<|role_end|>")
    if add_ass:
        out.append("<role>ASSISTANT</role>")
    return "".join(out)


def _llama4(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|header_start|>{role}<|header_end|>\n\n{_trim(content)}<|eot|>" for role, content in chat)
    return out + ("<|header_start|>assistant<|header_end|>\n\n" if add_ass else "")


def _smolvlm(chat: Chat, add_ass: bool) -> str:
    out = ["<|im_start|>"]  # <|im_start|> is SmolVLM's BOS; the rest is not chatml
    for role, content in chat:
        if role == "system":
            out.append(content + "\n\n")
        elif role == "user":
            out.append(f"User: {content}<end_of_utterance>\n")
        else:
            out.append(f"Assistant: {content}<end_of_utterance>\n")
    if add_ass:
        out.append("Assistant:")
    return "".join(out)


def _dots1(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"<|system|>{content}<|endofsystem|>")
        elif role == "user":
            out.append(f"<|userprompt|>{content}<|endofuserprompt|>")
        else:
            out.append(f"<|response|>{content}<|endofresponse|>")
    if add_ass:
        out.append("<|response|>")
    return "".join(out)


def _hunyuan_moe(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"<|startoftext|>{content}<|extra_4|>")
        elif role == "assistant":
            out.append(content + "<|eos|>")
        else:
            out.append(f"<|startoftext|>{content}<|extra_0|>")
    return "".join(out)


def _gpt_oss(chat: Chat, add_ass: bool) -> str:
    out = "".join(
        f"<|start|>{role}<|message|>{content}{'<|return|>' if role == 'assistant' else '<|end|>'}"
        for role, content in chat
    )
    return out + ("<|start|>assistant" if add_ass else "")


def _hunyuan_dense(chat: Chat, add_ass: bool) -> str:
    out = []
    for i, (role, content) in enumerate(chat):
        if i == 0 and role == "system":
            out.append(content + "<｜hy_place▁holder▁no▁3｜>")
        if role == "assistant":
            out.append(f"<｜hy_Assistant｜>{content}<｜hy_place▁holder▁no▁2｜>")
        elif role == "user":
            out.append(f"<｜hy_User｜>{content}<｜hy_Assistant｜>")
    return "".join(out)


def _hunyuan_vl(chat: Chat, add_ass: bool) -> str:
    out = ["<｜hy_begin▁of▁sentence｜>"]
    for i, (role, content) in enumerate(chat):
        if i == 0 and role == "system":
            out.append(content + "<｜hy_place▁holder▁no▁3｜>")
            continue
        if role == "user":
            out.append(content + "<｜hy_User｜>")
        elif role == "assistant":
            out.append(content + "<｜hy_Assistant｜>")
    return "".join(out)


def _kimi_k2(chat: Chat, add_ass: bool) -> str:
    headers = {
        "system": "<|im_system|>system<|im_middle|>",
        "user": "<|im_user|>user<|im_middle|>",
        "assistant": "<|im_assistant|>assistant<|im_middle|>",
        "tool": "<|im_system|>tool<|im_middle|>",
    }
    out = "".join(f"{headers.get(role, '')}{content}<|im_end|>" for role, content in chat)
    return out + ("<|im_assistant|>assistant<|im_middle|>" if add_ass else "")


def _seed_oss(chat: Chat, add_ass: bool) -> str:
    out = "".join(
        f"<seed:bos>{role}\n{_trim(content) if role == 'assistant' else content}<seed:eos>" for role, content in chat
    )
    return out + ("<seed:bos>assistant\n" if add_ass else "")


def _grok2(chat: Chat, add_ass: bool) -> str:
    out = []
    for role, content in chat:
        if role == "system":
            out.append(f"System: {_trim(content)}<|separator|>\n\n")
        elif role == "user":
            out.append(f"Human: {_trim(content)}<|separator|>\n\n")
        elif role == "assistant":
            out.append(f"Assistant: {content}<|separator|>\n\n")
    if add_ass:
        out.append("Assistant:")
    return "".join(out)


def _pangu_embedded(chat: Chat, add_ass: bool) -> str:
    labels = {"system": "系统", "user": "用户", "assistant": "助手", "tool": "工具", "function": "方法"}
    out = []
    for i, (role, content) in enumerate(chat):
        if i == 0 and role != "system":
            out.append("[unused9]系统：[unused10]")
        if role in labels:
            out.append(f"[unused9]{labels[role]}：{content}[unused10]")
    if add_ass:
        out.append("[unused9]助手：")
    return "".join(out)


def _solar_open(chat: Chat, add_ass: bool) -> str:
    out = "".join(f"<|begin|>{role}<|content|>{content}<|end|>" for role, content in chat)
    return out + ("<|begin|>assistant" if add_ass else "")


# The names `--chat-template` accepts (LLM_CHAT_TEMPLATES), in llama.cpp's (std::map, i.e. sorted) order.
_FORMATTERS: dict[str, _Formatter] = {
    "chatml": _chatml,
    "llama2": _llama2(system=False, bos_inside=False, strip=False),
    "llama2-sys": _llama2(system=True, bos_inside=False, strip=False),
    "llama2-sys-bos": _llama2(system=True, bos_inside=True, strip=False),
    "llama2-sys-strip": _llama2(system=True, bos_inside=False, strip=True),
    "mistral-v1": _mistral_v1_v3("v1"),
    "mistral-v3": _mistral_v1_v3("v3"),
    "mistral-v3-tekken": _mistral_v1_v3("v3-tekken"),
    "mistral-v7": _mistral_v7(tekken=False),
    "mistral-v7-tekken": _mistral_v7(tekken=True),
    "phi3": _phi3,
    "phi4": _phi4,
    "falcon3": _falcon3,
    "zephyr": _zephyr,
    "monarch": _monarch,
    "gemma": _gemma,
    "orion": _orion,
    "openchat": _openchat,
    "vicuna": _vicuna(orca=False),
    "vicuna-orca": _vicuna(orca=True),
    "deepseek": _deepseek,
    "deepseek2": _deepseek2,
    "deepseek3": _deepseek3,
    "deepseek-ocr": _deepseek_ocr,
    "command-r": _command_r,
    "llama3": _llama3,
    "chatglm3": _chatglm3,
    "chatglm4": _chatglm4,
    "glmedge": _glmedge,
    "minicpm": _minicpm,
    "exaone3": _exaone(with_tool=False),
    "exaone4": _exaone(with_tool=True),
    "exaone-moe": _exaone_moe,
    "rwkv-world": _rwkv_world,
    "granite": _granite3,
    "granite-4.0": _granite4,
    "granite-4.1": _granite4,
    "gigachat": _gigachat,
    "megrez": _megrez,
    "yandex": _yandex,
    "bailing": _bailing(think=False),
    "bailing-think": _bailing(think=True),
    "bailing2": _bailing2,
    "llama4": _llama4,
    "smolvlm": _smolvlm,
    "hunyuan-moe": _hunyuan_moe,
    "gpt-oss": _gpt_oss,
    "hunyuan-dense": _hunyuan_dense,
    "hunyuan-vl": _hunyuan_vl,
    "kimi-k2": _kimi_k2,
    "seed_oss": _seed_oss,
    "grok-2": _grok2,
    "pangu-embedded": _pangu_embedded,
    "solar-open": _solar_open,
}

#: The built-in template names, sorted as llama.cpp lists them (``llama_chat_builtin_templates``).
BUILTIN_NAMES: tuple[str, ...] = tuple(sorted(_FORMATTERS))

# Reachable only through detection: llama.cpp has a formatter for dots.llm1 but no name for it.
_FORMATTERS["dots1"] = _dots1


def format_builtin_names() -> str:
    """The comma-separated list llama-server prints in ``--chat-template``'s help."""
    return ", ".join(BUILTIN_NAMES)


def detect_builtin(template: str) -> str | None:
    """The built-in template a name or Jinja source maps to (``llm_chat_detect_template``), or ``None``.

    An exact built-in name wins; otherwise a substring heuristic over the template text picks the family. The
    order of the checks matters and is llama.cpp's.
    """
    if template in BUILTIN_NAMES:
        return template

    def has(needle: str) -> bool:
        return needle in template

    if has("<|im_start|>"):
        if has("<|im_sep|>"):
            return "phi4"
        # SmolVLM uses <|im_start|> as BOS, but it is NOT chatml
        return "smolvlm" if has("<end_of_utterance>") else "chatml"
    if template.startswith("mistral") or has("[INST]"):
        if has("[SYSTEM_PROMPT]"):
            return "mistral-v7"
        if has("' [INST] ' + system_message") or has("[AVAILABLE_TOOLS]"):
            # official mistral 'v1' / 'v3' / 'v3-tekken' templates
            if has(" [INST]"):
                return "mistral-v1"
            if has('"[INST]"'):
                return "mistral-v3-tekken"
            return "mistral-v3"
        # llama2 and its variants
        if has("content.strip()"):
            return "llama2-sys-strip"
        if has("bos_token + '[INST]"):
            return "llama2-sys-bos"
        if has("<<SYS>>"):
            return "llama2-sys"
        return "llama2"
    if has("<|assistant|>") and has("<|end|>"):
        return "phi3"
    if has("[gMASK]<sop>"):
        return "chatglm4"
    if has("<|assistant|>") and has("<|user|>"):
        if has("<|tool_declare|>"):
            return "exaone-moe"
        return "falcon3" if has("</s>") else "glmedge"
    if has("<|{{ item['role'] }}|>") and has("<|begin_of_image|>"):
        return "glmedge"
    if has("<|user|>") and has("<|endoftext|>"):
        return "zephyr"
    if has("bos_token + message['role']"):
        return "monarch"
    if has("<start_of_turn>"):
        return "gemma"
    if has(r"'\n\nAssistant: ' + eos_token"):
        return "orion"  # OrionStarAI/Orion-14B-Chat
    if has("GPT4 Correct "):
        return "openchat"  # openchat/openchat-3.5-0106
    if has("USER: ") and has("ASSISTANT: "):
        return "vicuna-orca" if has("SYSTEM: ") else "vicuna"
    if has("### Instruction:") and has("<|EOT|>"):
        return "deepseek"  # deepseek-ai/deepseek-coder-33b-instruct
    if has("<|START_OF_TURN_TOKEN|>") and has("<|USER_TOKEN|>"):
        return "command-r"  # CohereForAI/c4ai-command-r-plus
    if has("<|start_header_id|>") and has("<|end_header_id|>"):
        return "llama3"
    if has("[gMASK]sop"):
        return "chatglm3"
    if has("<用户>"):
        return "minicpm"
    if has("'Assistant: ' + message['content'] + eos_token"):
        return "deepseek2"
    if has("<｜Assistant｜>") and has("<｜User｜>") and has("<｜end▁of▁sentence｜>"):
        return "deepseek3"
    if has("[|system|]") and has("[|assistant|]") and has("[|endofturn|]"):
        return "exaone4" if has("[|tool|]") else "exaone3"
    if has("rwkv-world") or has(r"{{- 'User: ' + message['content']|trim + '\n\n' -}}"):
        return "rwkv-world"
    if has("<|start_of_role|>"):
        if has("<tool_call>") or has("<tools>"):
            return "granite-4.0" if has("g4_default_system_message") else "granite-4.1"
        return "granite"
    if has("message['role'] + additional_special_tokens[0] + message['content'] + additional_special_tokens[1]"):
        return "gigachat"
    if has("<|role_start|>"):
        return "megrez"
    if has(" Ассистент:"):
        return "yandex"
    if has("<role>ASSISTANT</role>") and has("'HUMAN'"):
        return "bailing"
    if has("<role>ASSISTANT</role>") and has('"HUMAN"') and has("<think>"):
        return "bailing-think"
    if has("<role>ASSISTANT</role>") and has("<role>HUMAN</role>") and has("<|role_end|>"):
        return "bailing2"
    if has("<|header_start|>") and has("<|header_end|>"):
        return "llama4"
    if has("<|endofuserprompt|>"):
        return "dots1"
    if has("<|extra_0|>") and has("<|extra_4|>"):
        return "hunyuan-moe"
    if has("<|start|>") and has("<|channel|>"):
        return "gpt-oss"
    if has("<｜hy_Assistant｜>") and has("<｜hy_begin▁of▁sentence｜>"):
        return "hunyuan-vl"
    if has("<｜hy_Assistant｜>") and has("<｜hy_place▁holder▁no▁3｜>"):
        return "hunyuan-dense"
    if has("<|im_assistant|>assistant<|im_middle|>"):
        return "kimi-k2"
    if has("<seed:bos>"):
        return "seed_oss"
    if has("'Assistant: '  + message['content'] + '<|separator|>"):
        return "grok-2"
    if has("[unused9]系统：[unused10]"):
        return "pangu-embedded"
    if has("<|begin|>") and has("<|end|>") and has("<|content|>"):
        return "solar-open"
    return None


def apply_builtin(name: str, chat: Chat, add_generation_prompt: bool = True) -> str:
    """Format ``(role, content)`` pairs with the named built-in template (``llm_chat_apply_template``).

    Raises ``KeyError`` for a name that is neither in ``BUILTIN_NAMES`` nor a detection-only family.
    """
    return _FORMATTERS[name](chat, add_generation_prompt)
