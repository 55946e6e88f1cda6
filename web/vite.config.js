import { defineConfig } from 'vite'
import { viteSingleFile } from 'vite-plugin-singlefile'

// One self-contained index.html (scripts and styles inlined, no CDN), which
// scripts/pack.mjs gzips into llamatwist/webui/index.html.gz.
export default defineConfig({
  base: './',
  plugins: [viteSingleFile({ removeViteModuleLoader: true })],
  build: {
    target: 'es2022',
    outDir: 'dist',
    emptyOutDir: true,
    reportCompressedSize: false,
    cssCodeSplit: false,
    assetsInlineLimit: 100_000_000,
  },
})
