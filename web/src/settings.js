// The settings dialog: what it shows (llama-server UI's settings, with its names), checking a value before it is
// saved, and the MCP servers' rows (URL, headers, on, through this server) with each one's state.
import { $, download, h, toast } from './dom.js'
import { parseServers, serverProblem, serverStatus } from './mcp.js'
import { SAMPLING_FIELDS, parseCustomJson, parseSettingsFile, saveSettings, settingsFile } from './store.js'

let state = null // the page's: its settings and their defaults, the server's tools, whether it proxies
let saved = () => {}

/** Wire the dialog to the page's `app` state; `onSaved()` runs after each save. */
export function initSettings(app, onSaved) {
  state = app
  saved = onSaved
  $('#open-settings').addEventListener('click', openSettings)
  $('#settings-form').addEventListener('submit', saveSettingsForm)
  $('#settings-cancel').addEventListener('click', () => $('#settings').close())
}

/** Open the settings with what is saved now. */
export function openSettings() {
  const form = $('#settings-form')
  const s = state.settings
  form.replaceChildren(...[
    h('label', {}, 'System prompt', h('textarea', { name: 'systemPrompt', rows: 3 })),
    samplingGrid(SAMPLING_FIELDS.filter((f) => !f[3])),
    h('details', { class: 'more', 'data-testid': 'more-sampling' }, h('summary', {}, 'More sampling'),
      samplingGrid(SAMPLING_FIELDS.filter((f) => f[3])),
      h('label', {}, 'Samplers, in order (names separated by ";", e.g. top_k;typ_p;top_p;min_p;temperature)',
        h('input', { name: 'samplers', placeholder: 'server default', autocomplete: 'off' })),
      h('label', { class: 'check' }, h('input', { name: 'backend_sampling', type: 'checkbox', value: 'on' }),
        'Sample on the accelerator (backend sampling) where the server can'),
      h('label', {}, 'Custom JSON merged into every request (an object)',
        h('textarea', { name: 'customJson', rows: 2, placeholder: '{"n_probs": 3}', spellcheck: 'false' }))),
    h('label', { class: 'check' }, h('input', { name: 'excludeReasoningFromContext', type: 'checkbox', value: 'on' }),
      "Don't send the model's past reasoning back with the conversation"),
    h('label', { class: 'check' }, h('input', { name: 'preEncodeConversation', type: 'checkbox', value: 'on' }),
      'After each reply, have the server read the conversation ahead (the next message starts sooner)'),
    h('label', { class: 'check' }, h('input', { name: 'disableReasoningParsing', type: 'checkbox', value: 'on' }),
      "Don't separate the reasoning: the server leaves the model's thinking in the text (reasoning_format none)"),
    h('details', { class: 'more', 'data-testid': 'titles' }, h('summary', {}, 'Conversation titles'),
      h('label', { class: 'check' }, h('input', { name: 'titleGenerationUseFirstLine', type: 'checkbox', value: 'on' }),
        'Name a conversation by the first line of its first message (off: all of it)'),
      h('label', { class: 'check' }, h('input', { name: 'titleGenerationUseLLM', type: 'checkbox', value: 'on' }),
        'Then let the model write a title from the first exchange'),
      h('label', {}, 'The prompt for that title ({{USER}}: your first message, {{ASSISTANT}}: the reply)',
        h('textarea', { name: 'titleGenerationPrompt', rows: 4, spellcheck: 'false' }))),
    h('details', { class: 'more', 'data-testid': 'display' }, h('summary', {}, 'Display and input'),
      DISPLAY_CHECKBOXES.map(([name, label]) =>
        h('label', { class: 'check' }, h('input', { name, type: 'checkbox', value: 'on' }), label)),
      h('label', {}, 'Custom CSS (applied to this page)',
        h('textarea', { name: 'customCss', rows: 2, placeholder: '.message.user { font-style: italic; }', spellcheck: 'false' }))),
    h('label', {}, 'API key (for servers started with --api-key)',
      h('input', { name: 'apiKey', type: 'password', autocomplete: 'off' })),
    h('label', {}, 'Paste longer text than this (characters) as a text file; 0: never',
      h('input', { name: 'pasteLongTextToFileLen', inputmode: 'numeric' })),
    h('label', {}, 'Theme', h('select', { name: 'theme' },
      ['auto', 'light', 'dark'].map((t) => h('option', { value: t }, t)))),
    h('label', { class: 'check' }, h('input', { name: 'pdfAsImage', type: 'checkbox', value: 'on' }),
      'Send PDFs as page images (to a model with vision; others get their text)'),
    h('label', {}, 'Scale down an attached image of more megapixels than this (0: only sides over 1536 pixels)',
      h('input', { name: 'maxImageMPixels', inputmode: 'decimal' })),
    state.tools.length > 0 && h('label', { class: 'check' }, h('input', { name: 'tools', type: 'checkbox', value: 'on' }),
      `Let the model call the server's tools (${state.tools.map((t) => t.tool).join(', ')}); those that write ask first`),
    h('label', { class: 'check' }, h('input', { name: 'jsSandboxEnabled', type: 'checkbox', value: 'on' }),
      'Let the model run JavaScript in a sandbox in this page (run_javascript: no network, no access to the page)'),
    h('div', { class: 'grid' },
      h('label', {}, 'Tool-calling replies in a row, at most', h('input', { name: 'agenticMaxTurns', inputmode: 'numeric' })),
      h('label', {}, 'MCP tool timeout (seconds)', h('input', { name: 'mcpRequestTimeoutSeconds', inputmode: 'numeric' }))),
    mcpFieldset(),
    fileFieldset(),
  ].filter(Boolean))
  for (const el of form.elements) {
    if (!el.name) continue // the MCP servers' rows fill themselves
    if (el.type === 'checkbox') el.checked = s[el.name] === 'on'
    else el.value = s[el.name] ?? ''
  }
  if (!$('#settings').open) $('#settings').showModal()
}

