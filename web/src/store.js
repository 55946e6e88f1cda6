// Conversations and settings, kept in the browser's localStorage.
//
// A conversation is a tree of messages (edits and regenerations make
// siblings); `current` is the leaf of the branch on screen.
//   { id, name, created, updated, current, roots: [id], nodes: { id: node } }
//   node: { id, parent, children: [id], role, content, images?: [data URL], files?: [{ name, text }], reasoning?,
//           timings?, error?,
//           stopped?, streaming?, interrupted?, finish?, toolCalls?: [{ id, name, arguments }], toolCallId?,
//           toolName?, prefix? }   finish: the reply's finish_reason (its tool calls run only when it is
//           "tool_calls"); prefix: { content, reasoning }, what a reply being continued held before (while streaming)
// role: user, assistant, or tool (the result of a server tool the assistant's toolCalls asked for: /tools).
// streaming: the reply was still generating when last saved; the server keeps such a stream (the request
// carried X-Conversation-Id: the conversation's id), and the page resumes it when loaded again. At most one
// node of a conversation is streaming. interrupted: a streaming reply whose stream was gone when the page
// came back (what was saved stays).

const CONVS_KEY = 'llamatwist.conversations'
const SETTINGS_KEY = 'llamatwist.settings'

// llama-server UI's prompt for a title ({{USER}}, {{ASSISTANT}}: the first exchange)
export const TITLE_PROMPT = 'Based on the following interaction, generate a short, concise title (maximum 6-8 words) that '
  + 'captures the main topic. Return ONLY the title text, nothing else. Do not use quotes.\n\nUser: {{USER}}\n\n'
  + 'Assistant: {{ASSISTANT}}\n\nTitle:'

export const DEFAULT_SETTINGS = {
  systemPrompt: '',
  temperature: '',
  top_k: '',
  top_p: '',
  min_p: '',
  max_tokens: '',
  repeat_penalty: '',
  presence_penalty: '',
  frequency_penalty: '',
  seed: '',
  typ_p: '',
  dynatemp_range: '',
  dynatemp_exponent: '',
  xtc_probability: '',
  xtc_threshold: '',
  repeat_last_n: '',
  dry_multiplier: '',
  dry_base: '',
  dry_allowed_length: '',
  dry_penalty_last_n: '',
  samplers: '', // the samplers' order, names separated by ';' (llama-server's UI setting): blank = server default
  backend_sampling: '', // 'on': sample on the accelerator where the server can
  // a JSON object merged into every chat request, last (llama-server's UI setting)
  customJson: '',
  excludeReasoningFromContext: '', // 'on': an assistant's reasoning is not sent back with the conversation
  apiKey: '',
  theme: 'auto',
  model: '', // router mode: the model chosen in the header's picker
  tools: '', // 'on': the model may call the server's tools (GET /tools; the server runs them: --tools, MCP)
  // a paste longer than this many characters is attached as a text file instead (llama-server's UI setting;
  // 0: never)
  pasteLongTextToFileLen: '2500',
  pdfAsImage: '', // 'on': a PDF goes to a vision model as its pages' images (llama-server's UI setting)
  // the MCP servers whose tools the model may call (llama-server's UI setting): a JSON list of
  // { url, headers, enabled, useProxy, name? } (mcp.js); '' for none
  mcpServers: '',
  // display and input (llama-server's UI settings, its defaults)
  sendOnEnter: 'on',
  renderUserContentAsMarkdown: 'on',
  showThoughtInProgress: 'on',
  alwaysShowToolCallContent: '',
  showMessageStats: 'on',
  disableAutoScroll: '',
  customCss: '', // CSS added to the page
  // the reasoning picker (a model that thinks): '' the server's default, off, low, medium, high (budgets of 512,
  // 2048, 8192 tokens) or max
  reasoningEffort: '',
  jsSandboxEnabled: '', // 'on': the model may call run_javascript, run in a sandbox in the page (sandbox.js)
  agenticMaxTurns: '10', // replies in a row that may call tools before the page stops running them
  mcpRequestTimeoutSeconds: '300', // how long an MCP tool may take
  // a new conversation's name (llama-server's UI settings): the first non-empty line of its first message (off:
  // all of it), and then, when titleGenerationUseLLM is on, a title the model writes from the first exchange
  titleGenerationUseFirstLine: 'on',
  titleGenerationUseLLM: '',
  titleGenerationPrompt: TITLE_PROMPT,
  showSystemMessage: 'on', // the system prompt shown at the top of each conversation
  renderThinkingAsMarkdown: 'on', // off: the reasoning as plain text
  showRawOutputSwitch: '', // a switch on each reply to see it as plain text
  disableReasoningParsing: '', // requests ask for reasoning_format "none": the model's thinking stays in the text
  showBuildVersion: '', // the server's build in the page's corner
  preEncodeConversation: '', // 'on': after each reply the conversation is sent again to fill the server's cache
  maxImageMPixels: '0', // an image of more megapixels is scaled down when attached; 0: only the 1536-pixel side limit
}

