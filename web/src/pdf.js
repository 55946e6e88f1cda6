// PDF attachments (pdf.js), as llama-server's web UI sends them: their text as a text file, or for a vision model
// (its pdfAsImage setting) their pages' images.
// The server serves pdf.js and its worker beside the page (scripts/pack.mjs); they are loaded when the first PDF
// is read, and its data files (pdfjs/) when a PDF needs them.

let library = null

async function pdfjs(base) {
  if (!library) {
    library = await import(/* @vite-ignore */ new URL('pdf.min.mjs', base).href)
    library.GlobalWorkerOptions.workerSrc = new URL('pdf.worker.min.mjs', base).href
  }
  return library
}

/** Open a PDF (`base`: the URL the page's assets are served under) for `read(doc)`, then close it. */
async function withPdf(data, base, read) {
  const lib = await pdfjs(base)
  // no eval: a crafted font program must not become code (CVE-2024-4367). The data files the server serves beside
  // pdf.js: CMaps (CJK text in a predefined encoding), the JBIG2 and JPEG 2000 decoders (scans) and the colour
  // management (CMYK images) as WebAssembly, the ICC profile; fetched only for a PDF that needs them.
  const task = lib.getDocument({
    data,
    isEvalSupported: false,
    cMapUrl: new URL('pdfjs/cmaps/', base).href,
    cMapPacked: true,
    wasmUrl: new URL('pdfjs/wasm/', base).href,
    iccUrl: new URL('pdfjs/iccs/', base).href,
  })
  try {
    return await read(await task.promise)
  } finally {
    await task.destroy() // the document's own destroy() never settles here (pdf.js 6.5)
  }
}

/** A PDF's pages as JPEG data: URLs, each at most `maxSide` pixels a side (and at most 1.5 times its size in
 * points, as llama-server's UI renders them); more than `maxPages` pages is an error. */
export function pdfImages(data, base, { maxSide, maxPages }) {
  return withPdf(data, base, async (doc) => {
    if (doc.numPages > maxPages) throw new Error(`it has ${doc.numPages} pages, at most ${maxPages} go as images`)
    const urls = []
    for (let i = 1; i <= doc.numPages; i++) {
      const page = await doc.getPage(i)
      const size = page.getViewport({ scale: 1 })
      const viewport = page.getViewport({ scale: Math.min(1.5, maxSide / Math.max(size.width, size.height)) })
      const canvas = document.createElement('canvas')
      canvas.width = Math.max(1, Math.floor(viewport.width))
      canvas.height = Math.max(1, Math.floor(viewport.height))
      await page.render({ canvas, viewport, background: '#ffffff' }).promise
      urls.push(canvas.toDataURL('image/jpeg', 0.9))
    }
    return urls
  })
}

/** A PDF's text: its pages' text as pdf.js lays it out (a
 * text item's end of line kept), pages a blank line apart. (llama-server's UI puts every text item on a line of its
 * own, which splits lines into fragments.) */
export function pdfText(data, base) {
  return withPdf(data, base, async (doc) => {
    const pages = []
    for (let i = 1; i <= doc.numPages; i++) {
      const content = await (await doc.getPage(i)).getTextContent()
      pages.push(content.items.map((item) => (item.str ?? '') + (item.hasEOL ? '\n' : '')).join('').trimEnd())
    }
    return pages.join('\n\n')
  })
}
