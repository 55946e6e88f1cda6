# -*- test-case-name: tests.test_cli -*-
"""llama-server's "example-specific params" (the server's own) that llamatwist implements.

HTTP, endpoints, security, chat templates and reasoning, slots and the
prompt cache, and the default-model presets. The other groups:
common_flags.py, sampling_flags.py.
"""

from __future__ import annotations

from typing import Final

from llamatwist.cli.convert import (
    alias,
    api_keys,
    api_prefix,
    directory,
    float_range,
    host,
    int_min,
    integer,
    json_object,
    json_object_file,
    media_dir,
    models_dir,
    n_parallel,
    nonempty,
    on_off_auto,
    pooling,
    port,
    readable_file,
    reasoning_effort,
    reasoning_format,
    server_tools,
    sleep_seconds,
    threads,
)
from llamatwist.cli.flag import G_CHAT, G_COMPUTE, G_HTTP, G_LOG, G_MODEL, G_SERVER, Flag

__all__ = ["PRESETS", "SERVER"]

SERVER: Final[tuple[Flag, ...]] = (
    # model
    Flag(("-a", "--alias"), "alias", G_MODEL,
         "set model name aliases, comma-separated (to be used by API)",
         "LLAMA_ARG_ALIAS", alias, metavar="STRING", default="unset"),
    Flag(("--tags",), "tags", G_MODEL,
         "set model tags, comma-separated (informational, not used for routing)",
         "LLAMA_ARG_TAGS", str.strip, metavar="STRING", default="unset"),
    # router mode
    Flag(("--models-dir",), "models_dir", G_MODEL,
         "directory containing models for the router server: serve each of them by name, each in its own "
         "server process started on demand (router mode; needs no -m)", "LLAMA_ARG_MODELS_DIR", models_dir,
         metavar="PATH", default="disabled"),
    Flag(("--models-preset",), "models_preset", G_MODEL,
         "path to INI file containing model presets for the router server", "LLAMA_ARG_MODELS_PRESET",
         readable_file, metavar="PATH", default="disabled"),
    Flag(("--models-max",), "models_max", G_MODEL,
         "for router server, maximum number of models to load simultaneously (0 = unlimited)",
         "LLAMA_ARG_MODELS_MAX", int_min(0)),
    Flag(("--models-autoload",), "models_autoload", G_MODEL,
         "for router server, whether to automatically load models", "LLAMA_ARG_MODELS_AUTOLOAD",
         neg=("--no-models-autoload",)),
    # server
    Flag(("--host",), "host", G_SERVER, "IP address to listen on",
         "LLAMA_ARG_HOST", host, metavar="HOST"),
    Flag(("--port",), "port", G_SERVER, "port to listen on",
         "LLAMA_ARG_PORT", port, metavar="PORT"),
    Flag(("--metrics",), "metrics", G_SERVER,
         "enable prometheus compatible metrics endpoint",
         "LLAMA_ARG_ENDPOINT_METRICS"),
    Flag(("--slots",), "slots", G_SERVER, "expose slots monitoring endpoint",
         "LLAMA_ARG_ENDPOINT_SLOTS", neg=("--no-slots",)),
    Flag(("--slot-save-path",), "slot_save_path", G_SERVER,
         "path to save slot kv cache (POST /slots/{id}?action=save|restore|erase)", None, nonempty,
         metavar="PATH", default="disabled"),
    Flag(("--sleep-idle-seconds",), "sleep_idle_seconds", G_SERVER,
         "number of seconds of idleness after which the server will sleep: the model and its KV cache are "
         "unloaded until the next task (-1 = disabled)", None, sleep_seconds, metavar="SECONDS"),
    Flag(("--reuse-port",), "reuse_port", G_SERVER, "allow multiple sockets to bind to the same port",
         "LLAMA_ARG_REUSE_PORT"),
    Flag(("-sp", "--special"), "special", G_SERVER,
         "special tokens output enabled: generated control tokens are written as their text"),
    Flag(("--media-path",), "media_path", G_SERVER,
         "directory for loading local media files; files can be accessed via file:// URLs using relative "
         "paths", None, media_dir, metavar="PATH", default="disabled"),
    Flag(("--props",), "endpoint_props", G_SERVER,
         "enable changing global properties via POST /props",
         "LLAMA_ARG_ENDPOINT_PROPS"),
    Flag(("--embedding", "--embeddings"), "embeddings", G_SERVER,
         "restrict to only support embedding use case; use only with dedicated "
         "embedding models", "LLAMA_ARG_EMBEDDINGS"),
    Flag(("--rerank", "--reranking"), "reranking", G_SERVER,
         "enable reranking endpoint on server (implies --embeddings and, unless "
         "--pooling is given, --pooling rank)", "LLAMA_ARG_RERANKING"),
    Flag(("--pooling",), "pooling", G_SERVER,
         "pooling type for embeddings, use model default if unspecified",
         "LLAMA_ARG_POOLING", pooling, metavar="{none,mean,cls,last,rank}",
         default="model default"),
    Flag(("--ui", "--webui"), "webui", G_SERVER,
         "whether to enable the Web UI (the chat UI at /)", "LLAMA_ARG_UI",
         neg=("--no-ui", "--no-webui")),
    Flag(("--ui-config", "--webui-config"), "ui_config", G_SERVER,
         "JSON that provides default UI settings (overrides UI defaults; /props ui_settings)", "LLAMA_ARG_UI_CONFIG",
         json_object, metavar="JSON", default="none"),
    Flag(("--ui-config-file", "--webui-config-file"), "ui_config", G_SERVER,
         "JSON file that provides default UI settings (overrides UI defaults)", "LLAMA_ARG_UI_CONFIG_FILE",
         json_object_file, metavar="PATH", default="none"),
    # server tools for agents (llama-server's experimental ones): never in an untrusted environment
    Flag(("--ui-mcp-proxy", "--webui-mcp-proxy"), "ui_mcp_proxy", G_SERVER,
         "experimental: whether to enable MCP CORS proxy (/cors-proxy) - do not enable in untrusted environments",
         "LLAMA_ARG_UI_MCP_PROXY", neg=("--no-ui-mcp-proxy", "--no-webui-mcp-proxy")),
    Flag(("--tools",), "server_tools", G_SERVER,
         "experimental: built-in tools for AI agents at /tools, comma-separated, or \"all\" - do not enable in "
         "untrusted environments; available: read_file, file_glob_search, grep_search, exec_shell_command, "
         "write_file, edit_file, get_info; limits --cors-origins to localhost unless it is given",
         "LLAMA_ARG_TOOLS", server_tools, metavar="TOOL1,TOOL2,...", default="no tools"),
    Flag(("--tools-runtime",), "tools_runtime", G_SERVER,
         "experimental: run tools in a separate runtime: 'docker:<image>' or 'podman:<image>' (a container "
         "started now and removed on exit), 'docker-container:<id>' or 'podman-container:<id>' (an existing "
         "one), 'ssh:<target>' (a POSIX host, key-based auth and a trusted host key)",
         "LLAMA_ARG_TOOLS_RUNTIME", nonempty, metavar="OPTION", default="none, use host environment"),
    Flag(("--mcp-servers-config",), "mcp_servers_config", G_SERVER,
         "experimental: path to JSON file with MCP server definitions (Cursor-compatible format); their tools "
         "join /tools - do not enable in untrusted environments", "LLAMA_ARG_MCP_SERVERS_CONFIG", nonempty,
         metavar="PATH", default="none"),
    Flag(("--mcp-servers-json",), "mcp_servers_json", G_SERVER,
         "experimental: inline JSON with MCP server definitions (Cursor-compatible format)",
         "LLAMA_ARG_MCP_SERVERS_JSON", nonempty, metavar="JSON", default="none"),
    Flag(("-ag", "--agent"), "agent", G_SERVER,
         "whether to enable the MCP CORS proxy and all built-in tools (--tools and --ui-mcp-proxy given "
         "explicitly still win) - do not enable in untrusted environments", "LLAMA_ARG_AGENT",
         neg=("-no-ag", "--no-agent"), default="disabled"),
    Flag(("--path",), "static_path", G_SERVER,
         "path to serve static files from, instead of the built-in Web UI",
         "LLAMA_ARG_STATIC_PATH", directory, metavar="PATH", default="none"),
    Flag(("--responses-store-size",), "responses_store_size", G_SERVER,
         "responses kept in memory for previous_response_id (/v1/responses), least recently used "
         "dropped first; 0 = keep none (llamatwist only)", None, int_min(0)),
    # HTTP: security, CORS and limits
    Flag(("--api-prefix",), "api_prefix", G_HTTP,
         "prefix path the server serves from, without the trailing slash; "
         "routes without it answer 404", "LLAMA_ARG_API_PREFIX", api_prefix,
         metavar="PREFIX", default="none"),
    Flag(("--api-key",), "api_keys", G_HTTP,
         "API key to use for authentication, multiple keys can be provided as "
         "a comma-separated list; requests must send 'Authorization: Bearer KEY' "
         "or 'X-Api-Key: KEY' (/health and /v1/health stay open)",
         "LLAMA_API_KEY", api_keys, metavar="KEY", default="none"),
    Flag(("--api-key-file",), "api_key_file", G_HTTP,
         "path to file containing API keys, one per line; lines starting with "
         "a hash are treated as comments; merged with --api-key",
         "LLAMA_ARG_API_KEY_FILE", nonempty, metavar="FNAME", default="none"),
    Flag(("--ssl-key-file",), "ssl_key_file", G_HTTP,
         "path to file a PEM-encoded SSL private key (serves HTTPS together "
         "with --ssl-cert-file)", "LLAMA_ARG_SSL_KEY_FILE", nonempty,
         metavar="FNAME", default="none"),
    Flag(("--ssl-cert-file",), "ssl_cert_file", G_HTTP,
         "path to file a PEM-encoded SSL certificate (and its chain)",
         "LLAMA_ARG_SSL_CERT_FILE", nonempty, metavar="FNAME", default="none"),
    Flag(("-to", "--timeout"), "timeout", G_HTTP,
         "server read/write timeout in seconds: an idle connection is closed "
         "after it (<= 0 = never)", "LLAMA_ARG_TIMEOUT", integer),
    Flag(("--threads-http",), "n_threads_http", G_HTTP,
         "number of threads used for blocking work of HTTP requests, such as "
         "tokenization (<= 0 = Twisted's default)", "LLAMA_ARG_THREADS_HTTP",
         threads, default="-1"),
    Flag(("--cors-origins",), "cors_origins", G_HTTP,
         "comma-separated list of allowed origins for CORS; if set to special "
         "value 'localhost', reflect the Origin header only if it is localhost",
         "LLAMA_ARG_CORS_ORIGINS", nonempty, metavar="ORIGINS"),
    Flag(("--cors-methods",), "cors_methods", G_HTTP,
         "comma-separated list of allowed methods for CORS",
         "LLAMA_ARG_CORS_METHODS", nonempty, metavar="METHODS"),
    Flag(("--cors-headers",), "cors_headers", G_HTTP,
         "comma-separated list of allowed headers for CORS",
         "LLAMA_ARG_CORS_HEADERS", nonempty, metavar="HEADERS"),
    Flag(("--cors-credentials",), "cors_credentials", G_HTTP,
         "whether to allow credentials for CORS: granted to the origins --cors-origins names "
         "(never with * , the default, which echoes no Origin)",
         "LLAMA_ARG_CORS_CREDENTIALS", neg=("--no-cors-credentials",)),
    # chat and prompt templates
    Flag(("--jinja",), "jinja", G_CHAT,
         "whether to use jinja template engine for chat", "LLAMA_ARG_JINJA",
         neg=("--no-jinja",)),
    Flag(("--chat-template",), "chat_template", G_CHAT,
         "set custom jinja chat template, or the name of a built-in one",
         "LLAMA_ARG_CHAT_TEMPLATE", nonempty, metavar="JINJA_TEMPLATE",
         default="template taken from model's metadata"),
    Flag(("--chat-template-file",), "chat_template_file", G_CHAT,
         "set custom jinja chat template file", "LLAMA_ARG_CHAT_TEMPLATE_FILE",
         nonempty, metavar="JINJA_TEMPLATE_FILE",
         default="template taken from model's metadata"),
    Flag(("--chat-template-kwargs",), "chat_template_kwargs", G_CHAT,
         "sets additional params for the json template parser, must be a valid "
         "json object string, e.g. '{\"key1\":\"value1\",\"key2\":\"value2\"}'",
         "LLAMA_ARG_CHAT_TEMPLATE_KWARGS", json_object, metavar="STRING",
         default="none"),
    Flag(("--reasoning-preserve",), "reasoning_preserve", G_CHAT,
         "preserve reasoning trace in the full history, not just the last assistant message (templates with the "
         "'preserve_reasoning' capability)", "LLAMA_ARG_REASONING_PRESERVE", neg=("--no-reasoning-preserve",)),
    Flag(("--reasoning-format",), "reasoning_format", G_CHAT,
         "how thinking is returned: none (left in message.content), deepseek (in "
         "message.reasoning_content), deepseek-legacy (in both), auto (as deepseek)",
         "LLAMA_ARG_THINK", reasoning_format, metavar="FORMAT"),
    Flag(("-rea", "--reasoning"), "reasoning", G_CHAT,
         "use reasoning/thinking in the chat: on, off or auto (detect from template)",
         "LLAMA_ARG_REASONING", on_off_auto, metavar="[on|off|auto]"),
    Flag(("--reasoning-effort",), "reasoning_effort", G_CHAT,
         "reasoning effort level given to the chat template: 'default' to keep the "
         "template default, or a level such as 'low', 'medium', 'high'",
         "LLAMA_ARG_REASONING_EFFORT", reasoning_effort, metavar="LEVEL", default="default"),
    Flag(("--reasoning-budget",), "reasoning_budget", G_CHAT,
         "token budget for thinking: -1 for unrestricted, 0 for immediate end, N>0 for token budget",
         "LLAMA_ARG_THINK_BUDGET", int_min(-1)),
    Flag(("--reasoning-budget-message",), "reasoning_budget_message", G_CHAT,
         "message injected before the end-of-thinking tag when reasoning budget is exhausted",
         "LLAMA_ARG_THINK_BUDGET_MESSAGE", str, metavar="MESSAGE", default="none"),
    Flag(("--skip-chat-parsing",), "skip_chat_parsing", G_CHAT,
         "force a pure content parser, even if a Jinja template is specified; model will output everything in "
         "the content section, including any reasoning and/or tool calls", "LLAMA_ARG_SKIP_CHAT_PARSING",
         neg=("--no-skip-chat-parsing",)),
    Flag(("--prefill-assistant",), "prefill_assistant", G_CHAT,
         "whether to prefill the assistant's response if the last message is "
         "an assistant message; when off, a trailing assistant message is "
         "treated as a full message and not prefilled",
         "LLAMA_ARG_PREFILL_ASSISTANT", neg=("--no-prefill-assistant",)),
    Flag(("--spm-infill",), "spm_infill", G_CHAT,
         "use Suffix/Prefix/Middle pattern for infill (instead of "
         "Prefix/Suffix/Middle) as some models prefer this"),
    # context, batching and compute
    Flag(("--log-prompts-dir",), "prompts_log_dir", G_LOG,
         "log prompts to directory (auto-created if not present; only used for debugging)", None, nonempty,
         metavar="PATH", default="disabled"),
    Flag(("-np", "--parallel"), "n_parallel", G_COMPUTE,
         "number of server slots (-1 = auto: 4 slots sharing a unified KV cache)",
         "LLAMA_ARG_N_PARALLEL", n_parallel, default="-1"),
    Flag(("-kvu", "--kv-unified"), "kv_unified", G_COMPUTE,
         "use single unified KV buffer shared across all sequences",
         "LLAMA_ARG_KV_UNIFIED", neg=("-no-kvu", "--no-kv-unified"),
         default="enabled if the number of slots is auto"),
    Flag(("-cb", "--cont-batching"), "cont_batching", G_COMPUTE,
         "whether to enable continuous batching (a.k.a dynamic batching)",
         "LLAMA_ARG_CONT_BATCHING", neg=("-nocb", "--no-cont-batching")),
    Flag(("--warmup",), "warmup", G_COMPUTE,
         "whether to perform warmup with an empty run", neg=("--no-warmup",)),
    Flag(("--context-shift",), "ctx_shift", G_COMPUTE,
         "whether to use context shift on infinite text generation", "LLAMA_ARG_CONTEXT_SHIFT",
         neg=("--no-context-shift",)),
    Flag(("-cram", "--cache-ram"), "cache_ram_mib", G_COMPUTE,
         "the most MiB of KV cache that idle cached prompt prefixes may hold (-1 - no limit, "
         "0 - disable the prefix cache shared across slots)", "LLAMA_ARG_CACHE_RAM", int_min(-1)),
    Flag(("--cache-idle-slots",), "cache_idle_slots", G_COMPUTE,
         "keep an idle slot's prompt in the prefix cache when the slot takes a new task "
         "(requires --cache-ram)", "LLAMA_ARG_CACHE_IDLE_SLOTS", neg=("--no-cache-idle-slots",)),
    Flag(("--sse-ping-interval",), "sampling.sse_ping_interval", G_SERVER,
         "server SSE ping interval in seconds (-1 = disabled)", "LLAMA_ARG_SSE_PING_INTERVAL", integer),
    Flag(("--cache-prompt",), "sampling.cache_prompt", G_COMPUTE,
         "whether to enable prompt caching (a request's cache_prompt default)", "LLAMA_ARG_CACHE_PROMPT",
         neg=("--no-cache-prompt",)),
    Flag(("--embd-normalize",), "sampling.embd_normalize", G_SERVER,
         "normalisation for embeddings (-1=none, 0=max absolute int16, 1=taxicab, 2=euclidean, >2=p-norm)",
         None, int_min(-1)),
    Flag(("--cache-reuse",), "sampling.n_cache_reuse", G_COMPUTE,
         "min chunk size to attempt reusing from the cache via KV shifting, requires prompt caching "
         "(0 = disabled)", "LLAMA_ARG_CACHE_REUSE", int_min(0)),
    Flag(("-sps", "--slot-prompt-similarity"), "slot_prompt_similarity", G_COMPUTE,
         "how much the prompt of a request must match the prompt of a slot in order to use "
         "that slot (0.0 = disabled)", None, float_range(0.0, 1.0)),
)  # fmt: skip

# Default-model presets, like llama-server's --fim-*-default: they pick the
# model that llamatwist.models fetches (config.model None means that model).
PRESETS: Final[dict[str, str]] = {
    "--smollm2-default": "use the default SmolLM2 model (downloaded on first "
    "use; also the model used when neither -m nor a preset is given)",
}