// the settings shown as checkboxes: 'on' or ''; --ui-config may give them as booleans
const CHECKBOXES = ['tools', 'pdfAsImage', 'backend_sampling', 'excludeReasoningFromContext', 'sendOnEnter',
  'renderUserContentAsMarkdown', 'showThoughtInProgress', 'alwaysShowToolCallContent', 'showMessageStats',
  'disableAutoScroll', 'jsSandboxEnabled', 'titleGenerationUseFirstLine', 'titleGenerationUseLLM', 'showSystemMessage', 'renderThinkingAsMarkdown',
  'showRawOutputSwitch', 'disableReasoningParsing', 'showBuildVersion', 'preEncodeConversation']
// the settings that hold JSON as text; --ui-config may give them as JSON values
const JSON_TEXT = ['mcpServers', 'customJson']

const THEMES = ['auto', 'light', 'dark']
// llama-server's own web UI names for the same settings, as --ui-config may give them
const UI_CONFIG_ALIASES = { systemMessage: 'systemPrompt' }

/** The sampling fields sent with each request when set (blank = server default); those marked 'more' are shown
 * folded. */
export const SAMPLING_FIELDS = [
  ['temperature', 'Temperature', 'float'],
  ['top_k', 'Top-k', 'int'],
  ['top_p', 'Top-p', 'float'],
  ['min_p', 'Min-p', 'float'],
  ['max_tokens', 'Max tokens', 'int'],
  ['repeat_penalty', 'Repeat penalty', 'float'],
  ['presence_penalty', 'Presence penalty', 'float'],
  ['frequency_penalty', 'Frequency penalty', 'float'],
  ['seed', 'Seed', 'int'],
  ['typ_p', 'Typical-p', 'float', 'more'],
  ['dynatemp_range', 'Dynamic temperature range', 'float', 'more'],
  ['dynatemp_exponent', 'Dynamic temperature exponent', 'float', 'more'],
  ['xtc_probability', 'XTC probability', 'float', 'more'],
  ['xtc_threshold', 'XTC threshold', 'float', 'more'],
  ['repeat_last_n', 'Repeat last N', 'int', 'more'],
  ['dry_multiplier', 'DRY multiplier', 'float', 'more'],
  ['dry_base', 'DRY base', 'float', 'more'],
  ['dry_allowed_length', 'DRY allowed length', 'int', 'more'],
  ['dry_penalty_last_n', 'DRY penalty last N', 'int', 'more'],
]

function load(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key))
    return value ?? fallback
  } catch {
    return fallback
  }
}

/**
 * Settings as llama-server's UI writes them (--ui-config, its settings files) in this UI's form: only the keys
 * the UI knows count (llama-server's names for them too); a value must be a string or a finite number (kept as the
 * text the settings form shows), a checkbox may be a boolean, a JSON setting a JSON value.
 */
function fromUiConfig(config) {
  const settings = {}
  if (!config || typeof config !== 'object' || Array.isArray(config)) return settings
  const given = { ...config }
  for (const [alias, key] of Object.entries(UI_CONFIG_ALIASES)) {
    if (Object.hasOwn(given, alias) && !Object.hasOwn(given, key)) given[key] = given[alias]
  }
  for (const key of Object.keys(DEFAULT_SETTINGS)) {
    if (!Object.hasOwn(given, key)) continue
    let value = CHECKBOXES.includes(key) && typeof given[key] === 'boolean' ? (given[key] ? 'on' : '') : given[key]
    if (JSON_TEXT.includes(key) && value && typeof value === 'object') value = JSON.stringify(value)
    if (typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value))) {
      if (key === 'theme' && !THEMES.includes(value)) continue
      settings[key] = String(value)
    }
  }
  return settings
}

/** The defaults: DEFAULT_SETTINGS overridden by the server's /props ui_settings (--ui-config). */
export function settingsDefaults(uiSettings) {
  return { ...DEFAULT_SETTINGS, ...fromUiConfig(uiSettings) }
}

// the settings that hold numbers (llama-server's UI keeps them as numbers)
const NUMBERS = [...SAMPLING_FIELDS.map(([key]) => key), 'pasteLongTextToFileLen', 'agenticMaxTurns',
  'mcpRequestTimeoutSeconds', 'maxImageMPixels']

/**
 * The settings as llama-server UI's settings file ({ config, userOverrides, timestamp, version: 1 }; its names and
 * types: checkboxes as booleans, numbers as numbers, a blank number left out), so either UI reads the other's.
 * Without `sensitive` the API key and the MCP servers' headers are left out.
 */
