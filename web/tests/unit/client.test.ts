import { afterEach, describe, expect, it, vi } from 'vitest'
import { authedFetch, configureAuth, unwrap, api } from '~/api/client'

afterEach(() => vi.unstubAllGlobals())

describe('the API client', () => {
  it('renews once after a 401 and sends the call again with the new token', async () => {
    let token = 'old'
    const renew = vi.fn(async (rejected: string) => {
      expect(rejected).toBe('old')
      token = 'new'
      return true
    })
    configureAuth({ token: async () => token, renew, locale: () => 'ru' })
    const seen: string[] = []
    vi.stubGlobal(
      'fetch',
      vi.fn(async (req: Request) => {
        seen.push(`${req.headers.get('authorization')} ${req.headers.get('accept-language')} ${await req.text()}`)
        return new Response('{}', { status: req.headers.get('authorization') === 'Bearer old' ? 401 : 200 })
      }),
    )
    const res = await authedFetch(new Request('http://x/api/generate', { method: 'POST', body: '{"a":1}' }))
    expect(res.status).toBe(200)
    expect(renew).toHaveBeenCalledTimes(1)
    expect(seen).toEqual(['Bearer old ru {"a":1}', 'Bearer new ru {"a":1}'])
  })

  it('gives up after one renewal that fails', async () => {
    configureAuth({ token: async () => 'old', renew: async () => false, locale: () => 'en' })
    const fetch = vi.fn(async () => new Response('{"error":{"code":"TOKEN_EXPIRED","message":"expired"}}', { status: 401 }))
    vi.stubGlobal('fetch', fetch)
    await expect(unwrap(api.GET('/api/auth/me'))).rejects.toMatchObject({ status: 401, code: 'TOKEN_EXPIRED' })
    expect(fetch).toHaveBeenCalledTimes(1)
  })

  it('turns a network failure into NETWORK', async () => {
    configureAuth({ token: async () => null, renew: async () => false, locale: () => 'en' })
    vi.stubGlobal('fetch', vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))))
    await expect(unwrap(api.GET('/api/catalog/functions'))).rejects.toMatchObject({ code: 'NETWORK' })
  })
})
