// Diagrams in replies, as llama-server's UI shows them: a finished ```svg block (or an xml/html one that is an
// <svg>) drawn inline, and a finished ```mermaid block drawn by Mermaid; each with a button to see its source.
// A block still streaming stays code. What is drawn is sanitised (DOMPurify's SVG profile: no script, no
// foreignObject) and mounted in a shadow root, so a diagram's own <style> cannot reach the page. Mermaid (3.3 MB)
// is served beside the page (mermaid.min.js) and loaded with the first diagram.
import DOMPurify from 'dompurify'
import { BASE, h } from './dom.js'

const MAX_SVG = 256 * 1024 // a bigger block stays code (llama-server UI's limit)
const SVG_PURIFY = {
  USE_PROFILES: { svg: true, svgFilters: true },
  ADD_TAGS: ['animate', 'set', 'use'],
  ADD_ATTR: ['calcMode', 'from', 'to'],
  FORBID_TAGS: ['foreignObject', 'script'],
}
const SHADOW_STYLE = ':host{display:block;text-align:center;overflow:auto}'
  + 'svg{display:block;margin:0 auto;max-width:100%;height:auto;max-height:70vh}'

// an animation that retargets a link (href) could make it javascript:; DOMPurify does not check those values
DOMPurify.addHook('uponSanitizeAttribute', (_node, data) => {
  if (data.attrName === 'attributename' && /href$/i.test(data.attrValue.trim())) data.keepAttr = false
})

/** The kind of diagram a finished code block holds ('svg', 'mermaid'), or null. */
export function diagramKind(language, text) {
  if (language === 'mermaid') return 'mermaid'
  if (['svg', 'xml', 'html'].includes(language) && text.trimStart().startsWith('<svg')) return 'svg'
  return null
}

/** Sanitised SVG markup, or '' when the source is not a usable SVG (then the block stays code). */
export function sanitizeSvg(source) {
  const text = source.trim()
  if (!text.startsWith('<svg') || text.length > MAX_SVG) return ''
  const clean = DOMPurify.sanitize(text, SVG_PURIFY)
  return clean.includes('<svg') ? clean : ''
}

// drawn diagrams by theme and source: a streaming reply is rendered again with every chunk
const drawn = new Map()

function remember(key, value) {
  drawn.set(key, value)
  if (drawn.size > 64) drawn.delete(drawn.keys().next().value)
}

let mermaidLoaded = null
let queue = Promise.resolve() // Mermaid draws one diagram at a time
let counter = 0

function loadMermaid() {
  mermaidLoaded ??= new Promise((resolve, reject) => {
    const script = h('script', { src: new URL('mermaid.min.js', BASE).href })
    script.onload = () => resolve(globalThis.mermaid)
    script.onerror = () => {
      mermaidLoaded = null
      script.remove()
      reject(new Error('could not load mermaid.min.js'))
    }
    document.head.append(script)
  })
  return mermaidLoaded
}

/** Mermaid's drawing of `source` as sanitised SVG markup (labels as SVG text, so no foreignObject is needed). */
function drawMermaid(source, dark) {
  const job = queue.then(async () => {
    const mermaid = await loadMermaid()
    mermaid.initialize({ startOnLoad: false, securityLevel: 'strict', theme: dark ? 'dark' : 'default',
      htmlLabels: false, flowchart: { htmlLabels: false } })
    const id = `mermaid-diagram-${++counter}`
    try {
      const { svg } = await mermaid.render(id, source)
      const clean = sanitizeSvg(svg)
      if (!clean) throw new Error('the diagram could not be drawn')
      return clean
    } catch (err) {
      throw new Error(String(err?.message ?? err).split('\n')[0])
    } finally {
      document.getElementById(`d${id}`)?.remove() // what Mermaid leaves behind after an error
    }
  })
  queue = job.catch(() => {})
  return job
}

// diagrams being drawn, by key: the blocks of every re-render wait on the same drawing
const pending = new Map()

function drawOnce(key, source, dark) {
  if (!pending.has(key)) {
    pending.set(key, drawMermaid(source, dark)
      .then((markup) => { remember(key, markup); return markup })
      .finally(() => pending.delete(key)))
  }
  return pending.get(key)
}

function mount(pre, markup) {
  const view = h('div', { class: 'diagram-view', 'data-testid': 'diagram' })
  view.attachShadow({ mode: 'open' }).innerHTML = `<style>${SHADOW_STYLE}</style>${markup}`
  pre.querySelector('.diagram-view, .diagram-note')?.remove()
  pre.append(view)
  pre.classList.add('drawn')
}

function note(pre, text) {
  pre.querySelector('.diagram-note')?.remove()
  pre.append(h('div', { class: 'diagram-note', 'data-testid': 'diagram-note' }, text))
}

/** Draw the finished diagram blocks (pre[data-diagram]) in `el`; each gets a Source/Diagram switch. */
export function drawDiagrams(el) {
  const dark = document.documentElement.dataset.theme === 'dark'
  for (const pre of el.querySelectorAll('pre[data-diagram]')) {
    const kind = pre.dataset.diagram
    const source = pre.querySelector('code').textContent
    const toggle = h('button', { type: 'button', class: 'copy', 'data-testid': 'diagram-toggle', hidden: true,
      onclick: () => {
        pre.classList.toggle('source')
        toggle.textContent = pre.classList.contains('source') ? 'Diagram' : 'Source'
      } }, 'Source')
    pre.querySelector('.code-head')?.append(toggle)
    const key = `${kind} ${dark} ${source}`
    const show = (markup) => {
      mount(pre, markup)
      toggle.hidden = false
    }
    if (drawn.has(key)) {
      show(drawn.get(key))
    } else if (kind === 'svg') {
      const clean = sanitizeSvg(source)
      if (clean) {
        remember(key, clean)
        show(clean)
      }
    } else {
      note(pre, 'Drawing the diagram…')
      drawOnce(key, source, dark).then((markup) => {
        if (pre.isConnected) show(markup)
      }, (err) => {
        if (pre.isConnected) note(pre, `Mermaid: ${err?.message ?? err}`)
      })
    }
  }
}