export function settingsFile(settings, defaults, sensitive) {
  const config = {}
  for (const [key, value] of Object.entries(settings)) {
    const name = Object.entries(UI_CONFIG_ALIASES).find(([, own]) => own === key)?.[0] ?? key
    if (CHECKBOXES.includes(key)) config[name] = value === 'on'
    else if (NUMBERS.includes(key)) {
      if (String(value).trim() !== '' && Number.isFinite(Number(value))) config[name] = Number(value)
    } else config[name] = value
  }
  if (!sensitive) {
    delete config.apiKey
    try {
      config.mcpServers = JSON.stringify(JSON.parse(config.mcpServers || '[]').map(({ headers, ...server }) => server))
    } catch {
      delete config.mcpServers
    }
  }
  const userOverrides = Object.keys(settings).filter((key) => settings[key] !== defaults[key])
  return JSON.stringify({ config, timestamp: Date.now(), userOverrides, version: 1 }, null, 2)
}

/** The settings a settings file holds (this UI's or llama-server UI's), in this UI's form; throws on a bad file. */
export function parseSettingsFile(text) {
  let data
  try {
    data = JSON.parse(text)
  } catch {
    throw new Error('not a JSON file')
  }
  if (!data || typeof data !== 'object' || !data.config || typeof data.config !== 'object' || Array.isArray(data.config)) {
    throw new Error('not a settings file (no "config" object)')
  }
  const settings = fromUiConfig(data.config)
  if (!Object.keys(settings).length) throw new Error('it holds no setting this page knows')
  return settings
}

/** What the user saved (only the values that differ from the defaults they were saved against). */
function storedSettings() {
  const value = load(SETTINGS_KEY, {})
  return value && typeof value === 'object' && !Array.isArray(value) ? value : {}
}

/** The settings: the defaults (settingsDefaults), overridden by what the user saved. */
export function loadSettings(defaults = DEFAULT_SETTINGS) {
  const settings = { ...defaults }
  for (const [key, value] of Object.entries(storedSettings())) {
    if (Object.hasOwn(DEFAULT_SETTINGS, key) && typeof value === 'string') settings[key] = value
  }
  return settings
}

/** Keeps the values that differ from the defaults, so a server's ui_settings still apply to the others. */
export function saveSettings(settings, defaults = DEFAULT_SETTINGS) {
  const changed = {}
  for (const [key, value] of Object.entries(settings)) if (value !== defaults[key]) changed[key] = value
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(changed))
}

