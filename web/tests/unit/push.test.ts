// The VAPID key as the browser's pushManager.subscribe takes it: base64url (no padding) of the
// 65-byte uncompressed P-256 point the server answers.
import { describe, expect, it } from 'vitest'
import { keyBytes } from '../../app/composables/usePush'

describe('keyBytes', () => {
  it('decodes base64url without padding into the key bytes', () => {
    const bytes = new Uint8Array(65).map((_, i) => (i * 37 + 4) % 256)
    const b64url = Buffer.from(bytes).toString('base64url')
    expect(b64url).toHaveLength(87)
    expect(b64url).toMatch(/[-_]/)
    expect(Array.from(keyBytes(b64url))).toEqual(Array.from(bytes))
  })

  it('takes padded and short input alike', () => {
    expect(Array.from(keyBytes('AQID'))).toEqual([1, 2, 3])
    expect(Array.from(keyBytes('AQI'))).toEqual([1, 2])
    expect(Array.from(keyBytes('AQ'))).toEqual([1])
  })
})
