// Browser tests of the web UI: Playwright (playwright-core) driving headless
// Chromium against a running llamatwist server.
//
//   LLAMATWIST_URL=http://127.0.0.1:8080/ node tests/chat.test.mjs [scenario ...]
//
// LLAMATWIST_API_KEY: the server's --api-key (runs the "apikey" scenario).
// LLAMATWIST_IMAGE: a PNG file for the image scenarios, named on the command line: "vision" (a server with a
// vision projector, --mmproj: attach, paste, send, see) and "novision" (a server without one).
// LLAMATWIST_CLIP: a WAV or MP4 file for the "audio" (a server with an audio projector) and "video" (a vision
// projector and ffmpeg) scenarios: attach, send, see the player, reload.
// "router": a router (--models-dir) with at least two models: the header's model picker, the chosen model sent
// with each chat request, remembered after a reload. "uisettings": a server started with
// --ui-config '{"temperature": 0.25, "systemMessage": "Be brief.", "pdfAsImage": true}' (llama-server's UI name for the
// system prompt; a checkbox as a boolean):
// the values are the settings form's defaults until the user saves others. "resume": a reply that goes on
// through a page reload (the server's resumable streams), then one stopped after a reload. "tools": a server started
// with --tools get_info,write_file: the model's tool calls run on the server (one allowed, one refused).
// CHROMIUM: the browser (default /usr/bin/chromium).  The screenshot of the
// chat goes to test-results/chat.png.  Exits 1 when any scenario fails.
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const URL_ = process.env.LLAMATWIST_URL ?? 'http://127.0.0.1:8080/'
const API_KEY = process.env.LLAMATWIST_API_KEY ?? ''
const IMAGE = process.env.LLAMATWIST_IMAGE ?? ''
const CLIP = process.env.LLAMATWIST_CLIP ?? ''
const JPX = process.env.LLAMATWIST_JPX ?? '' // the "pdfimages" scenario's JPEG 2000 codestream
const MCP = process.env.LLAMATWIST_MCP ?? '' // the "mcp" scenario's MCP servers and their token
const MCP_FAR = process.env.LLAMATWIST_MCP_FAR ?? ''
const MCP_TOKEN = process.env.LLAMATWIST_MCP_TOKEN ?? ''
const RESULTS = new URL('../test-results/', import.meta.url).pathname
const TIMEOUT = 60_000

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`)
}

async function setSettings(page, values) {
  await page.getByTestId('settings').click()
  for (const [name, value] of Object.entries(values)) {
    await page.locator(`#settings-form [name="${name}"]`).fill(String(value))
  }
  await page.getByTestId('settings-save').click()
  await page.locator('#settings').waitFor({ state: 'hidden' })
}

async function sendMessage(page, text) {
  await page.getByTestId('input').fill(text)
  await page.getByTestId('send').click()
}

async function waitIdle(page) {
  await page.getByTestId('send').waitFor({ state: 'visible', timeout: TIMEOUT })
}

const lastAssistant = (page) => page.getByTestId('message-assistant').last()

// What the model writes depends on the CPU it runs on, and it may end a reply at once. Where a scenario needs
// a reply that goes on, the request the page sends gets ignore_eos: it runs to its max_tokens.
async function ignoreEos(page) {
  await page.route('**/v1/chat/completions', (route) => {
    const body = JSON.parse(route.request().postData() || '{}')
    return route.continue({ postData: JSON.stringify({ ...body, ignore_eos: true }) })
  })
}

// The page has read /props (and so knows whether the server takes images).
async function ready(page) {
  await page.getByTestId('model').filter({ hasText: 'ctx' }).waitFor({ timeout: TIMEOUT })
  // /props names a model without -a by its path (as llama-server); the header shows the file's name
  const header = await page.getByTestId('model').textContent()
  assert(!header.includes('/'), `the header shows the model file's name, not its path (${header})`)
}

// A tool's parameters with every string property at most 12 characters long.
function shortStrings(schema) {
  const properties = Object.fromEntries(Object.entries(schema?.properties ?? {}).map(([key, prop]) =>
    [key, prop.type === 'string' ? { ...prop, maxLength: 12 } : prop]))
  return { ...schema, properties }
}

// An image file pasted into the message box, as a browser delivers a pasted screenshot.
async function pasteImage(page, bytes) {
  await page.evaluate((b64) => {
    const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
    const transfer = new DataTransfer()
    transfer.items.add(new File([data], 'pasted.png', { type: 'image/png' }))
    document.querySelector('#input').dispatchEvent(
      new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }))
  }, bytes.toString('base64'))
}

/** A PDF of these objects, numbered from 1 (the first the catalog; a Buffer is a stream's binary data). */
function pdfOf(objects) {
  let pdf = '%PDF-1.4\n'
  const offsets = objects.map((body, i) => {
    const at = pdf.length
    pdf += `${i + 1} 0 obj\n${body}\nendobj\n`
    return at
  })
  const xref = pdf.length
  pdf += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`
  pdf += offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('')
  pdf += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`
  return Buffer.from(pdf, 'latin1')
}

const stream = (data, dict = '') => `<< ${dict} /Length ${data.length} >>\nstream\n${data}\nendstream`

