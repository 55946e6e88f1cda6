// Gzip the built UI and the files it loads on demand into the Python package (deterministic: no file name, mtime 0,
// fixed level), or with --check, fail when a committed asset's content differs from the fresh build (compared
// decompressed, so a different zlib cannot make CI fail) or a committed one has no source any more.
//
// pdf.js (pdf.min.mjs and its worker, 1.7 MB) is served beside the page rather than inlined: a page that reads
// no PDF never loads it, and a change to the UI does not commit those 450 kB again. The MCP client (the SDK, 97 kB
// gzipped) likewise, and Mermaid (904 kB gzipped), loaded with the first mermaid diagram. pdf.js's data files
// (pdfjs/: the CMaps for CJK text, the JBIG2, JPEG 2000 and colour-management decoders as WebAssembly, the ICC
// profile) are fetched by pdf.js only for a PDF that needs them.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { gunzipSync, gzipSync, constants } from 'node:zlib'

const PDFJS = '../node_modules/pdfjs-dist/'
const PDFJS_DATA = { // the directory in pdfjs-dist and the files of it the page may need
  cmaps: (name) => name.endsWith('.bcmap'),
  wasm: (name) => ['jbig2.wasm', 'openjpeg.wasm', 'qcms_bg.wasm'].includes(name),
  iccs: (name) => name.endsWith('.icc'),
}

const ASSETS = [
  ['../dist/index.html', 'index.html.gz'],
  [`${PDFJS}build/pdf.min.mjs`, 'pdf.min.mjs.gz'],
  [`${PDFJS}build/pdf.worker.min.mjs`, 'pdf.worker.min.mjs.gz'],
  ['../dist-mcp/mcp.min.mjs', 'mcp.min.mjs.gz'], // vite.mcp.config.js
  ['../node_modules/mermaid/dist/mermaid.min.js', 'mermaid.min.js.gz'], // diagrams.js loads it as a script
]
for (const [dir, wanted] of Object.entries(PDFJS_DATA)) {
  for (const name of readdirSync(new URL(`${PDFJS}${dir}/`, import.meta.url)).filter(wanted).sort()) {
    ASSETS.push([`${PDFJS}${dir}/${name}`, `pdfjs/${dir}/${name}.gz`])
  }
}
const check = process.argv.includes('--check')
const quiet = (name) => name.startsWith('pdfjs/') // 170 small files: one line for them all
let failed = false
let data = 0

for (const [source, name] of ASSETS) {
  const content = readFileSync(new URL(source, import.meta.url))
  const target = new URL(`../../llamatwist/webui/${name}`, import.meta.url)
  if (check) {
    let committed
    try {
      committed = gunzipSync(readFileSync(target))
    } catch (err) {
      console.error(`web UI check: cannot read ${target.pathname}: ${err.message}`)
      failed = true
      continue
    }
    if (!committed.equals(content)) {
      console.error(`web UI check: llamatwist/webui/${name} differs from a fresh build of web/;`
        + ' run `cd web && npm run build` and commit the result')
      failed = true
      continue
    }
    if (!quiet(name)) console.log(`web UI check: committed ${name} matches the source (${content.length} bytes)`)
  } else {
    const gz = gzipSync(content, { level: constants.Z_BEST_COMPRESSION })
    mkdirSync(new URL('.', target), { recursive: true })
    writeFileSync(target, gz)
    if (!quiet(name)) console.log(`web UI: ${content.length} bytes, ${gz.length} gzipped -> ${target.pathname}`)
    else data += gz.length
  }
}

// pdf.js's data files that a pdfjs-dist upgrade dropped
const packed = new Set(ASSETS.map(([, name]) => name))
for (const dir of Object.keys(PDFJS_DATA)) {
  const committed = new URL(`../../llamatwist/webui/pdfjs/${dir}/`, import.meta.url)
  if (!existsSync(committed)) continue
  for (const name of readdirSync(committed).map((n) => `pdfjs/${dir}/${n}`).filter((n) => !packed.has(n))) {
    if (check) {
      console.error(`web UI check: llamatwist/webui/${name} has no source in web/; run \`cd web && npm run build\``)
      failed = true
    } else rmSync(new URL(`../../llamatwist/webui/${name}`, import.meta.url))
  }
}
const count = ASSETS.filter(([, name]) => quiet(name)).length
if (check && !failed) console.log(`web UI check: the ${count} committed pdf.js data files match the source`)
if (!check) console.log(`web UI: ${count} pdf.js data files, ${data} bytes gzipped -> llamatwist/webui/pdfjs/`)
process.exit(failed ? 1 : 0)
