// llamatwist /completion.js: stream completions from this server's /completion
// endpoint, for building your own front-end.
//
//   import { llama, llamaComplete } from '/completion.js'
//   for await (const chunk of llama('Tell me a joke', { n_predict: 64 })) {
//     document.body.append(chunk.data.content)
//   }
//
// Each chunk is { data } where data is one SSE event of /completion
// (data.content, data.stop, and data.timings on the last one).  The base URL
// defaults to the directory this script is served from, so --api-prefix works.

const DEFAULT_BASE = new URL('.', import.meta.url).href

/**
 * Stream a completion.  params are /completion's fields (n_predict,
 * temperature, ...); config: { controller, api_key, api_url }.
 */
export async function* llama(prompt, params = {}, config = {}) {
  const controller = config.controller ?? new AbortController()
  const base = config.api_url ?? DEFAULT_BASE
  const headers = { 'Content-Type': 'application/json', Accept: 'text/event-stream' }
  if (config.api_key) headers.Authorization = `Bearer ${config.api_key}`
  const response = await fetch(new URL('completion', base.endsWith('/') ? base : base + '/'), {
    method: 'POST',
    body: JSON.stringify({ ...params, prompt, stream: true }),
    headers,
    signal: controller.signal,
  })
  if (!response.ok) {
    let message = `HTTP ${response.status}`
    try { message = (await response.json()).error?.message ?? message } catch { /* not JSON */ }
    throw new Error(message)
  }
  const reader = response.body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      buffer += decoder.decode(value, { stream: true })
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        for (const line of event.split('\n')) {
          if (line.startsWith('data: ')) {
            const data = JSON.parse(line.slice(6))
            yield { data }
            if (data.stop) return
          } else if (line.startsWith('error: ')) {
            throw new Error(JSON.parse(line.slice(7)).message ?? line)
          }
        }
      }
    }
  } finally {
    reader.releaseLock()
  }
}

/** Callback style: callback({ data }) for every chunk; resolves with the full text. */
export async function llamaComplete(params, controller, callback) {
  const { prompt, api_key, ...rest } = params
  let content = ''
  for await (const chunk of llama(prompt, rest, { controller, api_key })) {
    content += chunk.data.content ?? ''
    if (callback) callback(chunk)
  }
  return content
}

/** Resolves with the whole completion text. */
export async function llamaPromise(prompt, params = {}, config = {}) {
  let content = ''
  for await (const chunk of llama(prompt, params, config)) content += chunk.data.content ?? ''
  return content
}

export default llama