// ---------------------------------------------------------------- settings files

/** Export the saved settings to a file, or import one (this UI's or llama-server UI's: the same format). */
function fileFieldset() {
  const sensitive = h('input', { type: 'checkbox', 'data-testid': 'settings-export-sensitive' })
  const picker = h('input', { type: 'file', accept: '.json,application/json', hidden: true,
    'data-testid': 'settings-import-file', onchange: () => importSettings(picker) })
  return h('fieldset', { class: 'settings-file' }, h('legend', {}, 'Settings file'),
    h('button', { type: 'button', 'data-testid': 'settings-export', onclick: () => download(
      `llama_settings_${new Date().toISOString().slice(0, 10)}.json`,
      settingsFile(state.settings, state.defaults, sensitive.checked)) }, 'Export settings'),
    h('label', { class: 'check' }, sensitive, 'with the API key and MCP headers'),
    h('button', { type: 'button', 'data-testid': 'settings-import', onclick: () => picker.click() }, 'Import settings…'),
    picker)
}

async function importSettings(picker) {
  const file = picker.files[0]
  picker.value = ''
  if (!file) return
  try {
    Object.assign(state.settings, parseSettingsFile(await file.text()))
  } catch (err) {
    toast(`Import failed: ${err.message}`)
    return
  }
  saveSettings(state.settings, state.defaults)
  openSettings() // the form shows what was imported
  saved()
  toast(`Imported settings from ${file.name}`)
}

// ---------------------------------------------------------------- MCP servers

/** The MCP servers' part of the settings: a row per server (URL, headers, on, through this server), its state. */
function mcpFieldset() {
  const rows = h('div', { id: 'mcp-rows' })
  for (const server of parseServers(state.settings.mcpServers)) rows.append(mcpRow(server))
  return h('fieldset', { class: 'mcp', 'data-testid': 'mcp-servers' },
    h('legend', {}, 'MCP servers'),
    h('p', { class: 'hint' }, 'The model may call the tools of the servers that are on (Streamable HTTP or SSE). ',
      state.corsProxy ? 'A server that does not allow this page (CORS) can be reached through this server.'
        : 'A server that does not allow this page (CORS) needs this server started with --ui-mcp-proxy.'),
    rows,
    h('button', { type: 'button', 'data-testid': 'mcp-add', onclick: () => { rows.append(mcpRow()); rows.lastChild.querySelector('input').focus() } },
      '+ Add MCP server'))
}

