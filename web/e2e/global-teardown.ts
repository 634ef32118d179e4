import { existsSync, readFileSync, rmSync } from 'node:fs'
import { STATE } from './global-setup'

export default async function globalTeardown() {
  if (!existsSync(STATE)) return
  const state = JSON.parse(readFileSync(STATE, 'utf8')) as { pid: number; dataDir: string }
  try {
    process.kill(state.pid, 'SIGTERM')
  } catch {
    // Already gone.
  }
  await new Promise((r) => setTimeout(r, 500))
  rmSync(state.dataDir, { recursive: true, force: true })
  rmSync(STATE, { force: true })
}
