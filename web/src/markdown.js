// Markdown -> sanitised HTML: marked, highlight.js (a few languages), KaTeX
// (MathML output: no fonts or CSS to ship), then DOMPurify on the result.
// Nothing the model writes reaches the DOM without going through sanitize().
import { Marked } from 'marked'
import DOMPurify from 'dompurify'
import hljs from 'highlight.js/lib/core'
import bash from 'highlight.js/lib/languages/bash'
import c from 'highlight.js/lib/languages/c'
import cpp from 'highlight.js/lib/languages/cpp'
import css from 'highlight.js/lib/languages/css'
import go from 'highlight.js/lib/languages/go'
import java from 'highlight.js/lib/languages/java'
import javascript from 'highlight.js/lib/languages/javascript'
import json from 'highlight.js/lib/languages/json'
import python from 'highlight.js/lib/languages/python'
import rust from 'highlight.js/lib/languages/rust'
import sql from 'highlight.js/lib/languages/sql'
import typescript from 'highlight.js/lib/languages/typescript'
import xml from 'highlight.js/lib/languages/xml'
import yaml from 'highlight.js/lib/languages/yaml'
import katex from 'katex'
import { diagramKind, drawDiagrams } from './diagrams.js'

for (const [name, lang] of Object.entries({ bash, c, cpp, css, go, java, javascript, json, python, rust, sql, typescript, xml, yaml })) {
  hljs.registerLanguage(name, lang)
}
hljs.registerAliases(['sh', 'shell', 'zsh'], { languageName: 'bash' })
hljs.registerAliases(['html', 'svg'], { languageName: 'xml' })
hljs.registerAliases(['py'], { languageName: 'python' })
hljs.registerAliases(['js', 'jsx'], { languageName: 'javascript' })
hljs.registerAliases(['ts', 'tsx'], { languageName: 'typescript' })

export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`)
}

function renderMath(tex, displayMode) {
  try {
    return katex.renderToString(tex, { displayMode, output: 'mathml', throwOnError: false, trust: false })
  } catch {
    return `<code>${escapeHtml(tex)}</code>`
  }
}

const mathExtensions = [
  {
    name: 'mathBlock',
    level: 'block',
    start(src) {
      const i = src.search(/\$\$|\\\[/)
      return i < 0 ? undefined : i
    },
    tokenizer(src) {
      const m = /^(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\])[ \t]*(?:\n|$)/.exec(src)
      if (m) return { type: 'mathBlock', raw: m[0], text: (m[1] ?? m[2]).trim() }
    },
    renderer(token) {
      return `<div class="math">${renderMath(token.text, true)}</div>`
    },
  },
  {
    name: 'mathInline',
    level: 'inline',
    start(src) {
      const i = src.search(/\$|\\\(/)
      return i < 0 ? undefined : i
    },
    tokenizer(src) {
      const m = /^(?:\$\$([\s\S]+?)\$\$|\$(?![\s$])((?:\\.|[^\\$\n])+?)(?<!\s)\$(?!\d)|\\\(([\s\S]+?)\\\))/.exec(src)
      if (m) return { type: 'mathInline', raw: m[0], text: m[1] ?? m[2] ?? m[3], display: m[1] !== undefined }
    },
    renderer(token) {
      return renderMath(token.text, token.display)
    },
  },
]

const marked = new Marked({
  gfm: true,
  breaks: false,
  extensions: mathExtensions,
  renderer: {
    code({ text, lang, raw }) {
      const language = (lang || '').match(/^\S*/)[0].toLowerCase()
      // a fence still open (a reply streaming) is code until it closes
      const kind = /\n[ \t]*(?:`{3,}|~{3,})[ \t]*\n*$/.test(raw) ? diagramKind(language, text) : null
      if (kind) {
        return `<pre class="code diagram" data-lang="${language}" data-diagram="${kind}"><code>${escapeHtml(text)}</code></pre>\n`
      }
      const body = language && hljs.getLanguage(language)
        ? hljs.highlight(text, { language, ignoreIllegals: true }).value
        : escapeHtml(text)
      return `<pre class="code" data-lang="${escapeHtml(language)}"><code class="hljs">${body}</code></pre>\n`
    },
  },
})

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank')
    node.setAttribute('rel', 'noopener noreferrer nofollow')
  }
})

const PURIFY = {
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed', 'link', 'meta', 'base'],
  FORBID_ATTR: ['style', 'srcset', 'action', 'formaction'],
}

/** Sanitise HTML (DOMPurify): the only way model output becomes markup. */
export function sanitize(html) {
  return DOMPurify.sanitize(html, PURIFY)
}

/** Markdown to sanitised HTML. */
export function renderMarkdown(text) {
  let html
  try {
    html = marked.parse(text, { async: false })
  } catch {
    html = `<pre>${escapeHtml(text)}</pre>`
  }
  return sanitize(html)
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text)
    return
  } catch {
    // insecure context (plain http on a LAN address): fall back
  }
  const area = document.createElement('textarea')
  area.value = text
  area.style.position = 'fixed'
  area.style.opacity = '0'
  document.body.append(area)
  area.select()
  document.execCommand('copy')
  area.remove()
}

export function copyButton(getText, label = 'Copy') {
  const button = document.createElement('button')
  button.type = 'button'
  button.className = 'copy'
  button.textContent = label
  button.title = 'Copy to clipboard'
  button.addEventListener('click', async () => {
    await copyText(getText())
    button.textContent = 'Copied'
    setTimeout(() => { button.textContent = label }, 1200)
  })
  return button
}

/** Put rendered markdown into `el` and give every code block a copy button. */
export function setMarkdown(el, text) {
  el.innerHTML = renderMarkdown(text)
  for (const pre of el.querySelectorAll('pre.code')) {
    const code = pre.querySelector('code')
    const head = document.createElement('div')
    head.className = 'code-head'
    const lang = document.createElement('span')
    lang.textContent = pre.dataset.lang || 'text'
    head.append(lang, copyButton(() => code.textContent))
    pre.prepend(head)
  }
  drawDiagrams(el)
}