function mcpRow(server = { url: '', headers: '', enabled: true, useProxy: false }) {
  const row = h('div', { class: 'mcp-row', 'data-testid': 'mcp-server' },
    h('input', { 'data-mcp': 'url', type: 'url', placeholder: 'https://host/mcp', 'aria-label': 'MCP server URL', value: server.url }),
    h('input', { 'data-mcp': 'headers', placeholder: '{"Authorization": "Bearer …"} (optional)', 'aria-label': 'Headers (JSON)',
      value: server.headers, autocomplete: 'off' }),
    h('label', { class: 'check' }, h('input', { 'data-mcp': 'enabled', type: 'checkbox', checked: server.enabled }), 'on'),
    h('label', { class: 'check', title: state.corsProxy ? '' : 'the server was started without --ui-mcp-proxy' },
      h('input', { 'data-mcp': 'useProxy', type: 'checkbox', checked: server.useProxy, disabled: !state.corsProxy && !server.useProxy }),
      'through this server'),
    h('button', { type: 'button', class: 'icon', title: 'Remove', 'aria-label': 'Remove this MCP server', onclick: () => row.remove() }, '×'),
    h('small', { class: 'mcp-status', 'data-testid': 'mcp-status' }))
  if (server.name) row.dataset.name = server.name
  row.addEventListener('input', () => showMcpStatus())
  showMcpStatus(row)
  return row
}

/** The server a settings row describes. */
function rowServer(row) {
  const value = (key) => row.querySelector(`[data-mcp="${key}"]`)
  return {
    url: value('url').value.trim(), headers: value('headers').value.trim(), enabled: value('enabled').checked,
    useProxy: value('useProxy').checked, ...(row.dataset.name ? { name: row.dataset.name } : {}),
  }
}

/** Each settings row's state (connecting, its tools, an error), as it is now. */
export function showMcpStatus(only) {
  for (const row of only ? [only] : document.querySelectorAll('.mcp-row')) {
    const server = rowServer(row)
    const { status, text } = server.url ? serverStatus(server) : { status: 'off', text: '' }
    const el = row.querySelector('.mcp-status')
    el.textContent = text
    el.dataset.status = status
  }
}

/** The rows as the mcpServers setting; false (the form says why) when a row's URL or headers are wrong. */
function readMcpRows() {
  const servers = []
  for (const row of document.querySelectorAll('.mcp-row')) {
    const server = rowServer(row)
    if (!server.url && !server.headers) continue // an empty row
    const problem = serverProblem(server)
    const field = row.querySelector(`[data-mcp="${problem?.startsWith('the headers') ? 'headers' : 'url'}"]`)
    field.setCustomValidity(problem ? `MCP server: ${problem}` : '')
    if (problem) {
      field.reportValidity()
      field.addEventListener('input', () => field.setCustomValidity(''), { once: true })
      return false
    }
    servers.push(server)
  }
  return servers.length ? JSON.stringify(servers) : ''
}

// llama-server UI's display settings (the same names and defaults)
const DISPLAY_CHECKBOXES = [
  ['sendOnEnter', 'Enter sends the message (off: Ctrl+Enter sends, Enter is a new line)'],
  ['renderUserContentAsMarkdown', 'Show your messages as markdown'],
  ['showThoughtInProgress', 'Show the reasoning while the model thinks'],
  ['alwaysShowToolCallContent', 'Show tool calls and results unfolded'],
  ['showMessageStats', 'Show tokens and speed under each reply'],
  ['disableAutoScroll', 'Do not scroll along with a streaming reply'],
  ['showSystemMessage', 'Show the system prompt at the top of each conversation'],
  ['renderThinkingAsMarkdown', 'Show the reasoning as markdown (off: as plain text)'],
  ['showRawOutputSwitch', 'A switch on each reply to see it as plain text'],
  ['showBuildVersion', "Show the server's build in the corner"],
]

const samplingGrid = (fields) => h('div', { class: 'grid' }, fields.map(([key, label]) =>
  h('label', {}, label, h('input', { name: key, inputmode: 'decimal', placeholder: 'server default' }))))

/** Save the form (unless a field is wrong: the form says which), then tell the page. */
function saveSettingsForm(event) {
  event.preventDefault()
  const custom = $('#settings-form [name="customJson"]')
  try {
    parseCustomJson(custom.value)
    custom.setCustomValidity('')
  } catch (err) {
    custom.setCustomValidity(`Custom JSON: ${err.message}`)
    custom.closest('details').open = true
    custom.reportValidity()
    custom.addEventListener('input', () => custom.setCustomValidity(''), { once: true })
    return
  }
  const mcpServers = readMcpRows()
  if (mcpServers === false) return
  state.settings.mcpServers = mcpServers
  const form = $('#settings-form')
  for (const el of form.elements) {
    if (el.name) state.settings[el.name] = el.type === 'checkbox' ? (el.checked ? 'on' : '') : el.value
  }
  saveSettings(state.settings, state.defaults)
  $('#settings').close()
  saved()
}
