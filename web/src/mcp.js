// MCP servers the user adds in Settings, kept as llama-server's web UI keeps them: its mcpServers setting, a JSON
// list of { url, headers, enabled, useProxy, name? } (headers: a JSON object, as text). The page connects to each
// enabled one and offers its tools to the model beside the server's own; the model's calls go from the browser to
// the MCP server, or through this server's /cors-proxy (--ui-mcp-proxy) to one that does not allow the page's
// origin. The MCP client (mcp.min.mjs, the official SDK) is loaded when the first server is connected.

let library = null
const client = (base) => (library ??= import(/* @vite-ignore */ new URL('mcp.min.mjs', base).href))

const connections = new Map() // a server's key -> { status: 'connecting'|'ready'|'error', error?, tools, conn, done }

/** The servers of an mcpServers setting; [] for none or a value that is not a JSON list. */
export function parseServers(raw) {
  let list
  try {
    list = typeof raw === 'string' ? (raw.trim() ? JSON.parse(raw) : []) : raw
  } catch {
    return []
  }
  if (!Array.isArray(list)) return []
  return list.filter((s) => s && typeof s === 'object').map((s) => ({
    url: typeof s.url === 'string' ? s.url.trim() : '',
    headers: typeof s.headers === 'string' ? s.headers.trim() : '',
    enabled: Boolean(s.enabled),
    useProxy: Boolean(s.useProxy),
    ...(typeof s.name === 'string' && s.name.trim() ? { name: s.name.trim() } : {}),
  }))
}

/** What is wrong with a server's settings, or null: a URL that is not http(s), headers that are not a JSON object
 * of strings. */
