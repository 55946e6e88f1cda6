import './style.css'
import { $, BASE, download, h, toast } from './dom.js'
import { copyButton, setMarkdown } from './markdown.js'
import {
  callMcpTool, mcpExtras, mcpSettled, mcpTools, parseServers, promptText, resourceContents, syncServers,
} from './mcp.js'
import { pdfImages, pdfText } from './pdf.js'
import { SANDBOX_TOOL, runJavascript } from './sandbox.js'
import { initSettings, showMcpStatus } from './settings.js'
import { isRecording, startRecording, stopRecording } from './recorder.js'
import {
  SAMPLING_FIELDS, addNode, branch, cleanTitle, exportJson, firstMessageTitle, lastLeaf, loadConversations,
  loadSettings, MEDIA_TYPES, mediaKind, newConversation, parseCustomJson, parseImport, saveConversations,
  saveSettings, settingsDefaults, siblings, titleRequest,
} from './store.js'

const state = {
  conversations: loadConversations(),
  settings: loadSettings(),
  defaults: settingsDefaults(), // DEFAULT_SETTINGS overridden by the server's ui_settings
  activeId: null,
  props: null, // the model's /props (in router mode the chosen model's)
  router: false, // the server is a router (--models-dir): the chat request names the model chosen in the picker
  models: [], // router mode: the ids of its models
  unloaded: null, // router mode: the model the user unloaded (until it answers again)
  propsSeq: 0, // the latest model /props request: an older answer is dropped
  // conversation id -> { convId, nodeId, controller, answered }: the replies streaming (live, or resumed after a
  // reload); each conversation has at most one, and several conversations may generate at once (the server batches)
  generating: new Map(),
  resumed: false, // the replies left generating by an earlier page were looked for
  search: '',
  build: '', // the server's build_info (/props)
  attachments: [], // data: URLs of the images, audio and video the next message carries
  files: [], // the text files the next message carries: { name, text, kind? } (kind 'pdf': a PDF's text)
  tools: [], // the server's tools (GET /tools: --tools, MCP servers); empty when it offers none (403)
  corsProxy: false, // the server proxies for the page (--ui-mcp-proxy): an MCP server may be reached through it
}


const authHeaders = () => (state.settings.apiKey ? { Authorization: `Bearer ${state.settings.apiKey}` } : {})

function headers() {
  return { 'Content-Type': 'application/json', ...authHeaders() }
}

function active() {
  return state.conversations.find((c) => c.id === state.activeId) ?? null
}

function persist() {
  try {
    saveConversations(state.conversations)
  } catch (err) {
    toast(`Could not save conversations: ${err.message}`)
  }
}

// ---------------------------------------------------------------- theme

/** The theme, the user's own CSS (customCss, as llama-server's UI) and what Enter does, from the settings. */
function applyTheme() {
  const theme = state.settings.theme
  document.documentElement.dataset.theme = theme === 'auto'
    ? (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light')
    : theme
  let style = document.getElementById('custom-css')
  if (!style) document.head.append(style = h('style', { id: 'custom-css' }))
  style.textContent = state.settings.customCss
  $('#input').placeholder = state.settings.sendOnEnter === 'on'
    ? 'Type a message (Enter to send, Shift+Enter for a new line)'
    : 'Type a message (Ctrl+Enter to send, Enter for a new line)'
  const build = $('#build-version')
  build.textContent = state.build ? `build ${state.build}` : ''
  build.hidden = state.settings.showBuildVersion !== 'on' || !state.build
}

// ---------------------------------------------------------------- server info

/** The server's ui_settings become the defaults; what the user saved still wins. */
function applyUiSettings(uiSettings) {
  state.defaults = settingsDefaults(uiSettings)
  const settings = loadSettings(state.defaults)
  settings.model ||= state.settings.model // router mode: the model on screen until the list is read again
  state.settings = settings
  applyTheme()
}

// llama.cpp's llama_vocab_type
const VOCAB_TYPES = ['none', 'SPM (SentencePiece)', 'BPE', 'WPM (WordPiece)', 'UGM (Unigram)', 'RWKV', 'PLaMo-2']

/** What the server says of the model on screen (llama-server UI's model information): its /props and its
 * /v1/models entry's meta. */
async function showModelInfo() {
  const props = state.props
  if (!props) return
  const id = state.router ? state.settings.model : props.model_alias ?? props.model_path
  let meta = {}
  try {
    const res = await fetch(BASE + 'v1/models', { headers: headers() })
    const list = res.ok ? (await res.json()).data : []
    meta = (list.find((m) => m.id === id) ?? (state.router ? null : list[0]))?.meta ?? {}
  } catch {
    // the /props part is still worth showing
  }
  const number = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : null)
  const gib = (n) => (typeof n === 'number' ? `${(n / 2 ** 30).toFixed(2)} GiB (${number(n)} bytes)` : null)
  const params = (n) => (typeof n === 'number' ? `${(n / 1e9 >= 1 ? `${(n / 1e9).toFixed(2)}B` : `${(n / 1e6).toFixed(0)}M`)} (${number(n)})` : null)
  const modalities = Object.entries(props.modalities ?? {}).filter(([, on]) => on).map(([kind]) => kind)
  const rows = [
    ['Model', id],
    ['File', props.model_path],
    ['Context size (per slot)', props.default_generation_settings?.n_ctx && `${number(props.default_generation_settings.n_ctx)} tokens`],
    ['Training context', meta.n_ctx_train && `${number(meta.n_ctx_train)} tokens`],
    ['Size', gib(meta.size)],
    ['Parameters', params(meta.n_params)],
    ['Quantization', meta.ftype ?? props.model_ftype],
    ['Embedding size', number(meta.n_embd)],
    ['Vocabulary', meta.n_vocab && `${number(meta.n_vocab)} tokens${VOCAB_TYPES[meta.vocab_type] ? `, ${VOCAB_TYPES[meta.vocab_type]}` : ''}`],
    ['Parallel slots', number(props.total_slots)],
    ['Media', modalities.length ? modalities.join(', ') : 'text only'],
    ['Build', props.build_info],
  ].filter(([, value]) => value != null && value !== '')
  const table = $('#model-table')
  table.replaceChildren(...rows.map(([label, value]) => h('tr', {}, h('th', {}, label), h('td', { 'data-testid': `model-${label}` }, String(value)))))
  if (props.chat_template) {
    table.append(h('tr', {}, h('th', {}, 'Chat template'), h('td', {}, h('details', {}, h('summary', {}, 'show'),
      h('pre', { 'data-testid': 'model-template' }, props.chat_template)))))
  }
  if (!$('#model-dialog').open) $('#model-dialog').showModal()
}

/** An error answer's message, or its HTTP status. */
async function errorMessage(res) {
  try {
    return (await res.json()).error?.message ?? `HTTP ${res.status}`
  } catch {
    return `HTTP ${res.status}`
  }
}

/** The model and its context size in the header (name: router mode's, as the picker shows it; a model
 * named by its file path, as llama-server names one without -a, shows the file's name). */
function showProps(name = state.props.model_alias ?? 'model') {
  const el = $('#model')
  const nCtx = state.props.default_generation_settings?.n_ctx
  const shown = /\.gguf$/i.test(name) ? name.split(/[\\/]/).pop() : name
  const unloaded = state.router && state.unloaded === name ? ' · unloaded (the next message loads it)' : ''
  el.textContent = `${shown}${nCtx ? ` · ctx ${nCtx}` : ''}${unloaded}`
  $('#model-info').hidden = false
  $('#unload-model').hidden = !state.router || !!unloaded
  el.title = state.props.model_path ?? ''
  showContextUse()
}

