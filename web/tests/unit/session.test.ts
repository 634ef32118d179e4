// IndexedDB as the browser has it (one store for every tab of the origin), for the renewal count.
import 'fake-indexeddb/auto'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { useSession } from '~/stores/session'
import { renewals, renewed } from '~/utils/renewals'

/** navigator.locks as the browser has it: one holder per name, the rest wait in order. */
function installLocks() {
  const queues = new Map<string, Promise<unknown>>()
  const locks = {
    request: (name: string, run: () => Promise<unknown>) => {
      const before = queues.get(name) ?? Promise.resolve()
      const mine = before.then(run, run)
      queues.set(name, mine.catch(() => {}))
      return mine
    },
  }
  Object.defineProperty(navigator, 'locks', { value: locks, configurable: true })
}

function answer(access: string, expiresIn = 3600) {
  return new Response(JSON.stringify({ access_token: access, expires_in: expiresIn, user: { id: 'u1', email: 'a@example.com' } }), {
    status: 200,
    headers: { 'content-type': 'application/json' },
  })
}

describe('the session', () => {
  beforeEach(() => {
    localStorage.clear()
    setActivePinia(createPinia())
    installLocks()
  })
  afterEach(() => vi.unstubAllGlobals())

  it('restores from the refresh cookie, asking the edge for cookie transport', async () => {
    const fetch = vi.fn(async () => answer('a1'))
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    expect(s.signedIn).toBe(true)
    expect(s.access).toBe('a1')
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit]
    expect(url).toBe('/api/auth/refresh')
    expect((init.headers as Record<string, string>)['x-session-transport']).toBe('cookie')
    expect(init.body).toBe('{}') // the token is the cookie's; JavaScript never holds it
  })

  it('refreshes once when several calls find the token rejected at the same time', async () => {
    let n = 0
    const fetch = vi.fn(async () => {
      await new Promise((r) => setTimeout(r, 10))
      return answer(`a${++n}`)
    })
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    const old = s.access!
    const results = await Promise.all([s.refresh(old), s.refresh(old), s.refresh(old)])
    expect(results).toEqual([true, true, true])
    expect(fetch).toHaveBeenCalledTimes(2) // the restore and one refresh
    expect(s.access).toBe('a2')
  })

  it('ends the session when the refresh is refused, and says so to listeners', async () => {
    const fetch = vi
      .fn()
      .mockResolvedValueOnce(answer('a1'))
      .mockResolvedValueOnce(new Response('{"error":{"code":"TOKEN_REVOKED"}}', { status: 401 }))
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    const ended: string[] = []
    s.onEnd((why) => ended.push(why))
    expect(await s.refresh('a1')).toBe(false)
    expect(s.signedIn).toBe(false)
    expect(ended).toEqual(['expired'])
  })

  it('keeps the session through an outage: a 503 is not a sign-out', async () => {
    const fetch = vi
      .fn()
      .mockResolvedValueOnce(answer('a1'))
      .mockResolvedValueOnce(new Response('{"error":{"code":"UNAVAILABLE","message":"down"}}', { status: 503 }))
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    await expect(s.refresh('a1')).rejects.toMatchObject({ code: 'UNAVAILABLE' })
    expect(s.access).toBe('a1')
  })

  it("takes another tab's renewal from the broadcast instead of renewing again", async () => {
    const fetch = vi.fn().mockResolvedValueOnce(answer('a1'))
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    const other = new BroadcastChannel('skillup-session')
    // Another tab renews while this one waits for the lock; its broadcast may arrive after this
    // tab has the lock (another process, another task queue): the count says it is coming.
    const waiting = navigator.locks.request('skillup-session-refresh', async () => {
      const renewal = await renewed()
      setTimeout(() => other.postMessage({ type: 'tokens', access: 'a2', expiresAt: Date.now() + 3_600_000, renewal }), 50)
    })
    const renewing = s.refresh('a1')
    await waiting
    expect(await renewing).toBe(true)
    expect(s.access).toBe('a2')
    expect(fetch).toHaveBeenCalledTimes(1) // the restore only
    other.close()
  })

  it('renews itself when no other tab renewed after its token', async () => {
    const fetch = vi.fn().mockResolvedValueOnce(answer('a1')).mockResolvedValueOnce(answer('a2'))
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    const before = await renewals()
    expect(await s.refresh('a1')).toBe(true)
    expect(s.access).toBe('a2')
    expect(fetch).toHaveBeenCalledTimes(2)
    expect(await renewals()).toBe(before + 1)
  })

  it("renews itself when another tab's announced token never arrives (that tab closed)", async () => {
    const fetch = vi.fn().mockResolvedValueOnce(answer('a1')).mockResolvedValueOnce(answer('a2'))
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    await renewed() // counted, then the tab was gone before it could broadcast
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] }) // IndexedDB keeps its own (setImmediate)
    const renewing = s.refresh('a1')
    // Once it waits for the handover (its timer set), five seconds pass with no broadcast.
    while (vi.getTimerCount() === 0) await new Promise((r) => setImmediate(r))
    expect(fetch).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(5_000)
    vi.useRealTimers()
    expect(await renewing).toBe(true)
    expect(s.access).toBe('a2')
    expect(fetch).toHaveBeenCalledTimes(2)
  })

  it('never takes back an older token from a late broadcast', async () => {
    vi.stubGlobal('fetch', vi.fn().mockResolvedValueOnce(answer('a1')))
    const s = useSession()
    await s.restore()
    const other = new BroadcastChannel('skillup-session')
    other.postMessage({ type: 'tokens', access: 'old', expiresAt: Date.now() + 3_600_000, renewal: 0 })
    await new Promise((r) => setTimeout(r, 20))
    expect(s.access).toBe('a1')
    other.close()
  })

  it('renews before expiry on its own', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] }) // IndexedDB keeps its own (setImmediate)
    const fetch = vi.fn().mockResolvedValueOnce(answer('a1', 60)).mockResolvedValueOnce(answer('a2', 60))
    vi.stubGlobal('fetch', fetch)
    const s = useSession()
    await s.restore()
    await vi.advanceTimersByTimeAsync(49_000)
    expect(fetch).toHaveBeenCalledTimes(2)
    expect(s.access).toBe('a2')
    vi.useRealTimers()
  })
})
