// An MCP client for the web UI, on the official SDK (@modelcontextprotocol/sdk, as llama-server's UI uses it).
// Built apart from the page into mcp.min.mjs (vite.mcp.config.js) and served beside it: the SDK is 90 kB gzipped,
// loaded only by a page whose settings name an MCP server.
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js'
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'

// llama-server's /cors-proxy forwards only the headers named with this prefix (the rest are the proxy's own)
const PROXY_HEADER = 'x-llama-server-proxy-header-'
const CLIENT = { name: 'llamatwist-ui', version: '1.0.0' }
const CONNECT_TIMEOUT_MS = 10_000
const CALL_TIMEOUT_MS = 300_000 // a tool may run long (as llama-server's UI: 5 minutes by default)

/**
 * A fetch for the SDK's transports. Through the proxy (`proxy`: the server's /cors-proxy URL) each request goes
 * to /cors-proxy?url=TARGET with every header the SDK or the user set prefixed, so the proxy passes them on;
 * `own` are the headers for this server itself (its API key).
 */
function transportFetch(proxy, own) {
  if (!proxy) return (url, init) => fetch(url, init)
  return (url, init = {}) => {
    const headers = new Headers()
    for (const [key, value] of new Headers(init.headers)) headers.set(PROXY_HEADER + key, value)
    for (const [key, value] of Object.entries(own)) headers.set(key, value)
    const target = new URL(proxy)
    target.searchParams.set('url', String(url))
    return fetch(target, { ...init, headers })
  }
}

async function tryConnect(transport, timeout) {
  const client = new Client(CLIENT, { capabilities: {} })
  await client.connect(transport, { timeout })
  return client
}

/** A connected client: Streamable HTTP, or for a server that refuses it, reached directly, the older HTTP+SSE. */
async function open(target, fetchFn, requestInit, proxy, timeout) {
  try {
    return await tryConnect(new StreamableHTTPClientTransport(target, { fetch: fetchFn, requestInit }), timeout)
  } catch (err) {
    // the legacy transport's POST endpoint is a URL the server names, which the proxy cannot carry
    if (proxy) throw err
    try {
      return await tryConnect(new SSEClientTransport(target, { fetch: fetchFn, requestInit,
        eventSourceInit: { fetch: fetchFn } }), timeout)
    } catch {
      throw err // the Streamable HTTP failure says more
    }
  }
}

// A 404 to a request with a session: the server forgot it (restarted); a new session is opened and the call retried.
const sessionGone = (err) => err instanceof StreamableHTTPError && err.code === 404

/**
 * Connect to the MCP server at `url` and list its tools. `headers`: sent with each request (e.g. Authorization);
 * `proxy`: this server's /cors-proxy URL to go through, or null; `own`: headers for the proxy itself.
 * Returns { tools, prompts, resources (as the server lists them), server, call(name, args, ms?),
 * getPrompt(name, args), readResource(uri), close() }; call() resolves to the tool's result (CallToolResult), or
 * fails after `ms` (default 5 minutes).
 */
export async function connect({ url, headers = {}, proxy = null, own = {}, timeout = CONNECT_TIMEOUT_MS }) {
  const target = new URL(url)
  const fetchFn = transportFetch(proxy, own)
  const reopen = () => open(target, fetchFn, { headers }, proxy, timeout)
  let client = await reopen()
  // every page of a listing (`key`: the list in each answer)
  const all = async (list, key) => {
    const items = []
    let cursor
    do {
      const page = await list(cursor ? { cursor } : {}, { timeout })
      items.push(...(page[key] ?? []))
      cursor = page.nextCursor
    } while (cursor)
    return items
  }
  // a request again on a new session when the server forgot the one it was sent on
  const retried = async (request) => {
    try {
      return await request()
    } catch (err) {
      if (!sessionGone(err)) throw err
      await client.close().catch(() => {})
      client = await reopen()
      return request()
    }
  }
  try {
    const tools = await all((p, o) => client.listTools(p, o), 'tools')
    const caps = client.getServerCapabilities() ?? {}
    // prompts and resources are extras: a server whose listing fails still gives its tools
    const prompts = caps.prompts ? await all((p, o) => client.listPrompts(p, o), 'prompts').catch(() => []) : []
    const resources = caps.resources ? await all((p, o) => client.listResources(p, o), 'resources').catch(() => []) : []
    return {
      tools,
      prompts,
      resources,
      server: client.getServerVersion() ?? null,
      call: (name, args, ms = CALL_TIMEOUT_MS) =>
        retried(() => client.callTool({ name, arguments: args }, undefined, { timeout: ms })),
      getPrompt: (name, args) => retried(() => client.getPrompt({ name, arguments: args }, { timeout })),
      readResource: (uri) => retried(() => client.readResource({ uri }, { timeout })),
      close: () => client.close(),
    }
  } catch (err) {
    await client.close().catch(() => {})
    throw err
  }
}
