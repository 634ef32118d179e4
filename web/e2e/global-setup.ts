// Starts `skillup up` (the binary cargo built: E2E_SKILLUP_BIN, else target/debug/skillup) on free
// ports in a fresh data directory, waits for its "SkillUp is up: open <url>" line, and hands the
// URL and the data directory (whose outbox holds the emails) to the tests.
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

export const STATE = join(tmpdir(), 'skillup-e2e-state.json')

export default async function globalSetup() {
  const bin = process.env.E2E_SKILLUP_BIN ?? fileURLToPath(new URL('../../target/debug/skillup', import.meta.url))
  const dataDir = mkdtempSync(join(tmpdir(), 'skillup-e2e-'))
  // The embedded defaults: never the developer's servers.
  const { DATABASE_URL: _db, REDIS_URL: _cache, AMQP_URL: _bus, ...inherited } = process.env
  const env = {
    ...inherited,
    SKILLUP_AUTH__ACCESS_TTL_SECS: process.env.E2E_ACCESS_TTL_SECS ?? '60',
    SKILLUP_AUTH__BCRYPT_COST: '4',
    SKILLUP_EDGE__RATE__AUTH_PER_MIN: '1200',
    SKILLUP_EDGE__RATE__AUTH_BURST: '200',
    SKILLUP_EDGE__RATE__GENERATE_BURST: '100',
    SKILLUP_NOTIFICATION__DIGEST_SECS: '2',
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
  }
  const child = spawn(bin, ['up', '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', '--grpc-addr', '127.0.0.1:0'], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: false,
  })
  let grpc = ''
  const url = await new Promise<string>((done, fail) => {
    const timer = setTimeout(() => fail(new Error('`skillup up` did not get ready in 90 s')), 90_000)
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => {
      const g = /^ready\s+grpc\s+(\S+)/.exec(line)
      if (g) grpc = g[1]!
      const m = /^SkillUp is up: open (\S+?)\/?$/.exec(line)
      if (m) {
        clearTimeout(timer)
        done(m[1]!)
      }
    })
    child.on('exit', (code) => fail(new Error(`\`skillup up\` exited with ${code}`)))
  })
  child.stdout!.resume()
  process.env.E2E_SKILLUP_URL = url
  process.env.E2E_DATA_DIR = dataDir
  // For `skillup admin grant` (e2e/admin.spec.ts): the binary and its gRPC address.
  process.env.E2E_SKILLUP_BIN = bin
  process.env.E2E_GRPC_ADDR = grpc
  writeFileSync(STATE, JSON.stringify({ pid: child.pid, url, dataDir }))
}