async function loadProps() {
  const el = $('#model')
  try {
    const res = await fetch(BASE + 'props', { headers: headers() })
    if (res.status === 503) {
      el.textContent = 'Loading model…'
      setTimeout(loadProps, 1000)
      return
    }
    if (res.status === 401) {
      el.textContent = 'API key needed (Settings)'
      return
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    const props = await res.json()
    state.build = typeof props.build_info === 'string' ? props.build_info : ''
    applyUiSettings(props.ui_settings)
    state.corsProxy = props.cors_proxy_enabled === true
    connectMcp()
    await loadTools() // before the header shows the model: the settings offer the tools from then on
    state.router = props.role === 'router'
    if (!state.resumed) { // the server answers (and takes the key): resume the replies still generating
      state.resumed = true
      resumeStreams()
    }
    if (state.router) {
      await loadModels()
      return
    }
    $('#model-select').hidden = true
    state.props = props
    updateComposer()
    showProps()
  } catch (err) {
    el.textContent = `Server unreachable (${err.message})`
  }
}

/** The server's tools (GET /tools), which the model may call when the settings say so. */
async function loadTools() {
  try {
    const res = await fetch(BASE + 'tools', { headers: headers() })
    const list = res.ok ? await res.json() : [] // 403: the server runs without tools
    state.tools = Array.isArray(list) ? list.filter((t) => t?.definition?.function?.name) : []
  } catch {
    state.tools = []
  }
}

const toolsOn = () => state.settings.tools === 'on' && state.tools.length > 0

/** Connect to the MCP servers the settings enable (in the background; a chat request waits for them). */
function connectMcp() {
  syncServers(parseServers(state.settings.mcpServers), { base: BASE, own: authHeaders(), changed: mcpChanged })
}

/** The tools the model is offered: the server's (when the settings say so), the page's run_javascript (when
 * they say so), then the MCP servers'. Each is { name, definition } and how to run it: `own` (the server's),
 * `run` (the page's) or what mcp.js needs. */
function offeredTools() {
  const own = toolsOn() ? state.tools.map((t) => ({ name: t.tool, definition: t.definition, own: t })) : []
  if (state.settings.jsSandboxEnabled === 'on' && !own.some((t) => t.name === SANDBOX_TOOL.function.name)) {
    own.push({ name: SANDBOX_TOOL.function.name, definition: SANDBOX_TOOL, run: runJavascript })
  }
  return [...own, ...mcpTools(own.map((t) => t.name))]
}

// ---------------------------------------------------------------- router mode

/** A router's models (GET v1/models) in the picker; then the chosen one's /props. */
async function loadModels() {
  const el = $('#model')
  let data
  try {
    const res = await fetch(BASE + 'v1/models', { headers: headers() })
    if (!res.ok) throw new Error(await errorMessage(res))
    data = (await res.json()).data
  } catch (err) {
    el.textContent = `Cannot list the models (${err.message})`
    return
  }
  // a model still downloading (POST /models) cannot answer yet
  state.models = (Array.isArray(data) ? data : []).filter((m) => m?.status?.value !== 'downloading')
    .map((m) => m?.id).filter((id) => typeof id === 'string')
  const picker = $('#model-select')
  picker.replaceChildren(...state.models.map((id) => h('option', { value: id }, id)))
  picker.hidden = !state.models.length
  if (!state.models.length) {
    state.props = null
    updateComposer()
    el.textContent = 'No models on this server (add NAME.gguf files to its --models-dir)'
    el.title = ''
    return
  }
  if (!state.models.includes(state.settings.model)) state.settings.model = state.models[0]
  picker.value = state.settings.model
  await loadModelProps()
}

/** The chosen model's /props (its context size, its media): the router loads the model first when needed. */
async function loadModelProps() {
  const name = state.settings.model
  const seq = ++state.propsSeq
  const el = $('#model')
  el.textContent = `Loading ${name}…`
  el.title = ''
  $('#unload-model').hidden = true
  state.props = null
  updateComposer()
  try {
    const res = await fetch(`${BASE}props?model=${encodeURIComponent(name)}`, { headers: headers() })
    if (seq !== state.propsSeq) return // another model was chosen meanwhile
    if (res.status === 503) { // e.g. the router's --models-max: try again
      el.textContent = `Waiting for ${name} (${await errorMessage(res)})…`
      setTimeout(() => { if (seq === state.propsSeq) loadModelProps() }, 2000)
      return
    }
    if (!res.ok) throw new Error(await errorMessage(res))
    const props = await res.json()
    if (seq !== state.propsSeq) return
    state.props = props
    updateComposer()
    showProps(name)
  } catch (err) {
    if (seq === state.propsSeq) el.textContent = `${name}: ${err.message}`
  }
}

/** Router mode: unload the chosen model now (POST /models/unload), freeing its memory; the next message loads it
 * again. */
async function unloadModel() {
  const name = state.settings.model
  try {
    const res = await fetch(BASE + 'models/unload', { method: 'POST', headers: headers(), body: JSON.stringify({ model: name }) })
    if (!res.ok) throw new Error(await errorMessage(res))
    state.unloaded = name
    if (state.props && state.settings.model === name) showProps(name)
  } catch (err) {
    toast(`Could not unload ${name} (${err.message})`)
  }
}

function chooseModel(name) {
  state.unloaded = null
  state.settings.model = name
  saveSettings(state.settings, state.defaults)
  loadModelProps()
}

// ---------------------------------------------------------------- media

/** Whether the server's model takes this kind of media (its projector, --mmproj, has the encoder). */
const takes = (kind) => !!state.props?.modalities?.[{ image: 'vision', audio: 'audio', video: 'video' }[kind]]
const anyMedia = () => ['image', 'audio', 'video'].some(takes)

const MAX_SIDE = 1536 // larger images are scaled down: the conversation must fit in the browser's storage
const MAX_INLINE = 1_500_000
const MAX_CLIP = 4_000_000 // audio and video cannot be scaled down: longer clips are refused
const TYPES = MEDIA_TYPES // what a message may hold (store.js): the file picker offers these
const NEEDS = { image: 'a vision projector', audio: 'an audio projector', video: 'a vision projector and ffmpeg' }
const fileKind = (file) => Object.keys(TYPES).find((kind) => file.type.startsWith(`${kind}/`)) ?? null
// Text files and PDFs go to any model, as text; at most this much text each (the conversation is kept in the
// browser's storage).
const MAX_TEXT_FILE = 1_000_000
const MAX_PDF = 20_000_000
const MAX_PDF_PAGES = 20 // as images: each page is an image the projector encodes
const isPdf = (file) => file.type === 'application/pdf' || /\.pdf$/i.test(file.name)

/** The composer for the model on screen: what the attach button takes, the reasoning picker. */
function updateComposer() {
  updateReasoningPicker()
  $('#mic').hidden = !takes('audio') && !isRecording()
  $('#attach').title = anyMedia() ? 'Attach a text file, PDF, image, audio or video (or paste one)'
    : 'Attach a text file or PDF'
  if (state.attachments.some((url) => !takes(mediaKind(url)))) {
    state.attachments = state.attachments.filter((url) => takes(mediaKind(url)))
    renderAttachments()
  }
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader()
    reader.onload = () => resolve(reader.result)
    reader.onerror = () => reject(reader.error)
    reader.readAsDataURL(file)
  })
}

