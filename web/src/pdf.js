// The text of a PDF attachment (pdf.js), sent to the model as a text file, as llama-server's web UI does.
// The server serves pdf.js and its worker beside the page (scripts/pack.mjs); they are loaded when the first PDF
// is read.

let library = null

async function pdfjs(base) {
  if (!library) {
    library = await import(/* @vite-ignore */ new URL('pdf.min.mjs', base).href)
    library.GlobalWorkerOptions.workerSrc = new URL('pdf.worker.min.mjs', base).href
  }
  return library
}

/** A PDF's text (`base`: the URL the page's assets are served under): its pages' text as pdf.js lays it out (a
 * text item's end of line kept), pages a blank line apart. (llama-server's UI puts every text item on a line of its
 * own, which splits lines into fragments.) */
export async function pdfText(data, base) {
  const lib = await pdfjs(base)
  // no eval: a crafted font program must not become code (CVE-2024-4367)
  const task = lib.getDocument({ data, isEvalSupported: false })
  try {
    const doc = await task.promise
    const pages = []
    for (let i = 1; i <= doc.numPages; i++) {
      const content = await (await doc.getPage(i)).getTextContent()
      pages.push(content.items.map((item) => (item.str ?? '') + (item.hasEOL ? '\n' : '')).join('').trimEnd())
    }
    return pages.join('\n\n')
  } finally {
    await task.destroy() // the document's own destroy() never settles here (pdf.js 6.5)
  }
}
