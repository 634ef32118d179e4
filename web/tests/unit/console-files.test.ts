// @vitest-environment node
// The edge serves a pre-compressed twin in place of a file when the browser takes it: each twin
// must be exactly its file (a second representation only for speed).
import { describe, expect, it } from 'vitest'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import zlib from 'node:zlib'

const root = fileURLToPath(new URL('../../../edge/console/', import.meta.url))

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]))
}

describe("the edge's copy of the console", () => {
  const all = files(root)

  it('has its shell and every twin decompresses to its file', () => {
    expect(all.some((f) => f.endsWith('200.html'))).toBe(true)
    let twins = 0
    for (const f of all) {
      const plain = f.replace(/\.(br|gz)$/, '')
      if (plain === f) continue
      const data = readFileSync(f)
      const unpacked = f.endsWith('.br') ? zlib.brotliDecompressSync(data) : zlib.gunzipSync(data)
      expect(unpacked.equals(readFileSync(plain)), f).toBe(true)
      twins++
    }
    expect(twins).toBeGreaterThan(10)
  })

  it('keeps the initial JavaScript within its budget (150 KB gzipped)', () => {
    const html = readFileSync(join(root, '200.html'), 'utf8')
    const initial = [...html.matchAll(/<(?:script[^>]*src|link[^>]*rel="modulepreload"[^>]*href)="(\/_nuxt\/[^"]+\.js)"/g)].map((m) => m[1]!)
    const bytes = [...new Set(initial)].reduce((n, src) => n + zlib.gzipSync(readFileSync(join(root, src)), { level: 9 }).length, 0)
    expect(bytes).toBeGreaterThan(0)
    expect(bytes).toBeLessThanOrEqual(150 * 1024)
  })
})