async function imageDataUrl(file) {
  if (!TYPES.image.includes(file.type)) {
    throw new Error(`${file.name || 'The file'} is not a PNG, JPEG, WebP or GIF image`)
  }
  const url = await readDataUrl(file)
  const img = new Image()
  img.src = url
  try {
    await img.decode()
  } catch {
    throw new Error(`${file.name || 'The image'} cannot be read`)
  }
  const side = Math.max(img.naturalWidth, img.naturalHeight)
  const megapixels = parseFloat(state.settings.maxImageMPixels) // llama-server UI's cap; 0: none
  const pixels = img.naturalWidth * img.naturalHeight
  const scale = Math.min(1, MAX_SIDE / side, megapixels > 0 ? Math.sqrt((megapixels * 1e6) / pixels) : 1)
  if (scale === 1 && file.size <= MAX_INLINE) return url
  const canvas = document.createElement('canvas')
  canvas.width = Math.max(1, Math.floor(img.naturalWidth * scale))
  canvas.height = Math.max(1, Math.floor(img.naturalHeight * scale))
  canvas.getContext('2d').drawImage(img, 0, 0, canvas.width, canvas.height)
  return canvas.toDataURL('image/jpeg', 0.9)
}

async function clipDataUrl(file, kind) {
  if (!TYPES[kind].includes(file.type)) throw new Error(`${file.name || 'The file'} is not a supported ${kind} file`)
  if (file.size > MAX_CLIP) throw new Error(`${file.name || 'The file'} is too large (at most 4 MB)`)
  return readDataUrl(file)
}

/** A PDF: its text as a text file (kind 'pdf'), or with the pdfAsImage setting on a vision model its pages as
 * images; refused when it cannot be read, or has no text (a scan: its images can go to a vision model). */
async function addPdf(file) {
  const name = file.name || 'file.pdf'
  if (file.size > MAX_PDF) throw new Error(`${name} is too large (PDFs of at most 20 MB)`)
  const data = new Uint8Array(await file.arrayBuffer())
  const asImages = state.settings.pdfAsImage === 'on' && takes('image')
  let read
  try {
    read = await (asImages ? pdfImages(data, BASE, { maxSide: MAX_SIDE, maxPages: MAX_PDF_PAGES }) : pdfText(data, BASE))
  } catch (err) {
    throw new Error(`${name} cannot be read as a PDF (${err.message})`)
  }
  if (asImages) {
    state.attachments.push(...read)
    return
  }
  if (!read.trim()) {
    throw new Error(`${name} has no text to send (a scanned PDF holds only images${takes('image')
      ? ': turn on "Send PDFs as page images" in Settings' : ''})`)
  }
  if (read.length > MAX_TEXT_FILE) throw new Error(`${name} holds too much text (at most 1 MB)`)
  state.files.push({ name, text: read, kind: 'pdf' })
}

/** A text file's contents, { name, text }: refused when it is not UTF-8 text (or holds NUL bytes, as binaries do). */
async function textFile(file) {
  const name = file.name || 'file.txt'
  if (file.size > MAX_TEXT_FILE) throw new Error(`${name} is too large (text files of at most 1 MB)`)
  let text = null
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(await file.arrayBuffer())
  } catch {
    // not UTF-8
  }
  if (text === null || text.includes('\0')) {
    throw new Error(`${name} is not a text file (text files are sent as text${anyMedia() ? '; media as the projector takes them' : ''})`)
  }
  return { name, text }
}

async function addAttachments(files) {
  for (const file of files) {
    const kind = fileKind(file)
    if (kind === null) {
      try {
        if (isPdf(file)) await addPdf(file)
        else state.files.push(await textFile(file))
      } catch (err) {
        toast(err.message)
      }
      continue
    }
    if (!takes(kind)) {
      toast(`This server's model does not take ${kind === 'image' ? 'images' : kind} (start it with ${NEEDS[kind]}, --mmproj)`)
      continue
    }
    try {
      state.attachments.push(kind === 'image' ? await imageDataUrl(file) : await clipDataUrl(file, kind))
    } catch (err) {
      toast(err.message)
    }
  }
  renderAttachments()
}

/** The microphone button: start recording; pressed again, the recording is attached as a WAV clip. */
async function toggleRecording() {
  const mic = $('#mic')
  try {
    if (!isRecording()) {
      await startRecording()
      mic.classList.add('recording')
      mic.title = mic.ariaLabel = 'Stop recording and attach it'
      return
    }
    mic.classList.remove('recording')
    mic.title = mic.ariaLabel = 'Record from the microphone'
    updateComposer()
    const wav = await stopRecording()
    if (wav) await addAttachments([new File([wav], 'recording.wav', { type: 'audio/wav' })])
  } catch (err) {
    toast(`Recording failed (${err.message})`)
  }
}

/** The element showing an attached image, audio clip or video. */
function mediaElement(url, testid) {
  const kind = mediaKind(url)
  if (kind === 'image') return h('img', { src: url, alt: 'Attached image', 'data-testid': testid })
  return h(kind, { src: url, controls: true, preload: 'metadata', 'data-testid': testid })
}

/** The chip naming an attached text file (name and size). */
function fileChip(file, testid) {
  return h('span', { class: 'file-chip', title: file.name, 'data-testid': testid },
    h('span', { class: 'file-name' }, file.name), h('span', { class: 'file-size' }, sizeText(file.text.length)))
}

function sizeText(chars) {
  return chars < 1000 ? `${chars} chars` : `${(chars / 1000).toFixed(chars < 10_000 ? 1 : 0)}k chars`
}

function renderAttachments() {
  const box = $('#attachments')
  const remove = (list, i, what) => h('button', { type: 'button', title: 'Remove', 'aria-label': `Remove ${what}`,
    'data-testid': 'attachment-remove', onclick: () => { list.splice(i, 1); renderAttachments() } }, '✕')
  box.replaceChildren(
    ...state.attachments.map((url, i) => h('div', { class: 'attachment', 'data-testid': 'attachment' },
      mediaElement(url, 'attachment-media'), remove(state.attachments, i, mediaKind(url)))),
    ...state.files.map((file, i) => h('div', { class: 'attachment file', 'data-testid': 'attachment' },
      fileChip(file, 'attachment-file'), remove(state.files, i, file.name))))
  box.hidden = !state.attachments.length && !state.files.length
}

// ---------------------------------------------------------------- sidebar

function renderSidebar() {
  const list = $('#conversations')
  list.replaceChildren()
  const query = state.search.trim().toLowerCase()
  const items = [...state.conversations]
    .sort((a, b) => b.updated - a.updated)
    .filter((c) => !query || c.name.toLowerCase().includes(query)
      || Object.values(c.nodes).some((n) => n.content.toLowerCase().includes(query)
        || (n.files ?? []).some((f) => f.name.toLowerCase().includes(query))))
  for (const conv of items) {
    const busy = state.generating.has(conv.id)
    list.append(h('li', { class: `conv${conv.id === state.activeId ? ' active' : ''}${busy ? ' generating' : ''}`,
      'data-testid': 'conversation' },
      h('button', { class: 'conv-name', type: 'button', title: conv.name, onclick: () => selectConversation(conv.id) }, conv.name),
      busy && h('span', { class: 'conv-busy', title: 'Writing a reply', 'aria-label': 'Writing a reply',
        'data-testid': 'conv-generating' }),
      h('button', { class: 'icon', type: 'button', title: 'Rename', 'aria-label': 'Rename', onclick: () => renameConversation(conv) }, '✎'),
      h('button', { class: 'icon', type: 'button', title: 'Delete', 'aria-label': 'Delete', onclick: () => deleteConversation(conv) }, '✕'),
    ))
  }
  if (!items.length) list.append(h('li', { class: 'empty' }, query ? 'No matches' : 'No conversations yet'))
}