// A PDF with one page per text, each written in Helvetica (a standard font: nothing embedded).
function tinyPdf(texts) {
  const objects = ['<< /Type /Catalog /Pages 2 0 R >>',
    `<< /Type /Pages /Kids [${texts.map((_, i) => `${4 + 2 * i} 0 R`).join(' ')}] /Count ${texts.length} >>`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>']
  for (const [i, text] of texts.entries()) {
    objects.push(`<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents ${5 + 2 * i} 0 R `
      + '/Resources << /Font << /F1 3 0 R >> >> >>')
    objects.push(stream(`BT /F1 18 Tf 20 100 Td (${text}) Tj ET`))
  }
  return pdfOf(objects)
}

// Japanese text as older CJK PDFs hold it: a predefined CMap (UniJIS-UCS2-H), no ToUnicode, no embedded font.
// Only pdf.js's CMaps (Adobe-Japan1) turn its codes into text.
function cjkPdf() {
  const font = '/BaseFont /KozMinPr6N-Regular'
  return pdfOf(['<< /Type /Catalog /Pages 2 0 R >>', '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    stream('BT /F1 18 Tf 20 100 Td <65E5672C8A9E> Tj ET'), // 日本語 in UCS-2
    `<< /Type /Font /Subtype /Type0 ${font} /Encoding /UniJIS-UCS2-H /DescendantFonts [6 0 R] >>`,
    `<< /Type /Font /Subtype /CIDFontType0 ${font} /CIDSystemInfo << /Registry (Adobe) /Ordering (Japan1) /Supplement 6 >> `
      + '/FontDescriptor 7 0 R >>',
    '<< /Type /FontDescriptor /FontName /KozMinPr6N-Regular /Flags 4 /FontBBox [0 -120 1000 880] /ItalicAngle 0 '
      + '/Ascent 880 /Descent -120 /CapHeight 700 /StemV 80 >>'])
}

// A page that is one JPEG 2000 image (a codestream of `width` x `height`), as scanners write them: pdf.js draws it
// with its OpenJPEG decoder (WebAssembly, served beside it).
function jpxPdf(codestream, width, height) {
  return pdfOf(['<< /Type /Catalog /Pages 2 0 R >>', '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 ${width} ${height}] /Contents 4 0 R /Resources << /XObject << /Im1 5 0 R >> >> >>`,
    stream(`q ${width} 0 0 ${height} 0 0 cm /Im1 Do Q`),
    stream(codestream.toString('latin1'), `/Type /XObject /Subtype /Image /Width ${width} /Height ${height} /Filter /JPXDecode`)])
}

// The chat requests the page sends, parsed.
function recordRequests(page) {
  const bodies = []
  page.on('request', (req) => {
    if (req.url().endsWith('/v1/chat/completions') && req.method() === 'POST') bodies.push(JSON.parse(req.postData()))
  })
  return bodies
}

// The chat requests the page sends, parsed, as they left the page; each gets ignore_eos (see ignoreEos).
function routeRequests(page) {
  const bodies = []
  page.route('**/v1/chat/completions', (route) => {
    const body = JSON.parse(route.request().postData() || '{}')
    bodies.push(body)
    return route.continue({ postData: JSON.stringify({ ...body, ignore_eos: true }) })
  })
  return bodies
}

// The chat requests the page sends, parsed, as they left the page. A user message saying "call NAME" makes the
// request name that tool in tool_choice (the grammar then forces the call: a small model would not call it by
// itself); the others say "none" (after a tool's result the model answers in words: the round ends there).
async function forceToolCalls(page) {
  const bodies = []
  await page.route('**/v1/chat/completions', (route) => {
    const body = JSON.parse(route.request().postData() || '{}')
    bodies.push(body)
    const last = body.messages?.at(-1)
    const name = last?.role === 'user' ? /call (\w+)/.exec(last.content)?.[1] : undefined
    const forced = name ? { tool_choice: { type: 'function', function: { name } } } : { tool_choice: 'none' }
    // short string arguments, so that a forced call ends well within max_tokens whatever the model writes
    const tools = body.tools?.map((t) => ({ ...t, function: { ...t.function, parameters: shortStrings(t.function.parameters) } }))
    return route.continue({ postData: JSON.stringify({ ...body, tools, ...forced, max_tokens: name ? 96 : 16 }) })
  })
  return bodies
}

// The model's name and context size in the header, once the page has read that model's /props.
async function modelReady(page, name) {
  await page.getByTestId('model').filter({ hasText: `${name} · ctx` }).waitFor({ timeout: TIMEOUT })
}

async function assistantAnswered(page) {
  const assistant = lastAssistant(page)
  assert(await assistant.locator('.error').count() === 0,
    `no error (${await assistant.locator('.error').allTextContents()})`)
  assert((await assistant.getByTestId('content').textContent()).trim().length > 0, 'the model answered')
}

async function imagesLoaded(page) {
  return page.getByTestId('message-image').evaluateAll((imgs) => imgs.map((img) => img.complete && img.naturalWidth > 0))
}

const scenarios = {
  // Send a message and watch the answer arrive in several pieces.
  async stream(page) {
    await page.getByTestId('model').filter({ hasText: 'ctx' }).waitFor({ timeout: TIMEOUT })
    await setSettings(page, { max_tokens: 48, temperature: 0 })
    await ignoreEos(page)
    await page.evaluate(() => {
      window.__lengths = []
      new MutationObserver(() => {
        const el = [...document.querySelectorAll('[data-testid="message-assistant"] [data-testid="content"]')].pop()
        const n = el ? el.textContent.length : 0
        if (n && window.__lengths.at(-1) !== n) window.__lengths.push(n)
      }).observe(document.querySelector('#messages'), { childList: true, subtree: true, characterData: true })
    })
    await sendMessage(page, 'Tell me about the sea.')
    await page.getByTestId('stop').waitFor({ state: 'visible' })
    await waitIdle(page)
    const lengths = await page.evaluate(() => window.__lengths)
    assert(lengths.length >= 2, `answer streamed in pieces (content lengths seen: ${lengths})`)
    const stats = await lastAssistant(page).getByTestId('stats').textContent()
    assert(/t\/s/.test(stats), `tokens/s shown (${stats})`)
    assert(await page.getByTestId('conversation').count() === 1, 'conversation listed')
  },

  // A server with tools (--tools get_info,write_file): the settings offer them; the model's call runs on the
  // server, its result goes back to the model, which answers. The first request names the tool in tool_choice
  // (the grammar then forces the call: a small model would not call it by itself); the next ones say "none".
  // A tool that writes runs only when the user allows it.
  async tools(page) {
    await ready(page)
    const bodies = await forceToolCalls(page)
    await page.getByTestId('settings').click()
    const box = page.locator('#settings-form [name="tools"]')
    assert(await box.count() === 1, 'the settings offer the server\'s tools')
    await box.check()
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })

    await sendMessage(page, 'Please call get_info.')
    await page.getByTestId('tool-result').first().waitFor()
    await waitIdle(page)
    assert(await page.getByTestId('message-assistant').count() === 2, 'the model answered after the tool')
    const call = await page.getByTestId('tool-call').first().textContent()
    assert(call.includes('get_info'), `the call is shown (${call})`)
    const content = await page.getByTestId('message-assistant').first().getByTestId('content').textContent()
    assert(content.trim() === '', `a reply that only calls shows no text (${content})`)
    const result = await page.getByTestId('tool-result').first().evaluate((el) => el.querySelector('pre').textContent)
    assert(JSON.parse(result).cwd, `the tool's answer is shown (${result})`)
    const offered = bodies[0].tools.map((t) => t.function.name).join()
    assert(offered === 'write_file,get_info', `the tools sent, in the server's order (${offered})`)
    const sent = bodies[1].messages
    const asked = sent.at(-2).tool_calls?.[0]
    assert(asked?.function.name === 'get_info' && sent.at(-1).role === 'tool' && sent.at(-1).tool_call_id === asked.id,
      `the call and its result went back to the model (${JSON.stringify(sent.slice(-2))})`)
    assert(sent.at(-1).content === result, 'the result as the tool gave it')

    // a writing tool asks first; refused, the model is told so and nothing is written
    page.once('dialog', (dialog) => dialog.dismiss())
    await sendMessage(page, 'Now call write_file.')
    await page.getByTestId('tool-result').nth(1).waitFor()
    await waitIdle(page)
    const refused = bodies.at(-1).messages.at(-1)
    assert(refused.role === 'tool' && refused.content.includes('the user did not allow this call'),
      `the refusal went back to the model (${refused.content})`)
    await page.reload()
    await page.getByTestId('tool-result').nth(1).waitFor() // kept with the conversation
    await page.getByTestId('tool-call').first().locator('summary').click()
    await page.getByTestId('tool-result').first().locator('summary').click()
    mkdirSync(RESULTS, { recursive: true })
    await page.screenshot({ path: join(RESULTS, 'tools.png') })
  },

  // MCP servers added in Settings (llama-server's mcpServers setting): the page connects to them, offers their
  // tools, runs the model's calls on them and sends the results back. LLAMATWIST_MCP: a server that allows the
  // page (CORS), its tools secret_word, erase_notes (destructive: asks first) and calls (what it ran);
  // LLAMATWIST_MCP_FAR: one that does not, its tools named far_…, reached through the server's /cors-proxy
  // (--ui-mcp-proxy). Both want "Authorization: Bearer LLAMATWIST_MCP_TOKEN". With LLAMATWIST_API_KEY the server
  // wants its own key too.
  async mcp(page) {
    assert(MCP && MCP_FAR && MCP_TOKEN, 'LLAMATWIST_MCP, LLAMATWIST_MCP_FAR and LLAMATWIST_MCP_TOKEN are set')
    if (API_KEY) await setSettings(page, { apiKey: API_KEY }) // the proxy wants this server's key, the far server its own
    await ready(page)
    const bodies = await forceToolCalls(page)
    const proxied = []
    page.on('request', (req) => { if (req.url().includes('/cors-proxy?')) proxied.push(req.url()) })
    const auth = JSON.stringify({ Authorization: `Bearer ${MCP_TOKEN}` })
    const status = (i) => page.getByTestId('mcp-status').nth(i)
    const save = async () => {
      await page.getByTestId('settings-save').click()
      await page.locator('#settings').waitFor({ state: 'hidden' })
      await page.getByTestId('settings').click()
    }
    const toolResult = (i) => page.getByTestId('tool-result').nth(i).evaluate((el) => el.querySelector('pre').textContent)

    // headers that are not a JSON object of strings are refused by the form; without its token the server
    // cannot be reached, and the settings say why
    await page.getByTestId('settings').click()
    assert(await page.getByTestId('mcp-server').count() === 0, 'no MCP server at first')
    await page.getByTestId('mcp-add').click()
    let row = page.getByTestId('mcp-server').last()
    await row.locator('[data-mcp="url"]').fill(MCP)
    await row.locator('[data-mcp="headers"]').fill('{"Authorization": 1}')
    await page.getByTestId('settings-save').click()
    assert(await page.locator('#settings').isVisible(), 'wrong headers: the settings stay open')
    const why = await row.locator('[data-mcp="headers"]').evaluate((el) => el.validationMessage)
    assert(/JSON object of strings/.test(why), `the form says what is wrong (${why})`)
    await row.locator('[data-mcp="headers"]').fill('')
    await save()
    await status(0).filter({ hasText: 'cannot connect' }).waitFor()
    // with the token it connects and lists its tools
    await page.getByTestId('mcp-server').first().locator('[data-mcp="headers"]').fill(auth)
    await save()
    await status(0).filter({ hasText: '3 tools: secret_word, erase_notes, calls' }).waitFor()
    await page.locator('#settings-cancel').click()

    await sendMessage(page, 'Please call secret_word.')
    await page.getByTestId('tool-result').first().waitFor()
    await waitIdle(page)
    const offered = bodies[0].tools?.map((t) => t.function.name).join()
    assert(offered === 'secret_word,erase_notes,calls', `the MCP server's tools offered (${offered})`)
    const result = await toolResult(0)
    assert(/^The secret word for .* is PAPAYA-1\.$/.test(result), `the MCP tool's answer is shown (${result})`)
    const sent = bodies[1].messages
    assert(sent.at(-2).tool_calls?.[0]?.function.name === 'secret_word' && sent.at(-1).role === 'tool' &&
      sent.at(-1).content === result, `the call and its result went back to the model (${JSON.stringify(sent.slice(-2))})`)
    assert(await page.getByTestId('message-assistant').count() === 2, 'the model answered after the tool')
    assert(proxied.length === 0, `a server that allows the page is reached directly (${proxied})`)

    // a tool that says it is destructive asks first; refused, the model is told so and the server is not called
    let asked = ''
    page.once('dialog', (dialog) => { asked = dialog.message(); dialog.dismiss() })
    await sendMessage(page, 'Now call erase_notes.')
    await page.getByTestId('tool-result').nth(1).waitFor()
    await waitIdle(page)
    assert(asked.includes('erase_notes'), `the page asked first (${asked})`)
    const refused = bodies.at(-1).messages.at(-1)
    assert(refused.role === 'tool' && refused.content.includes('the user did not allow this call'),
      `the refusal went back to the model (${refused.content})`)
    await sendMessage(page, 'Now call calls.')
    await page.getByTestId('tool-result').nth(2).waitFor()
    await waitIdle(page)
    const ran = await toolResult(2)
    assert(/^secret_word\(.*\)$/.test(ran), `the server ran secret_word only (${ran})`)

    // its prompt (with its arguments) and its resource are attached to a message, as llama-server's UI sends them
    const host = new URL(MCP).host
    await page.getByTestId('mcp-open').click()
    const prompt = page.getByTestId('mcp-prompt').filter({ hasText: 'review' })
    assert(await prompt.locator('input').count() === 2, 'an input for each of its arguments')
    await prompt.getByTestId('mcp-attach-prompt').click()
    assert(await page.locator('#mcp-picker').isVisible(), 'a required argument missing: nothing attached')
    await prompt.locator('input[name="code"]').fill('x = 1')
    await prompt.getByTestId('mcp-attach-prompt').click()
    await page.locator('#mcp-picker').waitFor({ state: 'hidden' })
    await page.getByTestId('mcp-open').click()
    await page.getByTestId('mcp-resource').filter({ hasText: 'today' }).getByTestId('mcp-attach-resource').click()
    await page.locator('#mcp-picker').waitFor({ state: 'hidden' })
    assert(await page.getByTestId('attachment-file').count() === 2, 'both attached')
    await sendMessage(page, 'What do you make of these?')
    await waitIdle(page)
    const texts = bodies.at(-1).messages.at(-1).content.map((part) => part.text)
    assert(texts[0] === `\n\n--- MCP Prompt: review (${host}) ---\nPlease review this Python code:\nx = 1` &&
      texts[1] === `\n\n--- MCP Resource: today (${host}) ---\nBuy KIWIS and call the plumber.` &&
      texts[2] === 'What do you make of these?', `the prompt and the resource sent (${JSON.stringify(texts)})`)

    // the far server does not allow the page: directly it cannot be reached; through this server it can
    await page.getByTestId('settings').click()
    await page.getByTestId('mcp-add').click()
    row = page.getByTestId('mcp-server').last()
    await row.locator('[data-mcp="url"]').fill(MCP_FAR)
    await row.locator('[data-mcp="headers"]').fill(auth)
    await save()
    await status(1).filter({ hasText: 'cannot connect' }).waitFor()
    await page.getByTestId('mcp-server').last().locator('[data-mcp="useProxy"]').check()
    await save()
    await status(1).filter({ hasText: '3 tools: far_secret_word, far_erase_notes, far_calls' }).waitFor()
    await page.locator('#settings-cancel').click()
    await sendMessage(page, 'Now call far_secret_word.')
    await page.getByTestId('tool-result').nth(3).waitFor()
    await waitIdle(page)
    const far = await toolResult(3)
    assert(/^The secret word for .* is PAPAYA-1\.$/.test(far), `the far server's answer (${far})`)
    assert(proxied.length > 0, 'the far server was reached through /cors-proxy')
    const both = bodies.at(-2).tools.map((t) => t.function.name).join()
    assert(both === 'secret_word,erase_notes,calls,far_secret_word,far_erase_notes,far_calls', `both servers' tools (${both})`)

    // the servers are kept with the settings: after a reload the page connects again; one turned off is left
    await page.reload()
    await ready(page)
    await page.getByTestId('settings').click()
    await status(1).filter({ hasText: '3 tools' }).waitFor()
    await page.getByTestId('mcp-server').first().locator('[data-mcp="enabled"]').uncheck()
    await save()
    assert(await status(0).textContent() === 'off', 'a server turned off')
    mkdirSync(RESULTS, { recursive: true })
    await page.getByTestId('mcp-servers').scrollIntoViewIfNeeded()
    await page.screenshot({ path: join(RESULTS, 'mcp.png') })
    await page.locator('#settings-cancel').click()
    await sendMessage(page, 'Once more, call far_calls.')
    await page.getByTestId('tool-result').nth(4).waitFor()
    await waitIdle(page)
    const offeredNow = bodies.at(-2).tools.map((t) => t.function.name).join()
    assert(offeredNow === 'far_secret_word,far_erase_notes,far_calls', `only the server on is offered (${offeredNow})`)
  },

  // A model whose template thinks (a <think> block; /props supports_thinking): the reasoning picker beside the
  // message box sets enable_thinking and a budget (as llama-server's UI), every request asks for reasoning_control,
  // and "Skip reasoning" ends a running thinking block (POST /v1/chat/completions/control): the model answers.
  // Each request biases one word so strongly that the model writes nothing else (it thinks until stopped).
  async thinking(page) {
    await ready(page)
    const picker = page.getByTestId('reasoning-effort')
    assert(await picker.isVisible(), 'the reasoning picker is shown for a model that thinks')
    const [token] = await page.evaluate(async () =>
      (await (await fetch('tokenize', { method: 'POST', body: JSON.stringify({ content: ' blue' }) })).json()).tokens)
    const bodies = []
    await page.route('**/v1/chat/completions', (route) => {
      const body = JSON.parse(route.request().postData() || '{}')
      bodies.push(body)
      return route.continue({ postData: JSON.stringify({ ...body, logit_bias: { [token]: 100 }, temperature: 0,
        ignore_eos: true, max_tokens: body.messages.at(-1).content === 'Think long.' ? 400 : 8 }) })
    })
    const expect = { off: [false, undefined], low: [true, 512], medium: [true, 2048], high: [true, 8192], max: [true, undefined] }
    for (const [effort, [enabled, budget]] of Object.entries(expect)) {
      await picker.selectOption(effort)
      await sendMessage(page, `Effort ${effort}.`)
      await waitIdle(page)
      const sent = bodies.at(-1)
      assert(sent.reasoning_control === true && sent.chat_template_kwargs?.enable_thinking === enabled &&
        sent.thinking_budget_tokens === budget, `${effort}: ${JSON.stringify(sent)}`)
      const reply = lastAssistant(page)
      assert(await reply.locator('.error').count() === 0, `${effort}: no error (${await reply.locator('.error').allTextContents()})`)
      assert((await reply.textContent()).includes('blue'), `${effort}: the model wrote (${await reply.textContent()})`)
    }
    const off = lastAssistant(page) // "max": it thinks; "off" (the first reply) did not
    assert(await page.getByTestId('message-assistant').first().getByTestId('reasoning').count() === 0,
      'thinking off: no reasoning')
    assert(await off.getByTestId('reasoning').count() === 1, 'thinking on: reasoning shown')

    await sendMessage(page, 'Think long.')
    const skip = page.getByTestId('skip-reasoning')
    await skip.waitFor({ state: 'visible' })
    assert(await lastAssistant(page).getByTestId('reasoning').evaluate((el) => el.open), 'the reasoning shown while it thinks')
    mkdirSync(RESULTS, { recursive: true })
    await page.screenshot({ path: join(RESULTS, 'thinking.png') })
    await skip.click()
    await waitIdle(page)
    assert(await skip.isHidden(), 'no skip button once the reply ended')
    const reply = lastAssistant(page)
    const reasoning = await reply.getByTestId('reasoning').textContent()
    const content = (await reply.getByTestId('content').textContent()).trim()
    assert(reasoning.includes('Enough.'), `the thinking was ended with the budget message (${reasoning.slice(-80)})`)
    assert(content.startsWith('blue'), `then the model answered (${content.slice(0, 80)})`)
    assert(bodies.at(-1).thinking_budget_tokens === undefined, 'max: no budget')

    await page.reload()
    await ready(page)
    assert(await picker.inputValue() === 'max', 'the choice is kept')
  },

  // llama-server UI's display and input settings, with its defaults: your messages as markdown, Enter sends,
  // stats shown; turned off, Enter writes a new line (Ctrl+Enter sends), messages show as typed, no stats;
  // custom CSS applies to the page. The replies are made up: no model needed.
  async display(page) {
    const chunk = (delta) => `data: ${JSON.stringify({ choices: [{ index: 0, delta }] })}\n\n`
    await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200,
      headers: { 'Content-Type': 'text/event-stream' },
      body: chunk({ content: 'Answer.' }) + `data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }],
        timings: { predicted_n: 1, predicted_per_second: 10 } })}\n\n` + 'data: [DONE]\n\n' }))
    await page.getByTestId('input').fill('Some **bold** words')
    await page.getByTestId('input').press('Enter')
    await waitIdle(page)
    const user = page.getByTestId('user-content').last()
    assert(await user.locator('strong').textContent() === 'bold', 'your message shown as markdown')
    assert(await page.getByTestId('stats').count() === 1, 'stats shown')

    await page.getByTestId('settings').click()
    await page.getByTestId('display').locator('summary').click()
    for (const name of ['sendOnEnter', 'renderUserContentAsMarkdown', 'showMessageStats']) {
      await page.locator(`#settings-form [name="${name}"]`).uncheck()
    }
    await page.locator('#settings-form [name="customCss"]').fill('.message.user { outline: 3px solid rgb(255, 0, 0); }')
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    const input = page.getByTestId('input')
    await input.fill('Two **lines**')
    await input.press('End')
    await input.press('Enter')
    await input.pressSequentially('here')
    assert(await input.inputValue() === 'Two **lines**\nhere', `Enter wrote a new line (${await input.inputValue()})`)
    assert(await page.getByTestId('message-user').count() === 1, 'Enter did not send')
    await input.press('Control+Enter')
    await waitIdle(page)
    assert(await page.getByTestId('message-user').count() === 2, 'Ctrl+Enter sent')
    const plain = page.getByTestId('user-content').last()
    assert(await plain.textContent() === 'Two **lines**\nhere' && await plain.locator('strong').count() === 0,
      `your message as typed (${await plain.textContent()})`)
    assert(await page.getByTestId('stats').count() === 0, 'no stats')
    const outline = await page.getByTestId('message-user').first().evaluate((el) => getComputedStyle(el).outlineColor)
    assert(outline === 'rgb(255, 0, 0)', `custom CSS applied (${outline})`)
    await page.reload()
    await page.getByTestId('user-content').first().waitFor()
    assert(await page.getByTestId('user-content').first().locator('strong').count() === 0, 'kept after a reload')
  },

  // A new conversation's name (llama-server UI's title settings): the first line of its first message by default,
  // all of it with that off; with titleGenerationUseLLM, the title the model writes from the first exchange (a
  // separate request to the real model, with the user's prompt template), kept after a reload.
  async titles(page) {
    const names = page.locator('#conversations .conv-name')
    await sendMessage(page, '  \nFirst line here\nsecond line')
    await waitIdle(page)
    assert(await names.first().textContent() === 'First line here', `the first line (${await names.first().textContent()})`)

    await page.getByTestId('settings').click()
    await page.getByTestId('titles').locator('summary').click()
    const prompt = page.locator('#settings-form [name="titleGenerationPrompt"]')
    assert((await prompt.inputValue()).startsWith('Based on the following interaction'), "llama-server UI's prompt")
    await page.locator('#settings-form [name="titleGenerationUseFirstLine"]').uncheck()
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    await page.getByTestId('new-chat').click()
    await sendMessage(page, 'Two\nlines')
    await waitIdle(page)
    assert(await names.first().textContent() === 'Two\nlines', `all of the first message (${await names.first().textContent()})`)

    await page.getByTestId('settings').click()
    await page.getByTestId('titles').locator('summary').click()
    await page.locator('#settings-form [name="titleGenerationUseLLM"]').check()
    await prompt.fill('Name this chat ($&): {{USER}} / {{ASSISTANT}}')
    await page.locator('#settings-form [name="max_tokens"]').fill('400')
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    await page.getByTestId('new-chat').click()
    const titled = page.waitForResponse((r) => r.url().endsWith('/v1/chat/completions')
      && JSON.parse(r.request().postData()).stream !== true, { timeout: TIMEOUT })
    await sendMessage(page, 'Tell me about cats.')
    const response = await titled
    const body = JSON.parse(response.request().postData())
    const reply = await lastAssistant(page).getByTestId('content').textContent().catch(() => '')
    const sent = body.messages[0].content
    assert(body.messages.length === 1 && sent.startsWith('Name this chat ($&): Tell me about cats. / '),
      `the prompt from the template, as written ($& is not a pattern): ${sent}`)
    assert(body.chat_template_kwargs?.enable_thinking === false && body.max_tokens === 48, 'no thinking, a short reply')
    assert(!response.request().headers()['x-conversation-id'], "not the conversation's stream")
    assert(reply === '' || sent.includes(reply.trim().slice(0, 20)), `the reply in the prompt (${reply})`)
    assert(sent.length <= 'Name this chat ($&): Tell me about cats. / '.length + 1001, `a long reply cut (${sent.length})`)
    const wrote = (await response.json()).choices[0].message.content
    const title = wrote.trim().replace(/^(Title:|Subject:|Topic:)\s*/i, '').replace(/^"|"$/g, '').trim().split('\n')[0].trim()
    assert(title.length >= 3, `the model wrote a title (${wrote})`)
    await page.locator('#conversations .conv.active .conv-name').filter({ hasText: title.slice(0, 80) }).waitFor()
    assert(await page.locator('#title').textContent() === title.slice(0, 80), 'the header shows the title')
    await page.reload()
    await ready(page)
    assert(await names.first().textContent() === title.slice(0, 80), 'kept after a reload')
  },

  // llama-server UI's other display and developer settings: the system prompt shown at the top of a conversation
  // (showSystemMessage), a reply's Raw/Formatted switch (showRawOutputSwitch), the reasoning as plain text
  // (renderThinkingAsMarkdown off), reasoning_format "none" asked for and the thinking left in the text
  // (disableReasoningParsing), the server's build in the corner (showBuildVersion: /props build_info). The replies
  // are made up: no model needed.
  async developer(page) {
    const bodies = []
    const chunk = (delta) => `data: ${JSON.stringify({ choices: [{ index: 0, delta }] })}\n\n`
    await page.route('**/v1/chat/completions', (route) => {
      const body = JSON.parse(route.request().postData())
      bodies.push(body)
      const events = body.reasoning_format === 'none'
        ? chunk({ content: '<think>Pondering.</think>Plain answer.' })
        : chunk({ reasoning_content: 'Some **deep** thought.' }) + chunk({ content: 'A **bold** answer.' })
      return route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream' }, body: events + 'data: [DONE]\n\n' })
    })
    await setSettings(page, { systemPrompt: 'Be *terse*.' })
    await sendMessage(page, 'Hi')
    await waitIdle(page)
    const system = page.getByTestId('message-system')
    assert(await system.count() === 1 && await system.locator('em').textContent() === 'terse', 'the system prompt shown')
    assert(await page.getByTestId('raw-switch').count() === 0, 'no Raw switch by default')
    const reasoning = lastAssistant(page).getByTestId('reasoning')
    assert(await reasoning.locator('strong').textContent() === 'deep', 'the reasoning as markdown')
    assert(await page.getByTestId('build-version').isHidden(), 'no build shown by default')
    assert(!('reasoning_format' in bodies[0]), 'the server parses the reasoning by default')

    await page.getByTestId('settings').click()
    await page.getByTestId('display').locator('summary').click()
    await page.locator('#settings-form [name="showSystemMessage"]').uncheck()
    await page.locator('#settings-form [name="renderThinkingAsMarkdown"]').uncheck()
    for (const name of ['showRawOutputSwitch', 'showBuildVersion']) await page.locator(`#settings-form [name="${name}"]`).check()
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    assert(await system.count() === 0, 'the system prompt hidden')
    assert(await reasoning.locator('strong').count() === 0 && (await reasoning.textContent()).includes('Some **deep** thought.'),
      'the reasoning as plain text')
    const props = await (await page.request.get(new URL('props', URL_).href)).json()
    assert(await page.getByTestId('build-version').textContent() === `build ${props.build_info}`, 'the build shown')
    const content = lastAssistant(page).getByTestId('content')
    const rawSwitch = lastAssistant(page).getByTestId('raw-switch')
    await rawSwitch.click()
    assert(await content.textContent() === 'A **bold** answer.' && await content.locator('strong').count() === 0, 'Raw: as written')
    assert(await rawSwitch.textContent() === 'Formatted', 'the switch says Formatted')
    await rawSwitch.click()
    assert(await content.locator('strong').textContent() === 'bold', 'Formatted again')

    await page.getByTestId('settings').click()
    await page.locator('#settings-form [name="disableReasoningParsing"]').check()
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    await sendMessage(page, 'Again')
    await waitIdle(page)
    assert(bodies.at(-1).reasoning_format === 'none', 'reasoning_format none asked for')
    await lastAssistant(page).getByTestId('raw-switch').click()
    assert(await lastAssistant(page).getByTestId('content').textContent() === '<think>Pondering.</think>Plain answer.'
      && await lastAssistant(page).getByTestId('reasoning').count() === 0, 'the thinking left in the text')
  },

  // llama-server UI's preEncodeConversation, against the real model: once a reply is done the page sends the
  // conversation with it again (n_predict 0, not streamed, no conversation id, the reply's own request otherwise),
  // and the next message finds all of it in the server's cache.
  async preencode(page) {
    await page.getByTestId('settings').click()
    await page.locator('#settings-form [name="max_tokens"]').fill('8')
    await page.locator('#settings-form [name="preEncodeConversation"]').check()
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    const requests = recordRequests(page)
    const encoded = page.waitForResponse((r) => r.url().endsWith('/v1/chat/completions')
      && JSON.parse(r.request().postData()).n_predict === 0, { timeout: TIMEOUT })
    await sendMessage(page, 'Hello there')
    const response = await encoded
    await waitIdle(page)
    const body = JSON.parse(response.request().postData())
    const reply = (await page.evaluate(() => JSON.parse(localStorage.getItem('llamatwist.conversations'))))[0]
    const node = Object.values(reply.nodes).find((n) => n.role === 'assistant')
    assert(body.stream === false && !('max_tokens' in body) && !response.request().headers()['x-conversation-id'],
      `a plain request for no tokens (${JSON.stringify(body)})`)
    assert(JSON.stringify(body.messages) === JSON.stringify([{ role: 'user', content: 'Hello there' },
      { role: 'assistant', content: node.content }]), `the conversation with the reply (${JSON.stringify(body.messages)})`)
    const { usage } = await response.json()
    assert(response.ok && usage.prompt_tokens > 0, 'the server read it')
    const again = page.waitForResponse((r) => r.url().endsWith('/v1/chat/completions')
      && JSON.parse(r.request().postData()).n_predict === 0, { timeout: TIMEOUT })
    await sendMessage(page, 'And more')
    await again
    await waitIdle(page)
    assert(requests.filter((r) => r.n_predict === 0).length === 2, 'again after the second reply')
    const conv = (await page.evaluate(() => JSON.parse(localStorage.getItem('llamatwist.conversations'))))[0]
    const last = Object.values(conv.nodes).filter((n) => n.role === 'assistant').at(-1)
    assert(last.timings?.cache_n >= usage.prompt_tokens,
      `the next message found the conversation in the cache (${last.timings?.cache_n} of ${usage.prompt_tokens} tokens)`)
  },

  // Settings files as llama-server UI's ({ config, userOverrides, timestamp, version: 1 }, its names and types):
  // exported without the API key and MCP headers unless asked, imported from llama-server UI's own (booleans,
  // numbers, systemMessage) into the form; a file that is not one is refused and nothing changes.
  async settingsfile(page) {
    const servers = JSON.stringify([{ url: 'http://127.0.0.1:9/mcp', headers: '{"Authorization": "Bearer t0k"}', enabled: false, useProxy: false }])
    await page.evaluate((mcp) => localStorage.setItem('llamatwist.settings', JSON.stringify({
      temperature: '0.3', systemPrompt: 'Be kind.', apiKey: 's3cret', showRawOutputSwitch: 'on', mcpServers: mcp })), servers)
    await page.reload()
    await ready(page)
    const exported = async (sensitive) => {
      await page.getByTestId('settings').click()
      if (sensitive) await page.getByTestId('settings-export-sensitive').check()
      const saving = page.waitForEvent('download')
      await page.getByTestId('settings-export').click()
      const file = await saving
      assert(/^llama_settings_\d{4}-\d\d-\d\d\.json$/.test(file.suggestedFilename()), `named as llama-server's (${file.suggestedFilename()})`)
      const data = JSON.parse(readFileSync(await file.path(), 'utf8'))
      await page.getByTestId('settings-cancel').click()
      return data
    }
    const plain = await exported(false)
    const c = plain.config
    assert(plain.version === 1 && Array.isArray(plain.userOverrides) && plain.userOverrides.includes('temperature'), 'the format')
    assert(c.temperature === 0.3 && c.systemMessage === 'Be kind.' && !('systemPrompt' in c), `its names and numbers (${JSON.stringify(c)})`)
    assert(c.showRawOutputSwitch === true && c.sendOnEnter === true && c.pdfAsImage === false && !('top_k' in c), 'checkboxes as booleans, blanks left out')
    assert(!('apiKey' in c) && !JSON.parse(c.mcpServers)[0].headers && JSON.parse(c.mcpServers)[0].url.endsWith('/mcp'), 'no secrets')
    const full = await exported(true)
    assert(full.config.apiKey === 's3cret' && JSON.parse(full.config.mcpServers)[0].headers.includes('t0k'), 'secrets when asked')

    await page.evaluate(() => localStorage.clear())
    await page.reload()
    await ready(page)
    await page.getByTestId('settings').click()
    await page.getByTestId('settings-import-file').setInputFiles({ name: 'bad.json', mimeType: 'application/json',
      buffer: Buffer.from('{"theme": "dark"}') })
    await page.locator('.toast').filter({ hasText: 'Import failed: not a settings file' }).waitFor()
    assert(await page.locator('#settings-form [name="temperature"]').inputValue() === '', 'nothing changed')
    const theirs = { config: { temperature: 0.55, systemMessage: 'From llama-server.', showMessageStats: false,
      titleGenerationUseLLM: true, max_tokens: 99, unknownKey: 1 }, userOverrides: ['temperature'], timestamp: 1, version: 1 }
    await page.getByTestId('settings-import-file').setInputFiles({ name: 'llama_settings.json', mimeType: 'application/json',
      buffer: Buffer.from(JSON.stringify(theirs)) })
    await page.locator('.toast').filter({ hasText: 'Imported settings' }).waitFor()
    const form = (name) => page.locator(`#settings-form [name="${name}"]`)
    assert(await form('temperature').inputValue() === '0.55' && await form('systemPrompt').inputValue() === 'From llama-server.'
      && await form('max_tokens').inputValue() === '99', 'the form shows what was imported')
    assert(!await form('showMessageStats').isChecked() && await form('titleGenerationUseLLM').isChecked(), 'booleans read')
    await page.getByTestId('settings-cancel').click()
    await page.reload()
    await ready(page)
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('llamatwist.settings')))
    assert(stored.temperature === '0.55' && stored.showMessageStats === '' && !('unknownKey' in stored), `saved (${JSON.stringify(stored)})`)
  },

  // llama-server UI's model information: what /props and /v1/models say of the model on screen.
  async modelinfo(page) {
    await ready(page)
    await page.getByTestId('model-info').click()
    await page.getByTestId('model-dialog').waitFor()
    const props = await (await page.request.get(new URL('props', URL_).href)).json()
    const meta = (await (await page.request.get(new URL('v1/models', URL_).href)).json()).data[0].meta
    const cell = (label) => page.getByTestId(`model-${label}`).textContent()
    assert(await cell('File') === props.model_path, 'the file')
    assert(await cell('Context size (per slot)') === `${props.default_generation_settings.n_ctx.toLocaleString('en-US')} tokens`, 'the context')
    assert(await cell('Training context') === `${meta.n_ctx_train.toLocaleString('en-US')} tokens`, 'the training context')
    assert((await cell('Parameters')).includes(meta.n_params.toLocaleString('en-US')), 'the parameters')
    assert((await cell('Vocabulary')).startsWith(`${meta.n_vocab.toLocaleString('en-US')} tokens`), 'the vocabulary')
    assert(await cell('Parallel slots') === String(props.total_slots) && await cell('Build') === props.build_info, 'slots and build')
    assert(await cell('Media') === 'text only' && await cell('Quantization') === meta.ftype, 'media and quantization')
    await page.getByTestId('model-dialog').locator('summary').click()
    assert(await page.getByTestId('model-template').textContent() === props.chat_template, 'the chat template')
    await page.locator('#model-dialog-close').click()
    assert(await page.getByTestId('model-dialog').isHidden(), 'closed')
  },

  // A browser that ran llama-server's web UI here keeps its service worker, which serves the old UI from its cache.
  // Its update check gets this server's /sw.js, which removes itself: the page reloads and this UI comes. (The old
  // worker is a stand-in, given to the page through Playwright's routing.)
  async swremoval(page) {
    await ready(page)
    const old = "self.addEventListener('install', () => self.skipWaiting())\n"
      + 'self.addEventListener(\'activate\', (e) => e.waitUntil(self.clients.claim()))\n'
      + "self.addEventListener('fetch', (e) => { if (e.request.mode === 'navigate') e.respondWith(new Response("
      + "'<!doctype html><title>old</title><p id=\"old-ui\">the old UI</p>', { headers: { 'Content-Type': 'text/html' } })) })\n"
    await page.context().route('**/sw.js', (route) => route.fulfill({ status: 200,
      headers: { 'Content-Type': 'text/javascript', 'Cache-Control': 'no-cache' }, body: old }))
    await page.evaluate(async () => {
      await navigator.serviceWorker.register('sw.js')
      await navigator.serviceWorker.ready
    })
    await page.reload()
    await page.locator('#old-ui').waitFor()
    await page.context().unroute('**/sw.js')
    await page.evaluate(async () => (await navigator.serviceWorker.getRegistration()).update()).catch(() => {})
    await ready(page) // reloaded by the worker as it went
    assert(await page.evaluate(async () => (await navigator.serviceWorker.getRegistration()) === undefined), 'no worker left')
    assert(await page.evaluate(async () => (await caches.keys()).length) === 0, 'no cache left')
  },

  // Several conversations generate at once, against the real model (the server batches them, -np 2): a reply goes
  // on while the user writes in another conversation, the sidebar marks each conversation that is generating, and
  // Stop stops only the conversation on screen.
  async parallel(page) {
    await ignoreEos(page)
    await setSettings(page, { max_tokens: 400 })
    const busy = page.getByTestId('conv-generating')
    await sendMessage(page, 'Tell me a story.')
    await page.getByTestId('stop').waitFor()
    await page.getByTestId('new-chat').click()
    assert(await page.getByTestId('send').isVisible() && await page.getByTestId('stop').isHidden(),
      'a new conversation can be written in while the other generates')
    await sendMessage(page, 'Tell me another story.')
    await page.getByTestId('stop').waitFor()
    assert(await busy.count() === 2, `both conversations marked as generating (${await busy.count()})`)
    await page.getByTestId('stop').click() // this one only
    await waitIdle(page)
    assert(await busy.count() === 1, 'the other one still generating')
    assert((await lastAssistant(page).textContent()).includes('stopped'), 'the one on screen stopped')
    await page.locator('#conversations .conv:not(.active) .conv-name').click()
    await waitIdle(page)
    assert(await busy.count() === 0, 'then done')
    const reply = lastAssistant(page)
    assert(await reply.locator('.error').count() === 0 && !(await reply.textContent()).includes('stopped'),
      `the first one finished on its own (${await reply.getByTestId('stats').textContent()})`)
    assert((await reply.getByTestId('stats').textContent()).startsWith('400 tokens'), 'all of it')
  },

  // Diagrams in a reply, as llama-server's UI draws them: a finished svg block (or an xml one holding an <svg>)
  // drawn sanitised in a shadow root (no script, no foreignObject, no javascript: link; its <style> stays in it), a
  // mermaid block drawn by Mermaid (loaded from the server with the first one), a Source/Diagram switch, a mermaid
  // block that does not parse left as code with Mermaid's error, and a block still open (streaming) left as code.
  // The reply is made up: its diagrams must be known.
  async diagrams(page) {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60"><style>rect { fill: rgb(1, 2, 3) } '
      + '.message { color: rgb(4, 5, 6) }</style><rect id="box" width="50" height="30"/><script>window.hacked = 1</script>'
      + '<foreignObject width="10" height="10"><div id="foreign">x</div></foreignObject>'
      + '<a id="link" href="javascript:window.hacked=2"><text x="5" y="50">go</text></a>'
      + '<animate id="anim" attributeName="href" to="javascript:window.hacked=3"/></svg>'
    const reply = `Drawn:\n\n\`\`\`svg\n${svg}\n\`\`\`\n\n\`\`\`xml\n<svg xmlns="http://www.w3.org/2000/svg"><circle id="dot" r="5"/></svg>\n\`\`\`\n\n`
      + '```mermaid\ngraph TD\n  A[Start here] --> B[Finish line]\n```\n\n```mermaid\nthis is (( not mermaid\n```\n\n'
      + '```svg\n<svg xmlns="http://www.w3.org/2000/svg"><rect id="open"/></svg>'
    const chunk = (delta, finish = null) => `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`
    await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200,
      headers: { 'Content-Type': 'text/event-stream' },
      body: chunk({ content: reply }) + chunk({}, 'stop') + 'data: [DONE]\n\n' }))
    const loads = []
    page.on('request', (r) => { if (r.url().endsWith('/mermaid.min.js')) loads.push(r.url()) })
    await sendMessage(page, 'Draw')
    await waitIdle(page)
    const blocks = lastAssistant(page).locator('pre.code')
    assert(await blocks.count() === 5, `five code blocks (${await blocks.count()})`)
    const diagram = (i) => blocks.nth(i).getByTestId('diagram')
    await diagram(2).waitFor({ timeout: TIMEOUT })
    const inside = (i, fn) => diagram(i).evaluate(fn)
    const drawnSvg = await inside(0, (el) => ({
      rect: !!el.shadowRoot.querySelector('#box'), script: !!el.shadowRoot.querySelector('script'),
      foreign: !!el.shadowRoot.querySelector('foreignObject, #foreign'),
      link: el.shadowRoot.querySelector('#link')?.getAttribute('href') ?? null,
      anim: el.shadowRoot.querySelector('#anim')?.getAttribute('attributeName') ?? null,
      fill: getComputedStyle(el.shadowRoot.querySelector('#box')).fill,
    }))
    assert(drawnSvg.rect && !drawnSvg.script && !drawnSvg.foreign, `drawn without script or foreignObject (${JSON.stringify(drawnSvg)})`)
    assert(drawnSvg.link === null && drawnSvg.anim === null, `no javascript: link (${JSON.stringify(drawnSvg)})`)
    assert(drawnSvg.fill === 'rgb(1, 2, 3)', `its style applies inside (${drawnSvg.fill})`)
    const color = await lastAssistant(page).evaluate((el) => getComputedStyle(el).color)
    assert(color !== 'rgb(4, 5, 6)', 'its style does not reach the page')
    assert(await page.evaluate(() => window.hacked) === undefined, 'nothing ran')
    assert(await inside(1, (el) => !!el.shadowRoot.querySelector('circle#dot')), 'an xml block holding an <svg> drawn')
    assert(!await blocks.nth(0).locator('code').isVisible(), 'the source hidden')

    const toggle = blocks.nth(0).getByTestId('diagram-toggle')
    await toggle.click()
    assert(await blocks.nth(0).locator('code').isVisible() && !await diagram(0).isVisible(), 'Source shows the code')
    assert(await toggle.textContent() === 'Diagram', 'then the switch says Diagram')
    await toggle.click()
    assert(await diagram(0).isVisible(), 'and back')

    const mermaidText = await inside(2, (el) => el.shadowRoot.querySelector('svg')?.textContent ?? '')
    assert(mermaidText.includes('Start here') && mermaidText.includes('Finish line'), `mermaid drawn (${mermaidText})`)
    assert(await inside(2, (el) => !el.shadowRoot.querySelector('foreignObject, script')), 'labels as SVG text')
    await blocks.nth(3).getByTestId('diagram-note').filter({ hasText: 'Mermaid:' }).waitFor()
    assert(await blocks.nth(3).getByTestId('diagram').count() === 0 && await blocks.nth(3).locator('code').isVisible(),
      'a mermaid block that does not parse stays code, with the error')
    assert(await blocks.nth(4).getByTestId('diagram').count() === 0 && await blocks.nth(4).getAttribute('data-diagram') === null,
      'a block still open stays code')
    assert(loads.length === 1, `Mermaid loaded once from the server (${loads})`)

    await page.reload()
    await ready(page)
    await diagram(2).waitFor()
    assert(await inside(0, (el) => !!el.shadowRoot.querySelector('#box')), 'drawn again after a reload')
    mkdirSync(RESULTS, { recursive: true })
    await lastAssistant(page).screenshot({ path: join(RESULTS, 'diagrams.png') })
  },

  // run_javascript (llama-server UI's jsSandboxEnabled): offered when on; the model's code runs in a sandboxed
  // worker and its output goes back: console lines and the value returned, no network, no access to the page or
  // its storage, a hard timeout, long output cut. The model's calls are made up (its code must be known).
  async sandbox(page) {
    const programs = {
      'Compute.': { code: 'console.log(6 * 7); return { sum: [1, 2, 3].reduce((a, b) => a + b) }' },
      'Reach out.': { code: "const seen = [typeof document, typeof localStorage]\n"
        + "try { await fetch('" + URL_ + "props'); seen.push('fetched') } catch { seen.push('no network') }\n"
        + 'return seen.join()' },
      'Loop.': { code: 'while (true) {}', timeout_ms: 300 },
      'Shout.': { code: "console.log('x'.repeat(9000))" },
      'Fail.': { code: 'null.property' },
    }
    const bodies = []
    const chunk = (delta, finish = null) => `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`
    await page.route('**/v1/chat/completions', (route) => {
      const body = JSON.parse(route.request().postData())
      bodies.push(body)
      const last = body.messages.at(-1)
      const program = last.role === 'user' ? programs[last.content] : null
      const events = program
        ? chunk({ tool_calls: [{ index: 0, id: `call_${bodies.length}`, type: 'function',
          function: { name: 'run_javascript', arguments: JSON.stringify(program) } }] }) + chunk({}, 'tool_calls')
        : chunk({ content: 'Done.' }) + chunk({}, 'stop')
      return route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream' }, body: events + 'data: [DONE]\n\n' })
    })
    await sendMessage(page, 'Hello')
    await waitIdle(page)
    assert(!('tools' in bodies[0]), 'no tools offered while run_javascript is off')

    await page.getByTestId('settings').click()
    await page.locator('#settings-form [name="jsSandboxEnabled"]').check()
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    const results = []
    for (const text of Object.keys(programs)) {
      await sendMessage(page, text)
      await page.getByTestId('tool-result').nth(results.length).waitFor()
      await waitIdle(page)
      results.push(bodies.at(-1).messages.at(-1).content)
    }
    assert(bodies.at(-1).tools?.map((t) => t.function.name).join() === 'run_javascript', 'run_javascript offered')
    const [compute, reach, loop, shout, fail] = results
    assert(compute === '42\n=> {"sum":6}', `console output and the value returned (${compute})`)
    assert(reach === '=> undefined,undefined,no network', `no page, no storage, no network (${reach})`)
    assert(loop === 'Error: execution timed out after 300 ms', `a loop is stopped (${loop})`)
    assert(shout.length === 8192 + '\n[output truncated]'.length && shout.endsWith('[output truncated]'),
      `long output cut (${shout.length})`)
    assert(fail.startsWith('Error: TypeError'), `an error is reported (${fail.slice(0, 60)})`)
    assert(await page.locator('iframe').count() === 0, 'no sandbox left behind')
    assert(await page.getByTestId('message-assistant').count() === 11, 'the model answered after each result')
  },

  // Stop a long generation: the stop button ends it and the partial answer stays.
  async stop(page) {
    await setSettings(page, { max_tokens: 2000, temperature: 0.8 })
    await ignoreEos(page)
    await sendMessage(page, 'Write a very long story about a dragon, with many chapters.')
    await lastAssistant(page).getByTestId('content').filter({ hasText: /\S/ }).waitFor({ timeout: TIMEOUT })
    const stop = page.getByTestId('stop')
    assert(await stop.isVisible(), 'still generating when the first tokens show')
    await stop.click()
    await waitIdle(page)
    const stats = await lastAssistant(page).getByTestId('stats').textContent()
    assert(stats.includes('stopped'), `marked stopped (${stats})`)
    const text = await lastAssistant(page).getByTestId('content').textContent()
    assert(text.trim().length > 0, 'partial answer kept')
  },

  // Regenerate makes a second branch; the arrows switch between them; editing
  // the question branches too; all of it survives a reload.
  async regenerate(page) {
    await setSettings(page, { max_tokens: 12, temperature: 1.0 })
    await sendMessage(page, 'Name a colour.')
    await waitIdle(page)
    await lastAssistant(page).getByTestId('regenerate').click()
    await waitIdle(page)
    const index = lastAssistant(page).getByTestId('branch-index')
    assert(await index.textContent() === '2/2', 'second answer is branch 2/2')
    await lastAssistant(page).getByRole('button', { name: '‹' }).click()
    assert(await lastAssistant(page).getByTestId('branch-index').textContent() === '1/2', 'back to branch 1/2')
    const user = page.getByTestId('message-user').last()
    await user.getByTestId('edit').click()
    await user.getByTestId('edit-input').fill('Name a fruit.')
    await user.getByTestId('edit-save').click()
    await waitIdle(page)
    assert(await page.getByTestId('message-user').last().getByTestId('branch-index').textContent() === '2/2',
      'edited question is branch 2/2')
    await page.reload()
    await page.getByTestId('conversation').first().waitFor()
    assert((await page.getByTestId('message-user').last().textContent()).includes('Name a fruit.'),
      'conversation restored after reload')
    assert(await page.getByTestId('message-user').last().getByTestId('branch-index').textContent() === '2/2',
      'branches restored after reload')
  },

  // "Continue": the model writes on at the end of a reply, in the same message (continue_final_message); a
  // continuation cut by a reload is resumed on top of what it continued.
  async continue(page) {
    await setSettings(page, { max_tokens: 8, temperature: 0 })
    const bodies = routeRequests(page)
    await ready(page)
    const reply = () => page.evaluate(() => {
      const [conv] = JSON.parse(localStorage.getItem('llamatwist.conversations'))
      return conv.nodes[conv.current]
    })
    await sendMessage(page, 'Count from one to fifty.')
    await waitIdle(page)
    await assistantAnswered(page)
    const before = (await reply()).content
    await lastAssistant(page).getByTestId('continue').click()
    await waitIdle(page)
    await assistantAnswered(page)
    const after = await reply()
    assert(after.content.startsWith(before) && after.content.length > before.length,
      `continued in place (${JSON.stringify(before)} -> ${JSON.stringify(after.content)})`)
    assert(after.prefix === undefined && after.timings?.predicted_n === 8, `the continuation's own timings (${JSON.stringify(after)})`)
    assert(await page.getByTestId('message-assistant').count() === 1, 'still one reply')
    const body = bodies.at(-1)
    assert(body.continue_final_message === true && body.add_generation_prompt === false, 'continue_final_message')
    assert(JSON.stringify(body.messages.at(-1)) === JSON.stringify({ role: 'assistant', content: before }),
      `the reply so far ends the request (${JSON.stringify(body.messages.at(-1))})`)

    // a long continuation, through a reload
    await setSettings(page, { max_tokens: 600 })
    await ready(page)
    await lastAssistant(page).getByTestId('continue').click()
    await page.waitForFunction((n) => {
      const el = [...document.querySelectorAll('[data-testid="message-assistant"] [data-testid="content"]')].pop()
      return el && el.textContent.length > n
    }, after.content.length + 20, { timeout: TIMEOUT, polling: 100 })
    await page.reload()
    await page.getByTestId('stop').waitFor({ state: 'visible', timeout: TIMEOUT }) // resumed, still generating
    await waitIdle(page)
    const resumed = await reply()
    assert(resumed.content.startsWith(after.content) && resumed.content.length > after.content.length + 20,
      `resumed on top of the continued reply (${JSON.stringify(resumed.content.slice(0, 200))})`)
    assert(!resumed.interrupted && !resumed.streaming && resumed.prefix === undefined, JSON.stringify(resumed))
  },

  // A changed setting (and the system prompt) is sent with the request.
  async settings(page) {
    await setSettings(page, { temperature: 0.25, max_tokens: 7, top_k: 5, systemPrompt: 'You are terse.' })
    const request = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'))
    await sendMessage(page, 'Hi')
    const body = JSON.parse((await request).postData())
    await waitIdle(page)
    assert(body.temperature === 0.25 && body.max_tokens === 7 && body.top_k === 5, `settings sent: ${JSON.stringify(body)}`)
    // how much of the context the conversation used at the last reply, beside the model's name
    const gauge = page.getByTestId('context-gauge')
    assert(/^\d+% of the context$/.test(await gauge.textContent()), `the context used (${await gauge.textContent()})`)
    const [used, nCtx] = (await gauge.getAttribute('title')).match(/\d+/g).map(Number)
    assert(used > 7 && nCtx > used, `tokens used of the context (${await gauge.getAttribute('title')})`)
    assert(body.messages[0].role === 'system' && body.messages[0].content === 'You are terse.', 'system prompt sent')
    await page.reload()
    await page.getByTestId('settings').click()
    assert(await page.locator('#settings-form [name="temperature"]').inputValue() === '0.25', 'settings persisted')
    assert(await page.locator('#settings-form [name="tools"]').count() === 0, 'no tools offered without --tools')
    assert(!('tools' in body), 'no tools sent')
    assert(await page.getByTestId('reasoning-effort').isHidden(), 'no reasoning picker for a model that does not think')
    assert(!('reasoning_control' in body) && !('chat_template_kwargs' in body), 'no reasoning fields sent')

    // llama-server UI's other request settings, folded under "More sampling": the samplers' order as names, backend
    // sampling, custom JSON merged last (refused unless it is an object); the server takes them all
    await page.getByTestId('more-sampling').locator('summary').click()
    const field = (name) => page.locator(`#settings-form [name="${name}"]`)
    for (const [name, value] of [['typ_p', '0.95'], ['repeat_last_n', '32'], ['dry_multiplier', '0.5'],
      ['xtc_threshold', '0.2'], ['samplers', 'top_k; min_p ;temperature'], ['customJson', '[1]']]) {
      await field(name).fill(value)
    }
    await field('backend_sampling').check()
    await page.getByTestId('settings-save').click()
    assert(await page.locator('#settings').isVisible(), 'custom JSON that is not an object: not saved')
    const why = await field('customJson').evaluate((el) => el.validationMessage)
    assert(why.includes('not a JSON object'), `the form says why (${why})`)
    await field('customJson').fill('{"n_probs": 2, "top_k": 3}')
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    const more = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'))
    await sendMessage(page, 'Hi again')
    const sent = JSON.parse((await more).postData())
    await waitIdle(page)
    await assistantAnswered(page)
    assert(sent.typ_p === 0.95 && sent.repeat_last_n === 32 && sent.dry_multiplier === 0.5 && sent.xtc_threshold === 0.2,
      `more sampling sent: ${JSON.stringify(sent)}`)
    assert(JSON.stringify(sent.samplers) === '["top_k","min_p","temperature"]' && sent.backend_sampling === true,
      `samplers and backend sampling sent: ${JSON.stringify(sent)}`)
    assert(sent.n_probs === 2 && sent.top_k === 3, `custom JSON merged last: ${JSON.stringify(sent)}`)
    const probs = await lastAssistant(page).getByTestId('content').textContent()
    assert(probs.trim().length > 0, 'the model answered with them')
  },

  // An assistant's reasoning goes back with the conversation (reasoning_content, as llama-server's UI sends it)
  // unless "Don't send the model's past reasoning back" is on. The replies are made up: no model needed.
  async reasoningContext(page) {
    const bodies = []
    const chunk = (delta) => `data: ${JSON.stringify({ choices: [{ index: 0, delta }] })}\n\n`
    await page.route('**/v1/chat/completions', (route) => {
      bodies.push(JSON.parse(route.request().postData()))
      return route.fulfill({ status: 200, headers: { 'Content-Type': 'text/event-stream' },
        body: chunk({ reasoning_content: `Thought ${bodies.length}.` }) + chunk({ content: `Answer ${bodies.length}.` })
          + 'data: [DONE]\n\n' })
    })
    for (const text of ['One', 'Two']) {
      await sendMessage(page, text)
      await waitIdle(page)
    }
    const back = bodies[1].messages.find((m) => m.role === 'assistant')
    assert(back.content === 'Answer 1.' && back.reasoning_content === 'Thought 1.', `reasoning sent back (${JSON.stringify(back)})`)
    await page.getByTestId('settings').click()
    await page.locator('#settings-form [name="excludeReasoningFromContext"]').check()
    await page.getByTestId('settings-save').click()
    await sendMessage(page, 'Three')
    await waitIdle(page)
    const left = bodies[2].messages.filter((m) => m.role === 'assistant')
    assert(left.length === 2 && left.every((m) => !('reasoning_content' in m)), `reasoning left out (${JSON.stringify(left)})`)
  },

  // Model output with HTML/script injection is rendered inert.
  async xss(page) {
    const evil = [
      '<script>window.__xss = "script"</script>',
      '<img src="x" onerror="window.__xss = \'img\'">',
      '<svg onload="window.__xss = \'svg\'"></svg>',
      '<iframe srcdoc="<script>parent.__xss = \'iframe\'</script>"></iframe>',
      '[click](javascript:window.__xss=\'link\')',
      '<a href="javascript:window.__xss=\'a\'" id="evil-link">a</a>',
      '<details open ontoggle="window.__xss = \'toggle\'">x</details>',
      '$\\href{javascript:window.__xss=1}{math}$',
      '```html\n<script>window.__xss = "code"</script>\n```',
    ].join('\n\n')
    const chunk = (delta) => `data: ${JSON.stringify({ choices: [{ index: 0, delta }] })}\n\n`
    await page.route('**/v1/chat/completions', (route) => route.fulfill({
      status: 200,
      headers: { 'Content-Type': 'text/event-stream' },
      body: chunk({ reasoning_content: '<img src=x onerror="window.__xss=\'reasoning\'">' })
        + chunk({ content: evil }) + 'data: [DONE]\n\n',
    }))
    await sendMessage(page, '<img src=x onerror="window.__xss=\'user\'">')
    await waitIdle(page)
    await page.waitForTimeout(500)
    const links = page.locator('#messages a')
    for (let i = 0; i < await links.count(); i++) {
      const href = await links.nth(i).getAttribute('href')
      assert(!href || !/^\s*javascript:/i.test(href), `no javascript: link (${href})`)
      await links.nth(i).click({ force: true, noWaitAfter: true }).catch(() => {})
    }
    await page.locator('[data-testid="reasoning"] summary').click()
    await page.waitForTimeout(300)
    const found = await page.evaluate(() => ({
      xss: window.__xss,
      scripts: document.querySelectorAll('#messages script, #messages iframe').length,
      handlers: [...document.querySelectorAll('#messages *')].filter((el) =>
        [...el.attributes].some((a) => a.name.startsWith('on'))).length,
    }))
    assert(found.xss === undefined, `injected code ran: ${found.xss}`)
    assert(found.scripts === 0 && found.handlers === 0, `inert markup: ${JSON.stringify(found)}`)
    const code = await lastAssistant(page).locator('pre code').textContent()
    assert(code.includes('<script>'), 'code block shows the markup as text')
  },

  // Servers with --api-key: the key from the settings is sent.
  async apikey(page) {
    await page.getByTestId('model').filter({ hasText: 'API key' }).waitFor({ timeout: TIMEOUT })
    await setSettings(page, { apiKey: API_KEY, max_tokens: 8 })
    await page.getByTestId('model').filter({ hasText: 'ctx' }).waitFor({ timeout: TIMEOUT })
    await sendMessage(page, 'Hello')
    await waitIdle(page)
    assert(await lastAssistant(page).locator('.error').count() === 0, 'no error with the key')
  },

  // A populated chat on a phone-sized screen and on a desktop, for the log.
  async screenshot(page) {
    await setSettings(page, { max_tokens: 40, temperature: 0 })
    await sendMessage(page, 'Write a Python function that adds two numbers, in a code block.')
    await waitIdle(page)
    mkdirSync(RESULTS, { recursive: true })
    await page.screenshot({ path: join(RESULTS, 'chat.png') })
    await page.setViewportSize({ width: 390, height: 780 })
    await page.screenshot({ path: join(RESULTS, 'chat-phone.png') })
    console.log(`screenshot: ${join(RESULTS, 'chat.png')}`)
  },

  // Attach an image with the file picker, send it with a question, see the answer and the image.
  async vision(page) {
    await ready(page)
    const bytes = readFileSync(IMAGE)
    const bodies = recordRequests(page)
    await page.getByTestId('attach').waitFor({ state: 'visible' })
    await page.getByTestId('attach-file').setInputFiles(IMAGE)
    await page.getByTestId('attachment').first().waitFor()
    assert(await page.getByTestId('attachment').count() === 1, 'one image waiting to be sent')
    await page.getByTestId('input').fill('What is in this picture?')
    await page.getByTestId('send').click()
    await page.getByTestId('send').waitFor({ state: 'visible', timeout: TIMEOUT })
    const assistant = page.getByTestId('message-assistant').last()
    assert(await assistant.locator('.error').count() === 0,
      `no error (${await assistant.locator('.error').allTextContents()})`)
    const answer = await assistant.getByTestId('content').textContent()
    assert(answer.trim().length > 0, 'the model answered')
    assert(await page.getByTestId('attachment').count() === 0, 'the attachment was sent, the box is empty')
    // the request carried the image as an image_url part holding the file's own bytes
    assert(bodies.length === 1, `one chat request (${bodies.length})`)
    const content = bodies[0].messages.at(-1).content
    assert(Array.isArray(content), 'content parts')
    const image = content.find((p) => p.type === 'image_url')
    assert(image && image.image_url.url === `data:image/png;base64,${bytes.toString('base64')}`,
      'an image_url part with the file as a data: URL')
    assert(content.some((p) => p.type === 'text' && p.text === 'What is in this picture?'), 'the text part')
    assert(JSON.stringify(await imagesLoaded(page)) === '[true]', 'the image is shown in the conversation')

    // a pasted image, removed again, then pasted and sent alone: the history keeps the first image
    await pasteImage(page, bytes)
    await page.getByTestId('attachment').first().waitFor()
    await page.getByTestId('attachment-remove').click()
    assert(await page.getByTestId('attachment').count() === 0, 'removed')
    await pasteImage(page, bytes)
    await page.getByTestId('attachment').first().waitFor()
    await page.getByTestId('send').click()
    await page.getByTestId('send').waitFor({ state: 'visible', timeout: TIMEOUT })
    assert(await page.getByTestId('message-assistant').last().locator('.error').count() === 0, 'no error, image alone')
    const second = bodies.at(-1).messages
    const images = second.flatMap((m) => (Array.isArray(m.content) ? m.content : [])).filter((p) => p.type === 'image_url')
    assert(images.length === 2, `both images sent with the history (${images.length})`)
    assert(JSON.stringify(await imagesLoaded(page)) === '[true,true]', 'both images shown')

    // kept in the browser: shown again after a reload
    await page.reload()
    await page.getByTestId('message-image').first().waitFor()
    assert(JSON.stringify(await imagesLoaded(page)) === '[true,true]', 'the images survive a reload')

    // llama-server UI's maxImageMPixels: a bigger image is scaled down (here 1200 pixels to at most 300) and sent so
    await setSettings(page, { maxImageMPixels: 0.0003 })
    await pasteImage(page, bytes)
    await page.getByTestId('attachment').first().waitFor()
    await page.getByTestId('send').click()
    await waitIdle(page)
    assert(await page.getByTestId('message-assistant').last().locator('.error').count() === 0, 'no error, scaled image')
    const scaled = bodies.at(-1).messages.at(-1).content.find((p) => p.type === 'image_url').image_url.url
    const size = await page.evaluate(async (url) => {
      const img = new Image()
      img.src = url
      await img.decode()
      return [img.naturalWidth, img.naturalHeight]
    }, scaled)
    assert(size[0] * size[1] <= 300 && size[0] === 20 && size[1] === 15, `scaled to 20x15 (${size})`)
    mkdirSync(RESULTS, { recursive: true })
    await page.screenshot({ path: join(RESULTS, 'vision.png') })
  },

  // An audio clip or a video attached with the file picker: sent as input_audio (base64 and format) or as a
  // video_url data: URL, answered, and shown as a player, also after a reload.
  async audio(page) { await sendClip(page, 'audio') },

  // Voice input (a model that takes audio): the microphone button records (Chromium's fake microphone, a beep) and
  // attaches the recording as a 16 kHz mono WAV clip, sent as input_audio and answered.
  async record(page) {
    await ready(page)
    await page.context().grantPermissions(['microphone'])
    const mic = page.getByTestId('mic')
    assert(await mic.isVisible(), 'a microphone button for a model that takes audio')
    await mic.click()
    await page.locator('#mic.recording').waitFor()
    await page.waitForTimeout(1500)
    await mic.click()
    await page.getByTestId('attachment').first().waitFor()
    assert(!(await mic.getAttribute('class') ?? '').includes('recording'), 'recording stopped')
    const bodies = recordRequests(page)
    await sendMessage(page, 'What do you hear?')
    await waitIdle(page)
    await assistantAnswered(page)
    const part = bodies[0].messages.at(-1).content.find((p) => p.type === 'input_audio')
    assert(part?.input_audio.format === 'wav', `an input_audio part, format wav (${JSON.stringify(part)?.slice(0, 80)})`)
    const wav = Buffer.from(part.input_audio.data, 'base64')
    assert(wav.toString('latin1', 0, 4) === 'RIFF' && wav.readUInt16LE(22) === 1 && wav.readUInt32LE(24) === 16000,
      'a 16 kHz mono WAV file')
    const seconds = (wav.length - 44) / 32000
    assert(seconds > 1 && seconds < 4, `about as long as the recording (${seconds} s)`)
    let peak = 0
    for (let i = 44; i + 1 < wav.length; i += 2) peak = Math.max(peak, Math.abs(wav.readInt16LE(i)))
    assert(peak > 1000, `the microphone's sound is in it (peak ${peak})`)
    assert(await page.getByTestId('message-audio').count() === 1, 'the recording is shown in the conversation')
  },
  async video(page) { await sendClip(page, 'video') },

  // A router: pick a model, chat with it, switch to another, chat again; the choice survives a reload.
  async router(page) {
    const picker = page.getByTestId('model-select')
    await picker.waitFor({ state: 'visible', timeout: TIMEOUT })
    const names = await picker.locator('option').evaluateAll((opts) => opts.map((o) => o.value))
    assert(names.length >= 2, `the picker lists the models (${names})`)
    const [first, second] = names
    assert(await picker.inputValue() === first, `the first model is chosen at first (${await picker.inputValue()})`)
    await modelReady(page, first)
    await setSettings(page, { max_tokens: 6, temperature: 0 })
    await modelReady(page, first)
    const bodies = routeRequests(page)

    await picker.selectOption(second)
    await modelReady(page, second)
    await sendMessage(page, 'Hello')
    await waitIdle(page)
    await assistantAnswered(page)
    assert(bodies.length === 1 && bodies[0].model === second, `the request named ${second} (${JSON.stringify(bodies)})`)

    await picker.selectOption(first)
    await modelReady(page, first)
    await sendMessage(page, 'And you?')
    await waitIdle(page)
    await assistantAnswered(page)
    assert(bodies.length === 2 && bodies[1].model === first, `the request named ${first} (${bodies[1]?.model})`)
    assert(bodies[1].messages.length === 3, 'the conversation went on with the other model')

    await picker.selectOption(second)
    await modelReady(page, second)
    await page.reload()
    await modelReady(page, second)
    assert(await picker.inputValue() === second, `the choice is remembered (${await picker.inputValue()})`)
    await sendMessage(page, 'Once more')
    await waitIdle(page)
    await assistantAnswered(page)
    assert(bodies.length === 3 && bodies[2].model === second, `the request named ${second} after the reload`)
    await page.getByTestId('model-info').click() // the model information is the chosen model's
    const chosen = await (await page.request.get(new URL(`props?model=${encodeURIComponent(second)}`, URL_).href)).json()
    assert(await page.getByTestId('model-Model').textContent() === second
      && await page.getByTestId('model-File').textContent() === chosen.model_path, 'the chosen model described')
    await page.locator('#model-dialog-close').click()

    // unloading the chosen model frees it; the next message loads it again
    await page.getByTestId('unload-model').click()
    await page.getByTestId('model').filter({ hasText: 'unloaded' }).waitFor()
    let status
    for (let i = 0; i < 100 && status !== 'unloaded'; i++) { // the router stops its server in the background
      if (i) await page.waitForTimeout(100)
      const listed = await page.evaluate(async () => (await (await fetch('v1/models')).json()).data)
      status = listed.find((m) => m.id === second)?.status?.value
    }
    assert(status === 'unloaded', `${second} unloaded (${status})`)
    assert(await page.getByTestId('unload-model').isHidden(), 'nothing to unload')
    await sendMessage(page, 'Back again?')
    await waitIdle(page)
    await assistantAnswered(page)
    assert(!(await page.getByTestId('model').textContent()).includes('unloaded'), 'loaded again by the message')
    mkdirSync(RESULTS, { recursive: true })
    await page.screenshot({ path: join(RESULTS, 'router.png') })

    // a router without models says so
    await page.route('**/v1/models', (route) => route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify({ data: [], object: 'list' }) }))
    await page.reload()
    await page.getByTestId('model').filter({ hasText: 'No models' }).waitFor({ timeout: TIMEOUT })
    assert(await picker.isHidden(), 'no picker without models')
  },

  // --ui-config's temperature is the settings form's default, and is sent, until the user saves another value.
  async uisettings(page) {
    await ready(page)
    assert(await page.getByTestId('model-select').isHidden(), 'no model picker on a one-model server')
    const field = page.locator('#settings-form [name="temperature"]')
    await page.getByTestId('settings').click()
    assert(await field.inputValue() === '0.25', `ui_settings temperature shown (${await field.inputValue()})`)
    const system = await page.locator('#settings-form [name="systemPrompt"]').inputValue()
    assert(system === 'Be brief.', `ui_settings systemMessage shown as the system prompt (${system})`)
    assert(await page.locator('#settings-form [name="pdfAsImage"]').isChecked(), 'a boolean ui_settings checkbox: on')
    await page.locator('#settings-cancel').click()
    const bodies = recordRequests(page)
    await setSettings(page, { max_tokens: 4 })
    await ready(page)
    await sendMessage(page, 'Hi')
    await waitIdle(page)
    assert(bodies[0]?.temperature === 0.25 && bodies[0].max_tokens === 4, `sent: ${JSON.stringify(bodies[0])}`)
    assert(bodies[0].n_probs === 1, `customJson given as an object by --ui-config, merged: ${JSON.stringify(bodies[0])}`)
    assert(!('model' in bodies[0]), 'no model field on a one-model server')
    assert(bodies[0].messages[0]?.role === 'system' && bodies[0].messages[0].content === 'Be brief.',
      `the system prompt from ui_settings sent: ${JSON.stringify(bodies[0].messages[0])}`)

    // the user's own value wins, also after a reload; so does a cleared field (the server's sampling default)
    await setSettings(page, { temperature: 0.5 })
    await page.reload()
    await ready(page)
    await page.getByTestId('settings').click()
    assert(await field.inputValue() === '0.5', `the saved temperature wins (${await field.inputValue()})`)
    await page.locator('#settings-cancel').click()
    await setSettings(page, { temperature: '' })
    await page.reload()
    await ready(page)
    await page.getByTestId('settings').click()
    assert(await field.inputValue() === '', `the cleared temperature stays cleared (${await field.inputValue()})`)
    assert(await page.locator('#settings-form [name="max_tokens"]').inputValue() === '4', 'other saved values kept')
  },

  // A reply survives a reload: its request carries X-Conversation-Id (the conversation's id), so the server goes
  // on generating when the page goes; the reloaded page looks it up (v1/streams/lookup), replays its stream from
  // the first byte (v1/stream?from=0) and follows it to the end. Stop on a resumed reply stops the server's
  // generation too (DELETE v1/stream). Run by name only.
  async resume(page) {
    const LONG = 300_000 // a slow, busy CPU: the replies take a while
    const stored = () => page.evaluate(() => JSON.parse(localStorage.getItem('llamatwist.conversations') ?? '[]'))
    const lastNode = (conv) => Object.values(conv.nodes).filter((n) => n.role === 'assistant')
      .sort((a, b) => a.created - b.created).at(-1)
    const noneStreaming = () => page.waitForFunction(() => {
      const convs = JSON.parse(localStorage.getItem('llamatwist.conversations') ?? '[]')
      return !convs.some((c) => Object.values(c.nodes).some((n) => n.streaming))
        && !document.querySelector('#send').hidden
    }, null, { timeout: LONG, polling: 200 })
    // the server's replay of a conversation's kept stream: the content its chunks carry
    const replayed = (id) => page.evaluate(async (conv) => {
      const res = await fetch(`v1/stream?conv_id=${encodeURIComponent(conv)}&from=0`)
      const text = await res.text()
      let content = ''
      for (const line of text.split('\n')) {
        if (!line.startsWith('data: ') || line.includes('[DONE]')) continue
        content += JSON.parse(line.slice(6)).choices?.[0]?.delta?.content ?? ''
      }
      return { status: res.status, content, done: text.endsWith('data: [DONE]\n\n') }
    }, id)
    const posts = []
    const gets = []
    const deletes = []
    page.on('request', (req) => {
      const url = req.url()
      if (req.method() === 'POST' && url.endsWith('/v1/chat/completions')) posts.push(req.headers()['x-conversation-id'])
      if (req.method() === 'GET' && url.includes('/v1/stream?')) gets.push(url)
      if (req.method() === 'DELETE' && url.includes('/v1/stream?')) deletes.push(url)
    })

    await ready(page)
    await setSettings(page, { max_tokens: 300, temperature: 0 })
    await ready(page)
    await ignoreEos(page) // the page's routes outlive its reloads
    await sendMessage(page, 'Write a long story about a lighthouse keeper and the sea.')
    const content = lastAssistant(page).getByTestId('content')
    await content.filter({ hasText: /\S/ }).waitFor({ timeout: LONG })
    const before = (await content.textContent()).length
    const [conv] = await stored()
    assert(lastNode(conv).streaming === true, 'the reply is saved as streaming while it generates')
    assert(posts.length === 1 && posts[0] === conv.id, `X-Conversation-Id is the conversation's id (${posts})`)
    const lookup = page.waitForResponse((r) => r.url().endsWith('/v1/streams/lookup'), { timeout: LONG })
    await page.reload()
    const sessions = await (await lookup).json()
    assert(sessions.length === 1 && sessions[0].conversation_id === conv.id, `the stream found: ${JSON.stringify(sessions)}`)
    if (!sessions[0].is_done) { // still generating (on a fast machine it may be over already: replayed at once)
      await page.getByTestId('stop').waitFor({ state: 'visible', timeout: LONG })
    }
    await noneStreaming()
    assert(gets.some((u) => u.includes(`conv_id=${encodeURIComponent(conv.id)}&from=0`)), `replayed from 0 (${gets})`)
    assert(posts.length === 1, `the message was not sent again (${posts.length} requests)`)
    const after = await content.textContent()
    assert(after.length > before, `the reply went on after the reload (${before} -> ${after.length} characters)`)
    const stats = await lastAssistant(page).getByTestId('stats').textContent()
    assert(stats.includes('300 tokens'), `the whole reply arrived (${stats})`)
    console.log(`resume: ${before} characters shown before the reload, ${after.length} at the end; the stream was`
      + ` ${sessions[0].is_done ? 'over' : `still going (${sessions[0].total_bytes} bytes)`} when the page came back`)
    assert(await lastAssistant(page).locator('.error').count() === 0, 'no error')
    const node = lastNode((await stored())[0])
    const server = await replayed(conv.id)
    assert(server.status === 200 && server.done, `the server still holds the finished stream (${server.status})`)
    assert(node.content === server.content, 'the saved reply is the one the server generated, exactly')
    assert(!node.streaming && !node.interrupted && !node.stopped && !node.error, `saved as complete: ${JSON.stringify(node)}`)
    await page.reload() // what was shown is what was saved
    await ready(page)
    assert(await content.textContent() === after, 'the same reply after another reload')
    assert(deletes.length === 0, `nothing stopped (${deletes})`)

    // a second reply, in a new conversation: resumed after a reload, then stopped
    await setSettings(page, { max_tokens: 800 })
    await ready(page)
    await page.getByTestId('new-chat').click()
    await sendMessage(page, 'Write a very long story about a mountain, with many chapters.')
    await content.filter({ hasText: /\S/ }).waitFor({ timeout: LONG })
    const second = (await stored()).find((c) => c.id !== conv.id)
    assert(posts.length === 2 && posts[1] === second.id, `the second conversation's id (${posts})`)
    await page.reload()
    const stop = page.getByTestId('stop')
    await stop.waitFor({ state: 'visible', timeout: LONG })
    const resumedAt = (await content.textContent()).length
    await page.waitForFunction((n) => {
      const el = [...document.querySelectorAll('[data-testid="message-assistant"] [data-testid="content"]')].pop()
      return el && el.textContent.length > n
    }, resumedAt, { timeout: LONG, polling: 100 })
    assert(await stop.isVisible(), 'still generating after the replay')
    await stop.click()
    await waitIdle(page)
    assert(deletes.some((u) => u.includes(`conv_id=${encodeURIComponent(second.id)}`)), `DELETE v1/stream sent (${deletes})`)
    const stopped = await lastAssistant(page).getByTestId('stats').textContent()
    assert(stopped.includes('stopped'), `marked stopped (${stopped})`)
    const picker = page.getByTestId('model-select') // a router's /slots are its models'
    const slotsUrl = await picker.isVisible() ? `slots?model=${encodeURIComponent(await picker.inputValue())}` : 'slots'
    const idle = await page.evaluate(async (url) => {
      for (let i = 0; i < 150; i++) {
        const slots = await (await fetch(url)).json()
        if (!slots.some((s) => s.is_processing)) return true
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
      return false
    }, slotsUrl)
    assert(idle, 'the server stopped generating (no slot processing)')
    const [left] = await page.evaluate(async (id) => (await fetch('v1/streams/lookup', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ conversation_ids: [id] }),
    })).json(), second.id)
    assert(!left || left.is_done, `no stream left running (${JSON.stringify(left)})`)
    const saved = lastNode((await stored()).find((c) => c.id === second.id))
    assert(saved.stopped && !saved.streaming && saved.content.length > 0, `saved as stopped: ${JSON.stringify(saved)}`)

    // a reply saved as streaming whose stream the server no longer has (expired): kept as saved, interrupted
    await page.evaluate((id) => {
      const convs = JSON.parse(localStorage.getItem('llamatwist.conversations'))
      const node = Object.values(convs.find((c) => c.id === id).nodes).find((n) => n.stopped)
      node.streaming = true
      delete node.stopped
      localStorage.setItem('llamatwist.conversations', JSON.stringify(convs))
    }, second.id)
    const gone = page.waitForResponse((r) => r.url().endsWith('/v1/streams/lookup'), { timeout: LONG })
    await page.reload()
    assert(JSON.stringify(await (await gone).json()) === '[]', 'the server has no stream for it')
    await noneStreaming()
    await lastAssistant(page).getByTestId('stats').filter({ hasText: 'interrupted' }).waitFor({ timeout: LONG })
    const kept = lastNode((await stored()).find((c) => c.id === second.id))
    assert(kept.interrupted && kept.content === saved.content, `kept as saved, interrupted: ${JSON.stringify(kept)}`)
  },

  // With "Send PDFs as page images" on, a PDF goes to a vision model as its pages' images (image_url parts).
  async pdfimages(page) {
    await ready(page)
    await page.getByTestId('settings').click()
    await page.locator('#settings-form [name="pdfAsImage"]').check()
    await page.locator('#settings-form [name="max_tokens"]').fill('4')
    await page.getByTestId('settings-save').click()
    await page.locator('#settings').waitFor({ state: 'hidden' })
    await ready(page)
    const bodies = recordRequests(page)
    await page.getByTestId('attach-file').setInputFiles([
      { name: 'slides.pdf', mimeType: 'application/pdf', buffer: tinyPdf(['First slide', 'Second slide']) }])
    await page.getByTestId('attachment-media').nth(1).waitFor()
    assert(await page.getByTestId('attachment').count() === 2, 'a page image each')
    await sendMessage(page, 'What do these slides say?')
    await waitIdle(page)
    await assistantAnswered(page)
    const parts = bodies[0].messages.at(-1).content
    const images = parts.filter((p) => p.type === 'image_url')
    assert(images.length === 2 && images.every((p) => p.image_url.url.startsWith('data:image/jpeg;base64,')),
      `two JPEG pages (${JSON.stringify(parts).slice(0, 300)})`)
    assert(parts.at(-1).text === 'What do these slides say?', 'then the text')
    const sizes = await page.getByTestId('message-image').evaluateAll((imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight]))
    assert(JSON.stringify(sizes) === '[[600,216],[600,216]]', `each page at 1.5 times its 400x144 points (${JSON.stringify(sizes)})`)
    const inked = await page.getByTestId('message-image').evaluateAll((imgs) => imgs.map((img) => {
      const canvas = document.createElement('canvas')
      canvas.width = img.naturalWidth
      canvas.height = img.naturalHeight
      const ctx = canvas.getContext('2d')
      ctx.drawImage(img, 0, 0)
      const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height)
      let dark = 0
      for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] < 200) dark++
      return dark
    }))
    assert(inked.every((n) => n > 200), `each page image shows its text (dark pixels: ${inked})`)

    // a scanned page in JPEG 2000: drawn by pdf.js's OpenJPEG decoder, which the server serves beside it
    assert(JPX, 'LLAMATWIST_JPX: a JPEG 2000 codestream of a red 40x30 image')
    await page.getByTestId('attach-file').setInputFiles([{ name: 'scan.pdf', mimeType: 'application/pdf',
      buffer: jpxPdf(readFileSync(JPX), 40, 30) }])
    await page.getByTestId('attachment-media').first().waitFor()
    const pixel = await page.getByTestId('attachment-media').first().evaluate(async (img) => {
      await img.decode()
      const canvas = document.createElement('canvas')
      canvas.width = img.naturalWidth
      canvas.height = img.naturalHeight
      const ctx = canvas.getContext('2d')
      ctx.drawImage(img, 0, 0)
      return [...ctx.getImageData(img.naturalWidth >> 1, img.naturalHeight >> 1, 1, 1).data.slice(0, 3)]
    })
    assert(pixel[0] > 180 && pixel[1] < 80 && pixel[2] < 80, `the scan drawn: red, not a blank page (${pixel})`)
  },

  // Without a projector only text files can be attached: a pasted or picked image is refused with a note.
  async novision(page) {
    await ready(page)
    assert(await page.getByTestId('attach').getAttribute('title') === 'Attach a text file or PDF', 'text files only')
    assert(await page.getByTestId('mic').isHidden(), 'no microphone without an audio projector')
    await pasteImage(page, readFileSync(IMAGE))
    await page.locator('.toast').filter({ hasText: 'does not take images' }).waitFor()
    await page.getByTestId('attach-file').setInputFiles(IMAGE)
    await page.locator('.toast').filter({ hasText: 'does not take images' }).nth(1).waitFor()
    assert(await page.getByTestId('attachment').count() === 0, 'nothing attached')
  },

  // Text files (picked, or a long paste) go to any model as text parts, as llama-server's UI sends them; they are
  // shown in the conversation, kept after a reload and resent with an edited message; a binary file is refused.
  async files(page) {
    await setSettings(page, { max_tokens: 6, pasteLongTextToFileLen: 100 })
    await ready(page)
    const bodies = recordRequests(page)
    const code = 'def add(a, b):\n    return a + b  # héllo\n'
    await page.getByTestId('attach-file').setInputFiles([
      { name: 'add.py', mimeType: 'text/x-python', buffer: Buffer.from(code) },
      { name: 'NOTES', mimeType: '', buffer: Buffer.from('remember the milk') },
      { name: 'blob.bin', mimeType: 'application/octet-stream', buffer: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]) },
    ])
    await page.locator('.toast').filter({ hasText: 'blob.bin is not a text file' }).waitFor()
    await page.getByTestId('attachment-file').nth(1).waitFor()
    assert(await page.getByTestId('attachment-file').count() === 2, 'the two text files wait to be sent')
    assert((await page.getByTestId('attachment-file').first().textContent()).includes('add.py'), 'named')
    await sendMessage(page, 'What do these files say?')
    await waitIdle(page)
    await assistantAnswered(page)
    assert(await page.getByTestId('attachment').count() === 0, 'sent: the box is empty')
    const parts = bodies[0].messages.at(-1).content
    assert(Array.isArray(parts) && parts.length === 3 && parts.every((p) => p.type === 'text'),
      `three text parts (${JSON.stringify(parts)})`)
    assert(parts[0].text === `\n\n--- File: add.py ---\n${code}`, `the file, headed by its name (${parts[0].text})`)
    assert(parts[1].text === '\n\n--- File: NOTES ---\nremember the milk', 'the second file')
    assert(parts[2].text === 'What do these files say?', 'then the message')
    const shown = page.getByTestId('message-file')
    assert(await shown.count() === 2, 'both files shown in the conversation')
    await shown.first().locator('summary').click()
    assert((await shown.first().locator('pre').textContent()) === code, 'opened, it shows the text')

    // a paste longer than the setting (100 characters here) becomes a file named Pasted; a short one stays text
    const paste = (text) => page.evaluate((t) => {
      const transfer = new DataTransfer()
      transfer.setData('text/plain', t)
      return document.querySelector('#input').dispatchEvent(
        new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }))
    }, text)
    assert(await paste('short text') === true, 'a short paste is left to the browser')
    const long = 'lorem ipsum '.repeat(9)
    assert(await paste(long) === false, 'a long paste is taken')
    await page.getByTestId('attachment-file').filter({ hasText: 'Pasted' }).waitFor()
    await page.getByTestId('send').click() // the file alone, no text
    await waitIdle(page)
    await assistantAnswered(page)
    assert(JSON.stringify(bodies.at(-1).messages.at(-1).content) === JSON.stringify(
      [{ type: 'text', text: `\n\n--- File: Pasted ---\n${long}` }]), 'the pasted text sent as a file')

    // kept in the browser; an edited message keeps its files
    await page.reload()
    await page.getByTestId('message-file').nth(2).waitFor()
    const first = page.getByTestId('message-user').first()
    await first.getByTestId('edit').click()
    await first.getByTestId('edit-input').fill('Summarise the files.')
    await first.getByTestId('edit-save').click()
    await waitIdle(page)
    const edited = bodies.at(-1).messages.at(-1).content
    assert(edited.length === 3 && edited[0].text.includes('add.py') && edited[2].text === 'Summarise the files.',
      `the edited message resent with its files (${JSON.stringify(edited)})`)
    assert(await page.getByTestId('message-file').count() === 2, 'the edited branch shows its two files')

    // a PDF goes as its text; one that is not a PDF is refused
    await page.getByTestId('new-chat').click()
    await page.getByTestId('attach-file').setInputFiles([
      { name: 'report.pdf', mimeType: 'application/pdf', buffer: tinyPdf(['Quarterly report', 'Sales rose by 5 percent']) },
      { name: 'broken.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4 nothing else') },
    ])
    await page.locator('.toast').filter({ hasText: 'broken.pdf cannot be read as a PDF' }).waitFor()
    await page.getByTestId('attachment-file').filter({ hasText: 'report.pdf' }).waitFor()
    assert(await page.getByTestId('attachment-file').count() === 1, 'only the readable PDF is attached')
    await sendMessage(page, 'Summarise the report.')
    await waitIdle(page)
    await assistantAnswered(page)
    const pdfParts = bodies.at(-1).messages.at(-1).content
    assert(pdfParts[0].text === '\n\n--- PDF File: report.pdf ---\nQuarterly report\n\nSales rose by 5 percent',
      `the PDF's text, a page per paragraph (${JSON.stringify(pdfParts[0].text)})`)

    // CJK text in a predefined encoding: read with pdf.js's CMaps, which the server serves beside it
    const fetched = []
    page.on('request', (r) => { if (r.url().includes('/pdfjs/cmaps/')) fetched.push(r.url().split('/').pop()) })
    await page.getByTestId('attach-file').setInputFiles([{ name: 'nihongo.pdf', mimeType: 'application/pdf', buffer: cjkPdf() }])
    await page.getByTestId('attachment-file').filter({ hasText: 'nihongo.pdf' }).waitFor()
    await sendMessage(page, 'Translate.')
    await waitIdle(page)
    const cjk = bodies.at(-1).messages.at(-1).content[0].text
    assert(cjk === '\n\n--- PDF File: nihongo.pdf ---\n日本語', `the Japanese text (${JSON.stringify(cjk)}; CMaps ${fetched})`)
    assert(fetched.includes('UniJIS-UCS2-H.bcmap'), `its CMap fetched from the server (${fetched})`)
  },
}