export function serverProblem(server) {
  let url
  try {
    url = new URL(server.url)
  } catch {
    return 'the URL is not a URL'
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'the URL must be http:// or https://'
  if (server.headers) {
    let headers
    try {
      headers = JSON.parse(server.headers)
    } catch {
      return 'the headers are not JSON'
    }
    if (!headers || typeof headers !== 'object' || Array.isArray(headers) ||
        Object.values(headers).some((v) => typeof v !== 'string')) {
      return 'the headers must be a JSON object of strings, e.g. {"Authorization": "Bearer …"}'
    }
  }
  return null
}

let proxyHeaders = {} // this server's own headers (its API key) for requests through its proxy

// a connection stands for these settings (and, through the proxy, this server's key: a new key connects anew)
const keyOf = (server) => JSON.stringify([server.url, server.headers, server.useProxy, server.useProxy ? proxyHeaders : null])
const label = (server) => server.name || new URL(server.url).host

/**
 * Connect to the enabled servers not yet connected (or that could not be reached: the settings or the API key
 * may have changed since) and close those no longer enabled. `base`: where the page's
 * assets and this server's API are; `own`: the headers for this server (its API key, for the proxy);
 * `changed()`: called whenever a server's state changes. Resolves once every connection has settled.
 */
export function syncServers(servers, { base, own, changed }) {
  proxyHeaders = own
  const wanted = new Map(servers.filter((s) => s.enabled && !serverProblem(s)).map((s) => [keyOf(s), s]))
  for (const [key, entry] of connections) {
    if (wanted.has(key) && entry.status !== 'error') continue // one that failed is tried again
    connections.delete(key)
    entry.done.then(() => entry.conn?.close()).catch(() => {})
  }
  for (const [key, server] of wanted) {
    if (connections.has(key)) continue
    const entry = { server, status: 'connecting', tools: [], prompts: [], resources: [], conn: null }
    entry.done = client(base)
      .then((mcp) => mcp.connect({ url: server.url, headers: server.headers ? JSON.parse(server.headers) : {},
        proxy: server.useProxy ? new URL('cors-proxy', base).href : null, own: proxyHeaders }))
      .then((conn) => Object.assign(entry, { status: 'ready', conn, tools: conn.tools, prompts: conn.prompts,
        resources: conn.resources }))
      .catch((err) => Object.assign(entry, { status: 'error', error: err?.message || String(err) }))
      .finally(changed)
    connections.set(key, entry)
  }
  changed()
  return Promise.all([...connections.values()].map((e) => e.done))
}

/** Resolves once the connections started have settled (a chat request waits for the tools it may offer). */
export const mcpSettled = () => Promise.all([...connections.values()].map((e) => e.done))

/** A server's state for the settings: connecting, its tools, or why it could not connect. */
export function serverStatus(server) {
  const problem = serverProblem(server)
  if (problem) return { status: 'error', text: problem }
  if (!server.enabled) return { status: 'off', text: 'off' }
  const entry = connections.get(keyOf(server))
  if (!entry || entry.status === 'connecting') return { status: 'connecting', text: 'connecting…' }
  if (entry.status === 'error') return { status: 'error', text: `cannot connect: ${entry.error}` }
  const names = entry.tools.map((t) => t.name)
  const count = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`
  const extras = [entry.prompts.length && count(entry.prompts.length, 'prompt'),
    entry.resources.length && count(entry.resources.length, 'resource')].filter(Boolean)
  return { status: 'ready',
    text: `${count(names.length, 'tool')}${names.length ? `: ${names.join(', ')}` : ''}${extras.map((e) => `; ${e}`).join('')}` }
}

/** The prompts and resources of the connected servers, which the user may attach to a message:
 * { kind: 'prompt', name, description, arguments, server, entry } or { kind: 'resource', name, uri, description,
 * mimeType, server, entry }. */
export function mcpExtras() {
  const items = []
  for (const entry of connections.values()) {
    if (entry.status !== 'ready') continue
    const server = label(entry.server)
    for (const p of entry.prompts) {
      if (typeof p?.name !== 'string') continue
      items.push({ kind: 'prompt', name: p.name, description: p.description ?? '', server, entry,
        arguments: Array.isArray(p.arguments) ? p.arguments.filter((a) => typeof a?.name === 'string') : [] })
    }
    for (const r of entry.resources) {
      if (typeof r?.uri !== 'string') continue
      items.push({ kind: 'resource', name: r.name || r.uri, uri: r.uri, description: r.description ?? '',
        mimeType: r.mimeType ?? '', server, entry })
    }
  }
  return items
}

const partText = (content) => (typeof content === 'string' ? content
  : content?.type === 'text' ? content.text ?? ''
    : content?.type === 'resource' ? content.resource?.text ?? '' : '')

/** A prompt (one of mcpExtras()) with its arguments: its messages' text, a blank line apart (as llama-server's UI
 * attaches it). */
export async function promptText(item, args) {
  const result = await item.entry.conn.getPrompt(item.name, args)
  return (result?.messages ?? []).map((m) => partText(m?.content)).filter(Boolean).join('\n\n')
}

/** A resource (one of mcpExtras()): its text, and its images as data: URLs. */
export async function resourceContents(item) {
  const result = await item.entry.conn.readResource(item.uri)
  const texts = []
  const images = []
  for (const c of result?.contents ?? []) {
    if (typeof c?.text === 'string') texts.push(c.text)
    else if (typeof c?.blob === 'string' && /^image\//.test(c.mimeType ?? '')) images.push(`data:${c.mimeType};base64,${c.blob}`)
  }
  return { text: texts.join('\n\n'), images }
}

/**
 * The tools of the connected servers, as chat request tools: { name, server, definition, annotations, entry }.
 * A name already `taken` (the server's own tools, an earlier MCP server's) is left out: a call must say which
 * tool it means.
 */
export function mcpTools(taken = []) {
  const names = new Set(taken)
  const tools = []
  for (const entry of connections.values()) {
    if (entry.status !== 'ready') continue
    for (const tool of entry.tools) {
      if (typeof tool?.name !== 'string' || names.has(tool.name)) continue
      names.add(tool.name)
      tools.push({
        name: tool.name,
        server: label(entry.server),
        annotations: tool.annotations ?? {},
        entry,
        definition: { type: 'function', function: { name: tool.name, description: tool.description ?? '',
          parameters: tool.inputSchema ?? { type: 'object', properties: {} } } },
      })
    }
  }
  return tools
}

/** One content item of a tool's result as text (an image or audio as a note of what it was: its base64 would
 * fill the model's context). */
function contentText(item) {
  if (item?.type === 'text') return item.text ?? ''
  if (item?.type === 'resource') return item.resource?.text ?? `[resource ${item.resource?.uri ?? ''}]`
  if (item?.type === 'resource_link') return `[resource ${item.uri ?? ''}${item.name ? ` (${item.name})` : ''}]`
  if (item?.type === 'image' || item?.type === 'audio') {
    return `[${item.mimeType ?? item.type}: ${Math.floor(((item.data ?? '').length * 3) / 4)} bytes]`
  }
  return JSON.stringify(item)
}

/** Call an MCP tool (one of mcpTools()), for at most `timeoutMs`; its result as the text the model gets: what it
 * wrote, or {"error": ...} (as the server's MCP tools answer /tools). */
export async function callMcpTool(tool, args, timeoutMs) {
  try {
    const result = await tool.entry.conn.call(tool.name, args, timeoutMs)
    const items = Array.isArray(result?.content) ? result.content : []
    let text = items.map(contentText).filter(Boolean).join('\n')
    if (!text && result?.structuredContent) text = JSON.stringify(result.structuredContent)
    return result?.isError ? JSON.stringify({ error: text || 'the tool failed' }) : text
  } catch (err) {
    return JSON.stringify({ error: `${tool.server}: ${err?.message || String(err)}` })
  }
}