function selectConversation(id) {
  state.activeId = id
  document.body.classList.remove('sidebar-open')
  render()
}

function renameConversation(conv) {
  const name = prompt('Rename conversation', conv.name)
  if (name == null || !name.trim()) return
  conv.name = name.trim()
  persist()
  render()
}

function deleteConversation(conv) {
  if (!confirm(`Delete "${conv.name}"?`)) return
  const gen = state.generating.get(conv.id)
  gen?.controller.abort()
  if (gen || Object.values(conv.nodes).some((n) => n.streaming)) stopStream(conv.id)
  state.conversations = state.conversations.filter((c) => c.id !== conv.id)
  for (const id of Object.keys(conv.nodes)) { // what was remembered of its messages on screen
    raw.delete(id)
    for (const key of folds.keys()) if (key.startsWith(`${id}:`)) folds.delete(key)
  }
  if (state.activeId === conv.id) state.activeId = null
  persist()
  render()
}

// ---------------------------------------------------------------- messages

function splitThink(node) {
  // Servers without a reasoning parser leave <think>...</think> in the content.
  let { content } = node
  let reasoning = node.reasoning ?? ''
  if (state.settings.disableReasoningParsing === 'on') return { content, reasoning } // as the model wrote it
  const m = /^\s*<think>([\s\S]*?)(?:<\/think>|$)/.exec(content)
  if (m) {
    reasoning += m[1]
    content = content.slice(m[0].length)
  }
  return { content, reasoning }
}

function renderBody(node, body) {
  body.replaceChildren()
  const { content, reasoning } = splitThink(node)
  const on = (key) => state.settings[key] === 'on'
  if (reasoning) {
    const thinking = !content && isGenerating(node)
    const details = foldable(`${node.id}:reasoning`, thinking && on('showThoughtInProgress'),
      { class: 'reasoning', 'data-testid': 'reasoning' }, h('summary', {}, thinking ? 'Thinking…' : 'Reasoning'))
    details.append(markdownOrPlain(reasoning, on('renderThinkingAsMarkdown')))
    body.append(details)
  }
  if (node.role === 'user') {
    const media = (node.images ?? []).filter(mediaKind)
    if (media.length) {
      body.append(h('div', { class: 'images' }, media.map((url) => mediaElement(url, `message-${mediaKind(url)}`))))
    }
    for (const file of node.files ?? []) {
      body.append(h('details', { class: 'file', 'data-testid': 'message-file' },
        h('summary', {}, fileChip(file, 'message-file-name')), h('pre', {}, file.text)))
    }
    if (content) body.append(markdownOrPlain(content, on('renderUserContentAsMarkdown'), 'user-content'))
  } else if (node.role === 'tool') {
    body.append(foldable(`${node.id}:result`, on('alwaysShowToolCallContent'), { class: 'tool', 'data-testid': 'tool-result' },
      h('summary', {}, `Result of ${node.toolName ?? 'a tool'}`), h('pre', {}, content)))
  } else {
    body.append(markdownOrPlain(content, !raw.has(node.id), 'content'))
    for (const [i, call] of (node.toolCalls ?? []).entries()) {
      body.append(foldable(`${node.id}:call${i}`, on('alwaysShowToolCallContent'), { class: 'tool', 'data-testid': 'tool-call' },
        h('summary', {}, `Calls ${call.name}`), h('pre', {}, call.arguments)))
    }
  }
  if (node.error) body.append(h('div', { class: 'error', role: 'alert' }, node.error))
}

/** Text as rendered markdown, or as it is. */
function markdownOrPlain(text, markdown, testid) {
  const el = h('div', { class: markdown ? 'markdown' : 'plain', 'data-testid': testid })
  if (markdown) setMarkdown(el, text)
  else el.textContent = text
  return el
}

// the replies the user switched to plain text (showRawOutputSwitch)
const raw = new Set()

// The folds the user opened or closed (reasoning, tool calls and results): a message drawn again (each streamed
// chunk draws it) keeps them as they were.
const folds = new Map()

/** A <details> that starts `open` unless the user has toggled it (`key`) since. */
function foldable(key, open, attrs, ...children) {
  const details = h('details', { ...attrs, open: folds.get(key) ?? open }, ...children)
  details.addEventListener('toggle', () => folds.set(key, details.open))
  return details
}

function isGenerating(node) {
  return [...state.generating.values()].some((gen) => gen.nodeId === node.id)
}

function statsText(node) {
  const t = node.timings
  const parts = []
  if (t?.predicted_n != null) parts.push(`${t.predicted_n} tokens`)
  if (t?.predicted_per_second) parts.push(`${t.predicted_per_second.toFixed(1)} t/s`)
  if (node.stopped) parts.push('stopped')
  else if (node.interrupted) parts.push('interrupted')
  return parts.join(' · ')
}

function messageView(conv, node) {
  const body = h('div', { class: 'body' })
  renderBody(node, body)
  const sibs = siblings(conv, node)
  const index = sibs.indexOf(node.id)
  const busy = state.generating.has(conv.id)
  const actions = h('div', { class: 'actions' },
    sibs.length > 1 && h('span', { class: 'branches', 'data-testid': 'branches' },
      h('button', { type: 'button', class: 'icon', disabled: index === 0 || busy, title: 'Previous version',
        onclick: () => switchBranch(conv, sibs[index - 1]) }, '‹'),
      h('span', { 'data-testid': 'branch-index' }, `${index + 1}/${sibs.length}`),
      h('button', { type: 'button', class: 'icon', disabled: index === sibs.length - 1 || busy, title: 'Next version',
        onclick: () => switchBranch(conv, sibs[index + 1]) }, '›')),
    copyButton(() => splitThink(node).content),
    node.role === 'assistant' && state.settings.showRawOutputSwitch === 'on' && h('button', { type: 'button',
      'data-testid': 'raw-switch', title: 'Show this reply as plain text or as markdown', onclick: (event) => {
        if (!raw.delete(node.id)) raw.add(node.id)
        event.target.textContent = raw.has(node.id) ? 'Formatted' : 'Raw'
        renderBody(node, body)
      } }, raw.has(node.id) ? 'Formatted' : 'Raw'),
    node.role === 'user' && h('button', { type: 'button', disabled: busy, 'data-testid': 'edit',
      onclick: () => editMessage(conv, node, body) }, 'Edit'),
    node.role === 'assistant' && h('button', { type: 'button', disabled: busy, 'data-testid': 'regenerate',
      onclick: () => generate(conv, node.parent) }, 'Regenerate'),
    node.role === 'assistant' && node.content && !node.toolCalls?.length && h('button', { type: 'button', disabled: busy,
      title: 'Let the model write on from the end of this reply', 'data-testid': 'continue',
      onclick: () => continueReply(conv, node) }, 'Continue'),
    node.role === 'assistant' && state.settings.showMessageStats === 'on' &&
      h('span', { class: 'stats', 'data-testid': 'stats' }, statsText(node)),
  )
  return h('article', { class: `message ${node.role}`, 'data-id': node.id, 'data-testid': `message-${node.role}` },
    body, actions)
}

function switchBranch(conv, id) {
  conv.current = lastLeaf(conv, id)
  persist()
  renderMessages()
}

function editMessage(conv, node, body) {
  const area = h('textarea', { class: 'edit-area', 'data-testid': 'edit-input', rows: 4 })
  area.value = node.content
  body.replaceChildren(area, h('div', { class: 'edit-actions' },
    h('button', { type: 'button', class: 'primary', 'data-testid': 'edit-save', onclick: () => {
      const text = area.value.trim()
      if (!text && !node.images?.length && !node.files?.length) return
      const edited = addNode(conv, node.parent, 'user', text, node.images ?? [], node.files ?? [])
      persist()
      generate(conv, edited.id)
    } }, 'Save & send'),
    h('button', { type: 'button', onclick: () => renderMessages() }, 'Cancel')))
  area.focus()
}

