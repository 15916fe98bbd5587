// Vite builds the app into dist/, which the commandpost binary embeds.
// `npm run dev` serves it with hot reload and proxies the API, the document
// WebSocket and the health check to a running server
// (COMMANDPOST_DEV_SERVER, default http://127.0.0.1:8080).
import { defineConfig } from 'vite'

// Node's `process`, declared here so the app does not need @types/node.
declare const process: { env: Record<string, string | undefined> }

const server = process.env.COMMANDPOST_DEV_SERVER ?? 'http://127.0.0.1:8080'

export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Never inline assets as data: URIs, so a strict Content-Security-Policy
    // (img-src 'self') keeps working.
    assetsInlineLimit: 0,
    sourcemap: false,
    target: 'es2022',
  },
  server: {
    proxy: {
      '/api': { target: server, changeOrigin: true },
      '/ws': { target: server, ws: true, changeOrigin: true },
      '/healthz': { target: server, changeOrigin: true },
    },
  },
})
