// Builds the console (`nuxt generate`) and writes it to edge/console/, which the edge embeds:
// HTML made reproducible (the build's time stamp removed), every text file pre-compressed
// (brotli and gzip) for the edge to serve by negotiation. `--check` builds into a scratch
// directory and fails when edge/console/ differs, so the files kept in the repository are
// always what the sources give.
import { execFileSync } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, mkdir, writeFile, stat } from 'node:fs/promises'
import { join, dirname, relative } from 'node:path'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import zlib from 'node:zlib'

const web = dirname(dirname(fileURLToPath(import.meta.url)))
const target = join(web, '..', 'edge', 'console')
const check = process.argv.includes('--check')

async function files(dir) {
  const out = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await files(path)))
    else out.push(path)
  }
  return out.sort()
}

const compressible = /\.(html|js|mjs|css|json|svg|txt|webmanifest)$/

execFileSync(join(web, 'node_modules', '.bin', 'nuxt'), ['generate'], {
  cwd: web,
  stdio: ['ignore', check ? 'ignore' : 'inherit', 'inherit'],
  env: { ...process.env, NUXT_TELEMETRY_DISABLED: '1' },
})
const built = join(web, '.output', 'public')
const dest = check ? await mkdtemp(join(tmpdir(), 'skillup-console-')) : target
if (!check) await rm(dest, { recursive: true, force: true })
for (const path of await files(built)) {
  const name = relative(built, path)
  if (name.endsWith('.gz') || name.endsWith('.br')) continue
  let data = await readFile(path)
  if (name.endsWith('.html')) {
    // The payload's `prerenderedAt` is the build's clock: fixed, so two builds are the same.
    data = Buffer.from(data.toString('utf8').replace(/(\{"prerenderedAt":(\d+),[^\]]*?\})((?:,[^,\]]*)*)\]/, (all) => all.replace(/,\d{12,}(?=[,\]])/, ',0')))
  }
  await mkdir(dirname(join(dest, name)), { recursive: true })
  await writeFile(join(dest, name), data)
  if (compressible.test(name) && data.length > 512) {
    await writeFile(join(dest, name + '.gz'), zlib.gzipSync(data, { level: 9 }))
    await writeFile(
      join(dest, name + '.br'),
      zlib.brotliCompressSync(data, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: 11,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
        },
      }),
    )
  }
}
if (check) {
  const rel = async (d) => (await files(d)).map((f) => relative(d, f))
  const want = await rel(dest)
  const have = await rel(target).catch(() => [])
  const differ = []
  for (const name of new Set([...want, ...have])) {
    const a = await readFile(join(dest, name)).catch(() => null)
    const b = await readFile(join(target, name)).catch(() => null)
    if (!a || !b || !a.equals(b)) differ.push(name)
  }
  await rm(dest, { recursive: true, force: true })
  if (differ.length) {
    console.error(`edge/console/ is stale (${differ.length} files differ, e.g. ${differ.slice(0, 5).join(', ')}): run \`npm run build:console\` in web/`)
    process.exit(1)
  }
  console.log(`edge/console/ matches a fresh build (${want.length} files)`)
} else {
  let bytes = 0
  for (const f of await files(dest)) bytes += (await stat(f)).size
  console.log(`wrote edge/console/ (${(await files(dest)).length} files, ${Math.round(bytes / 1024)} KiB)`)
}
