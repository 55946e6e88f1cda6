// run_javascript, llama-server UI's browser tool (its jsSandboxEnabled setting): the model's code runs in a Web
// Worker inside a sandboxed iframe (allow-scripts only: an opaque origin, without this page, its storage or the
// server's API), whose CSP allows no network, under a hard timeout (removing the iframe ends the worker).

const TIMEOUT_MS = 10_000
const TIMEOUT_MS_MAX = 30_000
const MAX_OUTPUT = 8192

export const SANDBOX_TOOL = {
  type: 'function',
  function: {
    name: 'run_javascript',
    description: 'Execute JS in a sandboxed browser worker (no DOM/page access). Top-level await ok; console.log for '
      + 'intermediates; top-level return is captured as result.',
    parameters: {
      type: 'object',
      properties: {
        code: { type: 'string', description: 'JavaScript source to execute' },
        timeout_ms: { type: 'number', description: `Execution timeout in milliseconds, default ${TIMEOUT_MS}, max ${TIMEOUT_MS_MAX}` },
      },
      required: ['code'],
    },
  },
}

// In the worker: console output collected, the code run as an async function body, its value or error sent back.
const WORKER = `
const logs = []
const fmt = (v) => { if (typeof v === 'string') return v; try { return JSON.stringify(v) } catch { return String(v) } }
const capture = (prefix) => (...args) => { logs.push(prefix + args.map(fmt).join(' ')) }
console.log = console.info = console.debug = capture('')
console.warn = capture('warn: ')
console.error = capture('error: ')
self.onmessage = async (event) => {
  const reply = { logs, result: null, error: null }
  try {
    const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor
    const value = await new AsyncFunction(event.data.code)()
    if (value !== undefined) reply.result = fmt(value)
  } catch (err) {
    reply.error = err instanceof Error ? err.stack || err.message : String(err)
  }
  self.postMessage(reply)
}`

// The iframe's document: its CSP (inherited by the blob worker) has no connect-src, so no network; eval is needed
// for the code, inline script for this harness, blob: for the worker.
const HARNESS = `<!doctype html><meta http-equiv="Content-Security-Policy" content="default-src 'none'; `
  + `script-src 'unsafe-inline' 'unsafe-eval'; worker-src blob:"><script>
const SOURCE = ${JSON.stringify(WORKER)}
addEventListener('message', (event) => {
  const respond = (payload) => parent.postMessage(payload, '*')
  let worker
  try {
    worker = new Worker(URL.createObjectURL(new Blob([SOURCE], { type: 'text/javascript' })))
  } catch (err) {
    respond({ logs: [], result: null, error: 'Worker creation failed: ' + err })
    return
  }
  worker.onmessage = (msg) => respond(msg.data)
  worker.onerror = (err) => respond({ logs: [], result: null, error: String(err.message || err) })
  worker.postMessage({ code: event.data.code })
})
</script>`

/** What the model reads: the console lines, then the error or the value returned, at most 8192 characters. */
function output(reply) {
  const lines = (Array.isArray(reply?.logs) ? reply.logs : []).map(String)
  if (reply?.error != null) lines.push(`Error: ${reply.error}`)
  else if (reply?.result != null) lines.push(`=> ${reply.result}`)
  const text = lines.join('\n') || '(no output)'
  return text.length > MAX_OUTPUT ? `${text.slice(0, MAX_OUTPUT)}\n[output truncated]` : text
}

/** Run a run_javascript call ({ code, timeout_ms? }): its output as text, the way the model gets it. */
export function runJavascript({ code, timeout_ms: requested }) {
  if (typeof code !== 'string' || !code) return Promise.resolve('Error: missing required parameter: code')
  const ms = Number.isFinite(requested) && requested > 0 ? Math.min(requested, TIMEOUT_MS_MAX) : TIMEOUT_MS
  return new Promise((resolve) => {
    const iframe = document.createElement('iframe')
    iframe.setAttribute('sandbox', 'allow-scripts')
    iframe.hidden = true
    iframe.srcdoc = HARNESS
    const finish = (text) => {
      clearTimeout(timer)
      removeEventListener('message', onMessage)
      iframe.remove() // ends the worker, however long its code would run
      resolve(text)
    }
    const onMessage = (event) => {
      if (event.source === iframe.contentWindow) finish(output(event.data))
    }
    const timer = setTimeout(() => finish(`Error: execution timed out after ${ms} ms`), ms)
    addEventListener('message', onMessage)
    iframe.onload = () => iframe.contentWindow?.postMessage({ code }, '*')
    document.body.append(iframe)
  })
}
