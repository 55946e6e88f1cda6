// The page's small DOM helpers, shared by its modules.

export const $ = (sel) => document.querySelector(sel)

// API base: the directory the page is served from, so --api-prefix works.
export const BASE = (() => {
  let path = location.pathname.replace(/index\.html$/, '')
  if (!path.endsWith('/')) path += '/'
  return location.origin + path
})()

/** Create an element; text children become text nodes (never markup). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = value
    else el.setAttribute(key, value === true ? '' : value)
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue
    el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return el
}

/** Save `text` as a JSON file named `name` (the browser's download). */
export function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }))
  const a = h('a', { href: url, download: name })
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}

/** A short note at the bottom of the page, for a few seconds. */
export function toast(message) {
  const el = h('div', { class: 'toast', role: 'status' }, message)
  document.body.append(el)
  setTimeout(() => el.remove(), 4000)
}