/** How much of the model's context the conversation on screen used at its last reply (its timings: the prompt,
 * cached or not, and what was generated), beside the model's name. */
function showContextUse() {
  const el = $('#context-gauge')
  const nCtx = state.props?.default_generation_settings?.n_ctx
  const last = active() && branch(active()).findLast((n) => n.role === 'assistant' && n.timings?.prompt_n != null)
  const t = last?.timings
  const used = t ? (t.cache_n ?? 0) + t.prompt_n + (t.predicted_n ?? 0) : 0
  el.hidden = !(nCtx && used)
  if (el.hidden) return
  const share = Math.min(100, Math.round((used / nCtx) * 100))
  el.textContent = `${share}% of the context`
  el.title = `${used} of ${nCtx} tokens at the last reply`
  el.dataset.level = share >= 90 ? 'full' : share >= 70 ? 'high' : ''
}

function renderMessages() {
  const conv = active()
  const box = $('#messages')
  box.replaceChildren()
  $('#title').textContent = conv ? conv.name : 'New chat'
  if (!conv || !conv.current) {
    box.append(h('div', { class: 'welcome' }, h('h2', {}, 'Chat with the model'),
      h('p', {}, 'Conversations are stored in this browser only.')))
  } else {
    const system = state.settings.systemPrompt.trim()
    if (system && state.settings.showSystemMessage === 'on') {
      box.append(h('article', { class: 'message system', 'data-testid': 'message-system' },
        h('div', { class: 'body' }, h('div', { class: 'role' }, 'System prompt'),
          markdownOrPlain(system, state.settings.renderUserContentAsMarkdown === 'on', 'system-content'))))
    }
    for (const node of branch(conv)) box.append(messageView(conv, node))
  }
  const busy = !!conv && state.generating.has(conv.id)
  $('#send').hidden = busy
  $('#stop').hidden = !busy
  showSkip()
  showContextUse()
  box.scrollTop = box.scrollHeight
}

function updateStreaming(conv, node) {
  if (state.activeId !== conv.id) return
  const el = document.querySelector(`article[data-id="${CSS.escape(node.id)}"]`)
  if (!el) return
  const box = $('#messages')
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80
  renderBody(node, el.querySelector('.body'))
  const stats = el.querySelector('.stats')
  if (stats) stats.textContent = statsText(node)
  if (atBottom && state.settings.disableAutoScroll !== 'on') box.scrollTop = box.scrollHeight
  showSkip()
}

/** "Skip reasoning" while the reply on screen is still thinking and its request can have that ended. */
function showSkip() {
  const gen = state.generating.get(state.activeId)
  const node = gen ? active()?.nodes[gen.nodeId] : null
  $('#skip-reasoning').hidden = !(gen?.control && gen.completionId && node?.reasoning && !node.content && !gen.skipped)
}

/** End the running reply's thinking now (llama-server's POST /v1/chat/completions/control, reasoning_end): the
 * model writes its answer. */
async function skipReasoning() {
  const gen = state.generating.get(state.activeId)
  if (!gen?.completionId) return
  gen.skipped = true
  showSkip()
  const body = { id: gen.completionId, action: 'reasoning_end', ...(state.router ? { model: state.settings.model } : {}) }
  try {
    const res = await fetch(BASE + 'v1/chat/completions/control', { method: 'POST', headers: headers(), body: JSON.stringify(body) })
    const data = await res.json().catch(() => null)
    if (!res.ok || data?.success !== true) {
      toast(`Could not end the reasoning (${data?.error?.message ?? data?.message ?? `HTTP ${res.status}`})`)
    }
  } catch (err) {
    toast(`Could not end the reasoning (${err.message})`)
  }
}

function render() {
  renderSidebar()
  renderMessages()
}

// ---------------------------------------------------------------- generation

function samplingParams() {
  const params = {}
  for (const [key, , kind] of SAMPLING_FIELDS) {
    const raw = String(state.settings[key] ?? '').trim()
    if (!raw) continue
    const value = kind === 'int' ? parseInt(raw, 10) : parseFloat(raw)
    if (Number.isFinite(value)) params[key] = value
  }
  const samplers = state.settings.samplers.split(';').map((name) => name.trim()).filter(Boolean)
  if (samplers.length) params.samplers = samplers
  if (state.settings.backend_sampling === 'on') params.backend_sampling = true
  return params
}

// The reasoning picker's budgets, as llama-server's UI gives them (Max: no budget)
const EFFORT_TOKENS = { low: 512, medium: 2048, high: 8192 }
const thinks = () => state.props?.supports_thinking === true

/** The reasoning picker's request fields, for a model that thinks: the thinking switched on or off
 * (enable_thinking), a budget, and reasoning_control, so that "Skip reasoning" can end it. */
function reasoningParams() {
  if (!thinks()) return {}
  const effort = state.settings.reasoningEffort
  const params = { reasoning_control: true }
  if (!effort) return params
  params.chat_template_kwargs = { enable_thinking: effort !== 'off' }
  if (EFFORT_TOKENS[effort]) params.thinking_budget_tokens = EFFORT_TOKENS[effort]
  return params
}

/** The reasoning picker beside the message box: shown for a model that thinks. */
function updateReasoningPicker() {
  const picker = $('#reasoning-effort')
  picker.hidden = !thinks()
  picker.value = state.settings.reasoningEffort
}

/** A content part for a media data: URL: image_url, input_audio (base64 and format) or video_url. */
function mediaPart(url) {
  const kind = mediaKind(url)
  if (kind === 'image') return { type: 'image_url', image_url: { url } }
  if (kind === 'video') return { type: 'video_url', video_url: { url } }
  const [head, data] = url.split(',', 2)
  return { type: 'input_audio', input_audio: { data, format: /mpeg|mp3/.test(head) ? 'mp3' : /flac/.test(head) ? 'flac' : 'wav' } }
}

// what heads an attached text in the message, as llama-server's UI writes it
const FILE_LABELS = { pdf: 'PDF File', 'mcp-prompt': 'MCP Prompt', 'mcp-resource': 'MCP Resource' }
/** A text file as the model reads it: a header naming it (and its MCP server), then its text. */
const filePart = (file) => ({
  type: 'text',
  text: `\n\n--- ${FILE_LABELS[file.kind] ?? 'File'}: ${file.name}${file.server ? ` (${file.server})` : ''} ---\n${file.text}`,
})

/** A message's content for the chat request: its text, or with files or media the parts (the text files, the
 * media, then the text). */
function messageContent(node) {
  const text = splitThink(node).content
  const media = (node.images ?? []).filter(mediaKind)
  const files = node.files ?? []
  if (!media.length && !files.length) return text
  return [...files.map(filePart), ...media.map(mediaPart), ...(text ? [{ type: 'text', text }] : [])]
}

/** The connection to the server failed (not a failure the server reported): its generation may go on. */
class ConnectionLost extends Error {}

/** A network failure of fetch or of reading its body as ConnectionLost; an abort stays an AbortError. */
const lost = (err) => { throw err?.name === 'AbortError' ? err : new ConnectionLost(err?.message ?? String(err)) }

/**
 * Read a chat stream (server-sent events of chat.completion.chunk) into an assistant node: its content,
 * reasoning_content and timings. `update` is called after each event. Gives the number of content chunks and
 * whether the stream ended with [DONE].
 */
