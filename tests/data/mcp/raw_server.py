"""A hand-written MCP stdio server (no SDK) for the misbehaviour an SDK server cannot produce.

Usage: raw_server.py [MODE]. MODE (default "ok") changes how the whole server behaves:
  ok          answers initialize, tools/list and tools/call (the tools are in TOOLS, see call_tool for what each does)
  silent      reads its input and never answers anything
  exit        writes a line to stderr and exits at once, status 3
  noinit      answers initialize with a JSON-RPC error
  listfail    answers tools/list with a JSON-RPC error
  badtools    lists a tool whose name is a number
  weirdtools  lists odd tool entries, and a nextCursor to a second page that must not be asked for
  grandchild  leaves a grandchild holding stdin/stdout/stderr open until 3 s after this server is gone; its pid is
              in the "pid" tool's answer
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "ok"
SEEN: list[dict] = []  # every message received, for the "record" tool
GRANDCHILD: subprocess.Popen | None = None

TOOLS = [
    {"name": "echo", "description": "Echo back the message",
     "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}},
    {"name": "record", "description": "All messages received so far", "inputSchema": {"type": "object"}},
]


def send(message: object) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def reply(req_id: object, result: object) -> None:
    send({"jsonrpc": "2.0", "id": req_id, "result": result})


def text(value: str) -> dict:
    return {"content": [{"type": "text", "text": value}]}


def call_tool(req_id: int, name: str, args: dict) -> None:
    if name == "echo":
        reply(req_id, text(str(args.get("message", ""))))
    elif name == "record":
        reply(req_id, text(json.dumps(SEEN)))
    elif name == "pid":
        reply(req_id, text(json.dumps({"pid": os.getpid(), "grandchild": GRANDCHILD.pid if GRANDCHILD else None})))
    elif name == "cwd":
        reply(req_id, text(os.getcwd()))
    elif name == "env":
        reply(req_id, text(os.environ.get(args["name"], "<unset>")))
    elif name == "garbage":  # everything a reader must skip before the real reply, in one write
        noise = [
            b"this is not json", b"{\"truncated\": ", b"[1, 2, 3]", b"42", b"\"a string\"", b"\xff\xfe not utf-8",
            b"{\"jsonrpc\": \"2.0\", \"id\": \"%d\", \"result\": {}}" % req_id,  # right number, but a string
            b"{\"jsonrpc\": \"2.0\", \"id\": true, \"result\": {}}",
            b"{\"jsonrpc\": \"2.0\", \"id\": %d, \"result\": {}}" % (req_id + 1000),  # someone else's id
            b"{\"jsonrpc\": \"2.0\", \"method\": \"notifications/progress\", \"params\": {\"progress\": 1}}",
            b"{\"value\": NaN, \"id\": %d}" % req_id,  # not JSON to a strict parser
            b"", b"   ",
        ]
        good = json.dumps({"jsonrpc": "2.0", "id": req_id, "result": text("after garbage")}).encode()
        os.write(1, b"\n".join(noise) + b"\n" + good + b"\r\n")
    elif name == "oversize":  # a 9 MiB line (over the 8 MiB cap, written in pieces), then the reply
        for _ in range(9):
            os.write(1, b"x" * (1024 * 1024))
        os.write(1, b"\n")
        reply(req_id, text("after oversize"))
    elif name == "flood":
        notes = [json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": i}})
                 for i in range(int(args.get("count", 2000)))]
        os.write(1, ("\n".join(notes) + "\n").encode())
        reply(req_id, text("after flood"))
    elif name == "slow":  # single-threaded: later requests wait behind this one
        time.sleep(float(args.get("seconds", 1)))
        reply(req_id, text("slow done"))
    elif name == "silent":
        pass
    elif name == "crash":
        sys.stderr.write("crashing on purpose\n")
        sys.stderr.flush()
        os._exit(7)
    elif name == "result":  # answers with args["reply"] merged into the JSON-RPC envelope
        send({"jsonrpc": "2.0", "id": req_id, **args["reply"]})
    else:
        send({"jsonrpc": "2.0", "id": req_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})


def main() -> None:
    global GRANDCHILD
    if MODE == "exit":
        sys.stderr.write("fatal: cannot start\n")
        sys.stderr.flush()
        sys.exit(3)
    if MODE == "grandchild":  # inherits our stdio and outlives us by 3 s (long enough to hold a teardown)
        watch = f"import os, time\nwhile os.getppid() == {os.getpid()}: time.sleep(0.1)\ntime.sleep(3)"
        GRANDCHILD = subprocess.Popen([sys.executable, "-c", watch])
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
        except ValueError:
            continue
        SEEN.append(request)
        if MODE == "silent" or "id" not in request:
            continue
        req_id, method, params = request["id"], request.get("method"), request.get("params") or {}
        if method == "initialize":
            if MODE == "noinit":
                send({"jsonrpc": "2.0", "id": req_id, "error": {"code": -32000, "message": "not ready"}})
                continue
            reply(req_id, {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}},
                           "serverInfo": {"name": "raw", "version": "1.0"}})
        elif method == "tools/list":
            if MODE == "listfail":
                send({"jsonrpc": "2.0", "id": req_id, "error": {"code": -32603, "message": "no list today"}})
            elif MODE == "badtools":
                reply(req_id, {"tools": [{"name": 5, "description": "bad"}]})
            elif MODE == "weirdtools":
                if params.get("cursor"):
                    reply(req_id, {"tools": [{"name": "second_page"}]})
                else:
                    reply(req_id, {"tools": ["not an object", {"name": "bare"},
                                              {"name": "nullschema", "description": "d", "inputSchema": None}],
                                   "nextCursor": "page2"})
            else:
                reply(req_id, {"tools": TOOLS})
        elif method == "tools/call":
            call_tool(req_id, params.get("name", ""), params.get("arguments") or {})
        else:
            send({"jsonrpc": "2.0", "id": req_id, "error": {"code": -32601, "message": f"Method not found: {method}"}})


if __name__ == "__main__":
    main()