async function sendClip(page, kind) {
  await ready(page)
  const bytes = readFileSync(CLIP)
  const bodies = recordRequests(page)
  await page.getByTestId('attach').waitFor({ state: 'visible' })
  await page.getByTestId('attach-file').setInputFiles(CLIP)
  await page.getByTestId('attachment-media').first().waitFor()
  assert(await page.getByTestId('attachment-media').evaluate((el) => el.tagName) === kind.toUpperCase(),
    `a ${kind} player in the attachment box`)
  await page.getByTestId('input').fill(`What is in this ${kind}?`)
  await page.getByTestId('send').click()
  await page.getByTestId('send').waitFor({ state: 'visible', timeout: TIMEOUT })
  const assistant = page.getByTestId('message-assistant').last()
  assert(await assistant.locator('.error').count() === 0,
    `no error (${await assistant.locator('.error').allTextContents()})`)
  assert((await assistant.getByTestId('content').textContent()).trim().length > 0, 'the model answered')
  const content = bodies[0].messages.at(-1).content
  const base64 = bytes.toString('base64')
  if (kind === 'audio') {
    const part = content.find((p) => p.type === 'input_audio')
    assert(part && part.input_audio.format === 'wav' && part.input_audio.data === base64,
      'an input_audio part with the file in base64, format wav')
  } else {
    const part = content.find((p) => p.type === 'video_url')
    assert(part && part.video_url.url === `data:video/mp4;base64,${base64}`, 'a video_url part with the file')
  }
  assert(await page.getByTestId(`message-${kind}`).count() === 1, `the ${kind} is shown in the conversation`)
  await page.reload()
  await page.getByTestId(`message-${kind}`).first().waitFor()
  mkdirSync(RESULTS, { recursive: true })
  await page.screenshot({ path: join(RESULTS, `${kind}.png`) })
}