async function readChatStream(res, node, update, gen = {}) {
  const reader = res.body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  let chunks = 0
  let done = false
  for (;;) {
    const { done: ended, value } = await reader.read().catch(lost)
    if (ended) break
    buffer += decoder.decode(value, { stream: true })
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue
        const payload = line.slice(6).trim()
        if (payload === '[DONE]') { done = true; continue }
        const data = JSON.parse(payload)
        if (data?.error) throw new Error(data.error.message ?? 'server error')
        if (typeof data?.id === 'string') gen.completionId = data.id // what "Skip reasoning" names
        const delta = data?.choices?.[0]?.delta ?? {}
        if (data?.choices?.[0]?.finish_reason) node.finish = data.choices[0].finish_reason
        if (delta.content) { node.content += delta.content; chunks++ }
        if (delta.reasoning_content) node.reasoning += delta.reasoning_content
        for (const tc of delta.tool_calls ?? []) {
          node.toolCalls ??= []
          const call = (node.toolCalls[tc.index ?? 0] ??= { id: '', name: '', arguments: '' })
          if (tc.id) call.id = tc.id
          if (tc.function?.name) call.name += tc.function.name
          if (tc.function?.arguments) call.arguments += tc.function.arguments
        }
        if (data?.timings) node.timings = data.timings
      }
      update()
    }
  }
  return { chunks, done }
}

/** The server's resumable stream of a conversation (GET/DELETE v1/stream). */
const streamUrl = (convId, from) => `${BASE}v1/stream?conv_id=${encodeURIComponent(convId)}${from == null ? '' : `&from=${from}`}`

/** Stop the server's generation for a conversation: a stream with X-Conversation-Id outlives its connection. */
function stopStream(convId) {
  fetch(streamUrl(convId), { method: 'DELETE', headers: headers() }).catch(() => { /* best effort */ })
}

function stopGeneration() {
  const gen = state.generating.get(state.activeId)
  if (!gen) return
  gen.controller.abort()
  stopStream(gen.convId)
  if (!gen.answered) {
    // the request may still be on its way (the server starts the stream only once it has read it): once more
    // later, unless this conversation generates again meanwhile
    setTimeout(() => { if (!state.generating.has(gen.convId)) stopStream(gen.convId) }, 1500)
  }
}

let unloading = false // the page is going away: a stream cut now is resumed by the next page

/**
 * Stream a reply into `node`: `request(signal)` gives the response (the chat POST, or with `resumed` the
 * server's kept stream, replayed from its first byte, so the node is rebuilt from scratch). The stop button
 * aborts it and stops the server's generation. The node stays marked streaming while it runs, and after a lost
 * connection (the server goes on: the next page load resumes it).
 */
async function streamReply(conv, node, request, { resumed = false, control = false } = {}) {
  const controller = new AbortController()
  // control: the request can have its thinking ended (reasoning_control); completionId: its id, once streaming
  const gen = { convId: conv.id, nodeId: node.id, controller, answered: false, control, completionId: null }
  state.generating.set(conv.id, gen)
  if (state.activeId === conv.id) renderMessages()
  renderSidebar()

  let pending = false
  const schedule = () => {
    if (pending) return
    pending = true
    requestAnimationFrame(() => { pending = false; updateStreaming(conv, node) })
  }
  const started = performance.now()
  let chunks = 0
  let done = false
  let keep = false // the stream may go on at the server: stay marked streaming
  try {
    const res = await request(controller.signal).catch(lost)
    gen.answered = true
    if (resumed && (res.status === 404 || res.status === 400)) { // gone (expired), or its start already dropped
      delete node.error
      node.interrupted = true
      return
    }
    if (!res.ok) {
      let message = await errorMessage(res)
      if (res.status === 401) message += ' — set the API key in Settings'
      throw new Error(message)
    }
    if (resumed) { // a continued reply is rebuilt on what it continued
      node.content = node.prefix?.content ?? ''
      node.reasoning = node.prefix?.reasoning ?? ''
      for (const key of ['timings', 'error', 'stopped', 'interrupted']) delete node[key]
    }
    ({ chunks, done } = await readChatStream(res, node, schedule, gen))
    if (!done) node.interrupted = true // ended early: stopped elsewhere, or replaced by a newer request
  } catch (err) {
    if (unloading) return
    if (controller.signal.aborted) node.stopped = true
    else if (err instanceof ConnectionLost) {
      keep = true
      node.error = `Connection lost (${err.message}): reload the page to resume the reply`
    } else node.error = err.message
  } finally {
    if (!unloading) {
      if (!keep) {
        delete node.streaming
        delete node.prefix
      }
      if (!node.timings && chunks) {
        node.timings = resumed
          ? { predicted_n: chunks }
          : { predicted_n: chunks, predicted_per_second: chunks / ((performance.now() - started) / 1000) }
      }
      if (state.generating.get(conv.id) === gen) state.generating.delete(conv.id)
      if (state.unloaded && state.props && !node.error) { // router mode: the reply loaded the model again
        state.unloaded = null
        showProps(state.settings.model)
      }
      if (conv.name === 'New chat' && conv.roots.length) nameConversation(conv, node)
      conv.updated = Date.now()
      persist()
      render()
    }
  }
}

/**
 * Name a new conversation after its first reply: from its first message, then, with titleGenerationUseLLM, by the
 * model from the first exchange (unless the user renamed it meanwhile; a failure keeps the first name).
 */
function nameConversation(conv, reply) {
  const first = conv.nodes[conv.roots[0]]
  const name = firstMessageTitle(first, state.settings.titleGenerationUseFirstLine === 'on')
  conv.name = name
  if (state.settings.titleGenerationUseLLM !== 'on' || reply.error || reply.stopped || first.role !== 'user') return
  const body = { ...titleRequest(state.settings.titleGenerationPrompt, first.content, splitThink(reply).content ?? ''),
    ...(state.router ? { model: state.settings.model } : {}) }
  fetch(BASE + 'v1/chat/completions', { method: 'POST', headers: headers(), body: JSON.stringify(body) })
    .then((res) => (res.ok ? res.json() : null))
    .then((data) => {
      const title = cleanTitle(data?.choices?.[0]?.message?.content ?? '')
      if (!title || conv.name !== name || !state.conversations.includes(conv)) return
      conv.name = title
      persist()
      render()
    })
    .catch(() => {}) // the first name stays
}

/** A node as a chat request message: an assistant's tool calls and a tool result's call id go with it. */
function chatMessage(n) {
  if (n.role === 'tool') return { role: 'tool', tool_call_id: n.toolCallId, content: n.content }
  const message = { role: n.role, content: messageContent(n) }
  const { reasoning } = n.role === 'assistant' ? splitThink(n) : {}
  // as llama-server's UI: a template that shows past reasoning (interleaved thinking) gets it back
  if (reasoning && state.settings.excludeReasoningFromContext !== 'on') message.reasoning_content = reasoning
  if (n.toolCalls?.length) {
    message.tool_calls = n.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }))
  }
  return message
}

/**
 * Stream the chat request for the branch ending at `lastId` into `node` (marked streaming first; `extra`: more
 * request fields). The conversation's id names the server's stream of this reply (as llama-server's web UI): it
 * outlives the page, and a newer request on the conversation replaces the older one.
 */