export function newId() {
  return (crypto.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`)
}

export function loadConversations() {
  const list = load(CONVS_KEY, [])
  return Array.isArray(list) ? list.filter(isConversation).map((c) => cleanFlags(c, true)) : []
}

export function saveConversations(list) {
  localStorage.setItem(CONVS_KEY, JSON.stringify(list))
}

function isConversation(c) {
  if (!c || typeof c !== 'object' || typeof c.id !== 'string' || typeof c.name !== 'string') return false
  if (!Array.isArray(c.roots) || !c.nodes || typeof c.nodes !== 'object') return false
  for (const n of Object.values(c.nodes)) {
    if (!n || typeof n.id !== 'string' || typeof n.content !== 'string' || !Array.isArray(n.children)) return false
    if (!['user', 'assistant', 'tool'].includes(n.role)) return false
    if (n.images !== undefined && !(Array.isArray(n.images) && n.images.every(mediaKind))) return false
    if (n.files !== undefined && !(Array.isArray(n.files) && n.files.every(isTextFile))) return false
  }
  return true
}

const FLAGS = ['stopped', 'streaming', 'interrupted']

/** The nodes' flags are booleans or absent; only the newest streaming node of a conversation stays streaming,
 * and none when `keepStreaming` is false (an imported conversation generates nothing here). */
function cleanFlags(c, keepStreaming) {
  let newest = null
  for (const n of Object.values(c.nodes)) {
    for (const flag of FLAGS) if (n[flag] !== undefined && typeof n[flag] !== 'boolean') delete n[flag]
    if (!n.streaming) delete n.streaming
    else if (!keepStreaming || n.role !== 'assistant') delete n.streaming
    else if (newest === null || (n.created ?? 0) >= (newest.created ?? 0)) {
      if (newest) delete newest.streaming
      newest = n
    } else delete n.streaming
  }
  // what a reply being continued held: only while it streams, and only as written
  for (const n of Object.values(c.nodes)) {
    if (!n.streaming || typeof n.prefix?.content !== 'string' || typeof n.prefix?.reasoning !== 'string') delete n.prefix
  }
  return c
}

/** Conversations from an exported JSON file (an array or { conversations }). */
export function parseImport(text) {
  const data = JSON.parse(text)
  const list = Array.isArray(data) ? data : data?.conversations
  if (!Array.isArray(list)) throw new Error('not a conversations export')
  const good = list.filter(isConversation).map((c) => cleanFlags(c, false))
  if (!good.length) throw new Error('no valid conversations in the file')
  return good
}

export function exportJson(list) {
  return JSON.stringify({ format: 'llamatwist-conversations', version: 1, conversations: list }, null, 2)
}

/** A conversation's name from its first message: its first non-empty line (or all of it), else its attachment. */
export function firstMessageTitle(first, useFirstLine) {
  const text = useFirstLine ? first.content.split('\n').find((line) => line.trim()) ?? '' : first.content
  return text.trim().slice(0, 60) || first.files?.[0]?.name || (first.images?.length ? 'Attachment' : 'New chat')
}

/**
 * The request for a title the model writes from the first exchange (the prompt '' is llama-server UI's). Each
 * message goes in cut to its first 1000 characters: enough for a title, and a long reply does not overflow the
 * context.
 */
export function titleRequest(template, user, assistant) {
  const cut = (text) => (text.length > 1000 ? `${text.slice(0, 1000)}…` : text)
  const prompt = (template.trim() ? template : TITLE_PROMPT)
    .replace('{{USER}}', () => cut(user)).replace('{{ASSISTANT}}', () => cut(assistant))
  // no thinking, and a title is short: a model that does not stop is cut
  return { messages: [{ role: 'user', content: prompt }], max_tokens: 48, chat_template_kwargs: { enable_thinking: false } }
}

/** The title in what the model wrote, as llama-server's UI cleans it (a "Title:" and quotes off); '' if too short. */
export function cleanTitle(text) {
  const title = text.trim().replace(/^(Title:|Subject:|Topic:)\s*/i, '').replace(/^"|"$/g, '').trim()
  return title.length >= 3 ? title.split('\n')[0].trim().slice(0, 80) : ''
}

export function newConversation(name = 'New chat') {
  const now = Date.now()
  return { id: newId(), name, created: now, updated: now, current: null, roots: [], nodes: {} }
}

// What a message may hold (its `images`, named before audio and video came): data: URLs only, never a remote
// address the page would fetch.
export const MEDIA_TYPES = {
  image: ['image/png', 'image/jpeg', 'image/webp', 'image/gif'],
  audio: ['audio/wav', 'audio/x-wav', 'audio/wave', 'audio/mpeg', 'audio/mp3', 'audio/flac', 'audio/x-flac'],
  video: ['video/mp4', 'video/webm', 'video/quicktime', 'video/x-matroska', 'video/x-msvideo', 'video/mpeg'],
}

/** 'image', 'audio' or 'video' for a data: URL a message may hold; null for anything else. */
export function mediaKind(url) {
  const mime = typeof url === 'string' ? /^data:([a-z0-9.+/-]+);base64,/.exec(url)?.[1] : undefined
  return Object.keys(MEDIA_TYPES).find((kind) => MEDIA_TYPES[kind].includes(mime)) ?? null
}

/** A text file a message carries: { name, text, kind? } (its text goes to the model with the message; kind 'pdf':
 * the text of a PDF). */
export function isTextFile(f) {
  return !!f && typeof f === 'object' && typeof f.name === 'string' && typeof f.text === 'string'
}

export function addNode(conv, parent, role, content, images = [], files = []) {
  const node = { id: newId(), parent, children: [], role, content, created: Date.now() }
  if (images.length) node.images = [...images]
  if (files.length) node.files = files.map((f) => ({ ...f }))
  conv.nodes[node.id] = node
  if (parent === null) conv.roots.push(node.id)
  else conv.nodes[parent].children.push(node.id)
  conv.current = node.id
  conv.updated = Date.now()
  return node
}

/** The messages from the root to `leaf` (default: the current branch). */
export function branch(conv, leaf = conv.current) {
  const path = []
  for (let id = leaf; id != null; id = conv.nodes[id]?.parent ?? null) path.unshift(conv.nodes[id])
  return path.filter(Boolean)
}

export function siblings(conv, node) {
  return node.parent === null ? conv.roots : conv.nodes[node.parent].children
}

/** The newest leaf below `id` (following the last child). */
export function lastLeaf(conv, id) {
  let node = conv.nodes[id]
  while (node.children.length) node = conv.nodes[node.children[node.children.length - 1]]
  return node.id
}

/** The customJson setting's object (merged into each chat request), or null for none; throws when it is not a
 * JSON object. */
export function parseCustomJson(text) {
  if (!text.trim()) return null
  const value = JSON.parse(text)
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object')
  return value
}
