// Gzip the built UI and the pdf.js files and MCP client it loads on demand into the Python package (deterministic: no file
// name, mtime 0, fixed level), or with --check, fail when a committed asset's content differs from the fresh
// build (compared decompressed, so a different zlib cannot make CI fail).
//
// pdf.js (pdf.min.mjs and its worker, 1.7 MB) is served beside the page rather than inlined: a page that reads
// no PDF never loads it, and a change to the UI does not commit those 450 kB again. The MCP client (the SDK, 97 kB
// gzipped) likewise, and Mermaid
// (904 kB gzipped), loaded with the first mermaid diagram.
import { readFileSync, writeFileSync } from 'node:fs'
import { gunzipSync, gzipSync, constants } from 'node:zlib'

const ASSETS = [
  ['../dist/index.html', 'index.html.gz'],
  ['../node_modules/pdfjs-dist/build/pdf.min.mjs', 'pdf.min.mjs.gz'],
  ['../node_modules/pdfjs-dist/build/pdf.worker.min.mjs', 'pdf.worker.min.mjs.gz'],
  ['../dist-mcp/mcp.min.mjs', 'mcp.min.mjs.gz'], // vite.mcp.config.js
  ['../node_modules/mermaid/dist/mermaid.min.js', 'mermaid.min.js.gz'], // diagrams.js loads it as a script
]
const check = process.argv.includes('--check')
let failed = false

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
    console.log(`web UI check: committed ${name} matches the source (${content.length} bytes)`)
  } else {
    const gz = gzipSync(content, { level: constants.Z_BEST_COMPRESSION })
    writeFileSync(target, gz)
    console.log(`web UI: ${content.length} bytes, ${gz.length} gzipped -> ${target.pathname}`)
  }
}
process.exit(failed ? 1 : 0)