async function requestReply(conv, lastId, node, extra = {}) {
  await mcpSettled() // an MCP server still connecting: its tools go with this request
  cancelPreEncode()
  for (const n of Object.values(conv.nodes)) delete n.streaming
  node.streaming = true
  persist()
  const request = chatRequest(conv, lastId, extra)
  await streamReply(conv, node, (signal) => fetch(BASE + 'v1/chat/completions', {
    method: 'POST',
    headers: { ...headers(), 'X-Conversation-Id': conv.id },
    body: JSON.stringify(request),
    signal,
  }), { control: request.reasoning_control === true })
  if (state.settings.preEncodeConversation === 'on' && !node.error && !node.stopped && !node.interrupted
      && node.finish !== 'tool_calls' && conv.nodes[node.id] === node) {
    preEncode(conv, node.id)
  }
}

/** The streamed chat request for the branch ending at `lastId` (`extra`: more fields; the custom JSON goes last). */
function chatRequest(conv, lastId, extra = {}) {
  const history = branch(conv, lastId).map(chatMessage)
  const messages = state.settings.systemPrompt.trim()
    ? [{ role: 'system', content: state.settings.systemPrompt }, ...history]
    : history
  const offered = offeredTools()
  const tools = offered.length ? { tools: offered.map((t) => t.definition) } : {}
  const model = state.router ? { model: state.settings.model } : {}
  let custom = null
  try {
    custom = parseCustomJson(state.settings.customJson)
  } catch {
    // refused when saved: a value from --ui-config that is not an object is left out
  }
  const parsing = state.settings.disableReasoningParsing === 'on' ? { reasoning_format: 'none' } : {}
  return { messages, stream: true, ...samplingParams(), ...reasoningParams(), ...parsing, ...tools, ...model, ...extra,
    ...custom }
}

let preEncoding = null // the pre-encode request in flight (its AbortController)

function cancelPreEncode() {
  preEncoding?.abort()
  preEncoding = null
}

/**
 * llama-server UI's preEncodeConversation: once a reply is done and the server is idle, the conversation with it
 * is sent again with n_predict 0, so the server has its prompt in the cache and the next message starts sooner.
 * The request is the one the next message will extend (tools, template settings and all), so its prefix matches.
 */
async function preEncode(conv, lastId) {
  cancelPreEncode()
  const controller = preEncoding = new AbortController()
  const request = { ...chatRequest(conv, lastId), stream: false, n_predict: 0 }
  delete request.max_tokens
  delete request.max_completion_tokens
  try {
    const slots = await fetch(BASE + 'slots' + (state.router ? `?model=${encodeURIComponent(state.settings.model)}` : ''),
      { headers: headers(), signal: controller.signal })
    const list = slots.ok ? await slots.json() : [] // no /slots (--no-slots): go ahead
    if (Array.isArray(list) && list.some((s) => s?.is_processing)) return // busy with others: not now
    await fetch(BASE + 'v1/chat/completions', { method: 'POST', headers: headers(), body: JSON.stringify(request),
      signal: controller.signal })
  } catch {
    // aborted by the next message, or the server is gone: nothing to keep
  } finally {
    if (preEncoding === controller) preEncoding = null
  }
}

async function generate(conv, parentId, round = 0) {
  if (state.generating.has(conv.id)) return
  const node = addNode(conv, parentId, 'assistant', '')
  node.reasoning = ''
  await requestReply(conv, parentId, node)
  // only a reply that ended in its calls runs them (one cut at max_tokens has unfinished arguments)
  if (node.toolCalls?.length && node.finish === 'tool_calls' && !node.stopped && !node.error && !node.interrupted &&
      conv.nodes[node.id] === node) {
    await runTools(conv, node, round)
  }
}

/**
 * The model writes on at the end of an assistant's reply, in the same message (llama-server's "Continue":
 * continue_final_message). `prefix` keeps what it continues while it streams: a reload replays only the
 * continuation.
 */
async function continueReply(conv, node) {
  if (state.generating.has(conv.id)) return
  node.prefix = { content: node.content, reasoning: node.reasoning ?? '' }
  for (const key of ['timings', 'error', 'stopped', 'interrupted', 'finish']) delete node[key]
  await requestReply(conv, node.id, node, { continue_final_message: true, add_generation_prompt: false })
}

/**
 * Run an assistant's tool calls on the server (POST /tools), each result a tool node after it, then let the
 * model go on with them. A tool that writes (files, commands) runs only once the user allows it.
 */
async function runTools(conv, node, round) {
  const rounds = parseInt(state.settings.agenticMaxTurns, 10) || 10
  if (round >= rounds) {
    toast(`The model called tools ${rounds} times in a row: stopped`)
    return
  }
  let parent = node.id
  for (const call of node.toolCalls) {
    const result = addNode(conv, parent, 'tool', await callTool(call))
    result.toolCallId = call.id
    result.toolName = call.name
    parent = result.id
    persist()
    render()
  }
  await generate(conv, parent, round + 1)
}

/** Run one tool call: on the server (POST /tools), or for an MCP server's tool, on that server. A server tool
 * that writes, or an MCP tool that says it is destructive, runs only when the user allows it. */
async function callTool(call) {
  const offered = offeredTools().find((t) => t.name === call.name)
  if (!offered) return JSON.stringify({ error: `unknown tool "${call.name}"` })
  let params
  try {
    params = JSON.parse(call.arguments || '{}')
  } catch {
    return JSON.stringify({ error: 'the arguments are not valid JSON' })
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    return JSON.stringify({ error: 'the arguments must be a JSON object' })
  }
  if (offered.run) return offered.run(params) // sandboxed: nothing to ask
  const asks = offered.own ? offered.own.permissions?.write : offered.annotations.destructiveHint === true
  const where = offered.own ? '' : ` (on ${offered.server})`
  if (asks && !confirm(`Allow the model to run ${call.name}${where}?\n\n${JSON.stringify(params, null, 2)}`)) {
    return JSON.stringify({ error: 'the user did not allow this call' })
  }
  if (!offered.own) return callMcpTool(offered, params, (parseFloat(state.settings.mcpRequestTimeoutSeconds) || 300) * 1000)
  try {
    const res = await fetch(BASE + 'tools', { method: 'POST', headers: headers(), body: JSON.stringify({ tool: call.name, params }) })
    const data = await res.json().catch(() => null)
    if (!res.ok) return JSON.stringify({ error: data?.error?.message ?? `HTTP ${res.status}` })
    return typeof data?.plain_text_response === 'string' ? data.plain_text_response : JSON.stringify(data)
  } catch (err) {
    return JSON.stringify({ error: err.message })
  }
}

/**
 * The replies that were generating when the page went away: the server still holds their streams (for 5
 * minutes after they end). Each one found is replayed from its start into its node, as it goes on live;
 * one not found is marked interrupted, keeping what was saved.
 */
async function resumeStreams() {
  const marked = []
  for (const conv of state.conversations) {
    for (const node of Object.values(conv.nodes)) if (node.streaming) marked.push({ conv, node })
  }
  if (!marked.length) return
  let found
  try {
    const res = await fetch(BASE + 'v1/streams/lookup', {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify({ conversation_ids: marked.map(({ conv }) => conv.id) }),
    })
    const list = res.ok ? await res.json() : [] // a server without resumable streams has none
    found = new Map((Array.isArray(list) ? list : []).map((s) => [s?.conversation_id, s]))
  } catch (err) {
    toast(`Could not look for the replies still generating (${err.message})`)
    return // still marked: the next page load asks again
  }
  const waiting = []
  for (const item of marked) {
    if (found.has(item.conv.id)) waiting.push(item)
    else {
      delete item.node.streaming
      delete item.node.prefix
      delete item.node.error // a lost connection's: nothing to resume now
      item.node.interrupted = true
    }
  }
  if (waiting.length < marked.length) {
    persist()
    render()
  }
  // all at once, as they generate at the server
  await Promise.all(waiting.map(({ conv, node }) => {
    if (!state.conversations.includes(conv) || !node.streaming || conv.nodes[node.id] !== node) return null
    if (state.generating.has(conv.id)) return null // the user sent another message there meanwhile
    return streamReply(conv, node, (signal) => fetch(streamUrl(conv.id, 0), { headers: headers(), signal }),
      { resumed: true })
  }))
}

