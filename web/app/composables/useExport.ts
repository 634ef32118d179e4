// A document (or any file) downloaded: fetched with the session (a plain link could not carry the
// token), saved under the name the server gives in Content-Disposition.
import { authedFetch } from '~/api/client'
import { failureOf } from '~/utils/errors'

export function fileNameOf(disposition: string | null, fallback: string): string {
  if (!disposition) return fallback
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition)
  if (star?.[1]) {
    try {
      return decodeURIComponent(star[1].trim())
    } catch {
      // Fall through to the plain name.
    }
  }
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition)
  return plain?.[1]?.trim() || fallback
}

export async function downloadDocument(id: string, format: 'md' | 'txt' | 'html'): Promise<void> {
  await downloadFile(`/api/generate/${encodeURIComponent(id)}/export?format=${format}`, `document.${format}`)
}

// Any file the API answers at `path` for the signed-in user, saved under the server's name.
export async function downloadFile(path: string, fallback: string): Promise<void> {
  const res = await authedFetch(new Request(path))
  if (!res.ok) throw failureOf(res.status, await res.json().catch(() => undefined), res.headers)
  const blob = await res.blob()
  const url = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = url
  a.download = fileNameOf(res.headers.get('content-disposition'), fallback)
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}