const DEFAULT = API_KEY ? ['apikey'] : ['stream', 'stop', 'regenerate', 'continue', 'settings', 'reasoningContext',
  'display', 'developer', 'settingsfile', 'modelinfo', 'swremoval', 'parallel', 'preencode', 'titles', 'diagrams', 'sandbox', 'files', 'xss', 'screenshot']

async function main() {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : DEFAULT
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', // "record": a microphone that beeps
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    // Playwright gives the browser a fresh, temporary --user-data-dir itself.
  })
  let failed = 0
  try {
    for (const name of names) {
      const context = await browser.newContext({ viewport: { width: 1100, height: 800 } })
      const page = await context.newPage()
      page.setDefaultTimeout(TIMEOUT)
      const errors = []
      page.on('pageerror', (err) => errors.push(err.message))
      const started = Date.now()
      try {
        if (!scenarios[name]) throw new Error(`no scenario ${name}`)
        await page.goto(URL_)
        await scenarios[name](page)
        assert(errors.length === 0, `no page errors (${errors.join('; ')})`)
        console.log(`ok ${name} (${Date.now() - started} ms)`)
      } catch (err) {
        failed++
        console.log(`FAIL ${name}: ${err.stack ?? err}`)
        mkdirSync(RESULTS, { recursive: true })
        await page.screenshot({ path: join(RESULTS, `fail-${name}.png`) }).catch(() => {})
      } finally {
        await context.close()
      }
    }
  } finally {
    await browser.close()
  }
  process.exit(failed ? 1 : 0)
}

main()