function send() {
  const input = $('#input')
  const text = input.value.trim()
  if ((!text && !state.attachments.length && !state.files.length) || state.generating.has(state.activeId)) return
  let conv = active()
  if (!conv) {
    conv = newConversation()
    state.conversations.push(conv)
    state.activeId = conv.id
  }
  const node = addNode(conv, conv.current, 'user', text, state.attachments, state.files)
  input.value = ''
  state.attachments = []
  state.files = []
  renderAttachments()
  persist()
  generate(conv, node.id)
}

/** An MCP server's state changed: the settings' rows, and the button for its prompts and resources. */
function mcpChanged() {
  showMcpStatus()
  $('#mcp-open').hidden = mcpExtras().length === 0
}

/** The MCP servers' prompts and resources, each ready to be attached to the next message. */
function openMcpPicker() {
  const items = mcpExtras()
  const list = $('#mcp-list')
  const attach = async (item, args, button) => {
    button.disabled = true
    try {
      if (item.kind === 'prompt') {
        state.files.push({ name: item.name, text: await promptText(item, args), kind: 'mcp-prompt', server: item.server })
      } else {
        const { text, images } = await resourceContents(item)
        if (text) state.files.push({ name: item.name, text, kind: 'mcp-resource', server: item.server })
        if (images.length && takes('image')) state.attachments.push(...images)
        else if (images.length) toast(`${item.name}: its images need a model with vision`)
        if (!text && !images.length) throw new Error('it has no text or image')
      }
      renderAttachments()
      $('#mcp-picker').close()
    } catch (err) {
      toast(`Could not attach ${item.name} (${err.message})`)
    } finally {
      button.disabled = false
    }
  }
  list.replaceChildren(...items.map((item) => {
    const button = h('button', { type: 'submit', class: 'primary', 'data-testid': `mcp-attach-${item.kind}` }, 'Attach')
    const form = h('form', { class: 'mcp-item', 'data-testid': `mcp-${item.kind}`, 'data-name': item.name },
      h('div', {}, h('strong', {}, item.name), ` · ${item.kind} · ${item.server}`,
        item.description && h('div', { class: 'hint' }, item.description)),
      (item.arguments ?? []).map((arg) => h('label', {}, `${arg.name}${arg.required ? ' (required)' : ''}`,
        h('input', { name: arg.name, required: !!arg.required, placeholder: arg.description ?? '' }))),
      button)
    form.addEventListener('submit', (event) => {
      event.preventDefault()
      const args = Object.fromEntries([...form.querySelectorAll('input')].filter((i) => i.value.trim())
        .map((i) => [i.name, i.value]))
      attach(item, args, button)
    })
    return form
  }))
  $('#mcp-picker').showModal()
}

// ---------------------------------------------------------------- import/export

function exportConversations() {
  download(`llamatwist-conversations-${new Date().toISOString().slice(0, 10)}.json`, exportJson(state.conversations))
}

async function importConversations(event) {
  const file = event.target.files?.[0]
  event.target.value = ''
  if (!file) return
  try {
    const imported = parseImport(await file.text())
    const byId = new Map(state.conversations.map((c) => [c.id, c]))
    for (const conv of imported) byId.set(conv.id, conv)
    state.conversations = [...byId.values()]
    persist()
    render()
    toast(`Imported ${imported.length} conversation(s)`)
  } catch (err) {
    toast(`Import failed: ${err.message}`)
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  applyTheme()
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', applyTheme)
  $('#new').addEventListener('click', () => {
    state.activeId = null
    document.body.classList.remove('sidebar-open')
    render()
    $('#input').focus()
  })
  $('#search').addEventListener('input', (e) => { state.search = e.target.value; renderSidebar() })
  $('#composer').addEventListener('submit', (e) => { e.preventDefault(); send() })
  $('#input').addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || e.shiftKey || e.isComposing) return
    // sendOnEnter off: Enter is a new line, Ctrl/Cmd+Enter sends
    if (state.settings.sendOnEnter === 'on' || e.ctrlKey || e.metaKey) { e.preventDefault(); send() }
  })
  $('#stop').addEventListener('click', stopGeneration)
  $('#skip-reasoning').addEventListener('click', skipReasoning)
  $('#reasoning-effort').addEventListener('change', (e) => {
    state.settings.reasoningEffort = e.target.value
    saveSettings(state.settings, state.defaults)
  })
  // Leaving the page cuts a streaming reply's connection, not its generation: save what came so far, still
  // marked streaming, for the next page load to resume.
  const leaving = () => {
    unloading = true
    if (state.generating.size) persist()
  }
  addEventListener('pagehide', leaving)
  addEventListener('pageshow', (e) => { if (e.persisted) unloading = false })
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden' && state.generating.size) persist()
  })
  $('#attach').addEventListener('click', () => $('#attach-file').click())
  $('#mic').addEventListener('click', toggleRecording)
  $('#mcp-open').addEventListener('click', openMcpPicker)
  $('#mcp-close').addEventListener('click', () => $('#mcp-picker').close())
  $('#attach-file').addEventListener('change', (e) => {
    const files = [...e.target.files]
    e.target.value = ''
    addAttachments(files)
  })
  $('#input').addEventListener('paste', (e) => {
    const files = [...(e.clipboardData?.files ?? [])]
    const text = e.clipboardData?.getData('text/plain') ?? ''
    const longest = parseInt(state.settings.pasteLongTextToFileLen, 10)
    if (!files.length && longest > 0 && text.length > longest) {
      files.push(new File([text], 'Pasted', { type: 'text/plain' })) // as llama-server's UI: a long paste is a file
    }
    if (!files.length) return // text pastes as usual
    e.preventDefault()
    addAttachments(files)
  })
  $('#composer').addEventListener('dragover', (e) => {
    if ([...(e.dataTransfer?.items ?? [])].some((i) => i.kind === 'file')) e.preventDefault()
  })
  $('#composer').addEventListener('drop', (e) => {
    const files = [...(e.dataTransfer?.files ?? [])]
    if (!files.length) return
    e.preventDefault()
    addAttachments(files)
  })
  initSettings(state, () => {
    applyTheme()
    render() // the display settings apply to what is on screen
    loadProps()
  })
  $('#theme').addEventListener('click', () => {
    const dark = document.documentElement.dataset.theme === 'dark'
    state.settings.theme = dark ? 'light' : 'dark'
    saveSettings(state.settings, state.defaults)
    applyTheme()
  })
  $('#model-select').addEventListener('change', (e) => chooseModel(e.target.value))
  $('#unload-model').addEventListener('click', unloadModel)
  $('#model-info').addEventListener('click', showModelInfo)
  $('#model-dialog-close').addEventListener('click', () => $('#model-dialog').close())
  $('#export').addEventListener('click', exportConversations)
  $('#import').addEventListener('click', () => $('#import-file').click())
  $('#import-file').addEventListener('change', importConversations)
  $('#menu').addEventListener('click', () => document.body.classList.toggle('sidebar-open'))
  $('#scrim').addEventListener('click', () => document.body.classList.remove('sidebar-open'))
  const latest = [...state.conversations].sort((a, b) => b.updated - a.updated)[0]
  state.activeId = latest?.id ?? null
  render()
  loadProps()
}

init()
