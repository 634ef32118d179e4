// Unit tests of the console's own logic (stores, composables, the stream reader): plain Vitest
// in happy-dom, with `~` resolved as Nuxt does.
import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'
import { fileURLToPath } from 'node:url'

export default defineConfig({
  plugins: [vue()],
  resolve: { alias: { '~': fileURLToPath(new URL('./app', import.meta.url)) } },
  test: { environment: 'happy-dom', include: ['tests/unit/**/*.test.ts'] },
})
