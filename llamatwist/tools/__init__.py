"""Server tools for AI agents (llama-server's --tools and MCP servers), served at /tools.

base.py says what a tool is; builtin.py holds the seven built-in ones and io.py where they run (the host, a
container, an ssh host); runtime.py owns a --tools-runtime container; mcp.py talks to MCP servers over stdio;
registry.py puts together what one server offers, and service.py runs calls on their own threads.
"""
