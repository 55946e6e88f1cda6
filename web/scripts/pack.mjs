// Gzip dist/index.html into the Python package (deterministic: no file name,
// mtime 0, fixed level), or with --check, fail when the committed asset's
// content differs from the fresh build (compared decompressed, so a different
// zlib cannot make CI fail).
import { readFileSync, writeFileSync } from 'node:fs'
import { gunzipSync, gzipSync, constants } from 'node:zlib'

const built = new URL('../dist/index.html', import.meta.url)
const target = new URL('../../llamatwist/webui/index.html.gz', import.meta.url)
const html = readFileSync(built)

if (process.argv.includes('--check')) {
  let committed
  try {
    committed = gunzipSync(readFileSync(target))
  } catch (err) {
    console.error(`web UI check: cannot read ${target.pathname}: ${err.message}`)
    process.exit(1)
  }
  if (!committed.equals(html)) {
    console.error('web UI check: llamatwist/webui/index.html.gz differs from a fresh build of web/;'
      + ' run `cd web && npm run build` and commit the result')
    process.exit(1)
  }
  console.log(`web UI check: committed asset matches the source (${html.length} bytes)`)
} else {
  const gz = gzipSync(html, { level: constants.Z_BEST_COMPRESSION })
  writeFileSync(target, gz)
  console.log(`web UI: ${html.length} bytes, ${gz.length} gzipped -> ${target.pathname}`)
}
