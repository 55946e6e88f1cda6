import { defineConfig } from 'vite'

// The MCP client (src/mcp-client.js and the SDK) as one ES module, dist-mcp/mcp.min.mjs, which scripts/pack.mjs
// gzips into llamatwist/webui/ to be served beside the page: loaded only when an MCP server is configured.
export default defineConfig({
  build: {
    target: 'es2022',
    outDir: 'dist-mcp',
    emptyOutDir: true,
    reportCompressedSize: false,
    minify: true,
    lib: { entry: 'src/mcp-client.js', formats: ['es'], fileName: () => 'mcp.min.mjs' },
  },
})
